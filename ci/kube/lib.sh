# shellcheck shell=bash
# Shared by ci/kube-up and ci/kube-down; sourced, never run. It knows where
# the state dir is, which processes it holds, and how to stop them without
# ever killing a process that merely reuses a recorded pid.

kube_dir=$(realpath -m -- "${WM_KUBE_DIR:-/tmp/wm-kube}")
kube_components=(kube-controller-manager kube-apiserver etcd) # stop order

say() { printf 'kube: %s\n' "$*" >&2; }
die() { printf 'kube: error: %s\n' "$*" >&2; exit 1; }

# pid_of NAME prints the pid recorded for NAME if that process is alive and
# still is the one we started (its command line names our state dir).
pid_of() {
  local f=$kube_dir/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$kube_dir/" || return 1
  printf '%s\n' "$pid"
}

# strays NAME prints the pids of NAME processes started for this state dir
# that no pid file records (a lost pid file, a state dir removed under them).
strays() {
  local f pid argv0
  for f in /proc/[0-9]*/cmdline; do
    argv0=
    IFS= read -r -d '' argv0 2>/dev/null <"$f" || true
    [ "${argv0##*/}" = "$1" ] || continue
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$kube_dir/" && echo "$pid"
  done
  return 0
}

# stop NAME sends SIGTERM to NAME's processes, waits up to 15 s, then
# SIGKILL; removes the pid file.
stop() {
  local pids pid i
  pids=$( { pid_of "$1" || true; strays "$1"; } | sort -u)
  for pid in $pids; do
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $pids; do
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -f "$kube_dir/$1.pid"
}

stop_all() {
  local c
  for c in "${kube_components[@]}"; do stop "$c"; done
}

# lock_dir takes an exclusive lock on the state dir (fd 9) so two kube-up
# runs, or a kube-up and a kube-down, never act on one dir at once.
lock_dir() {
  mkdir -p "$kube_dir"
  exec 9<"$kube_dir"
  if ! flock -n 9; then
    say "waiting for another kube-up/kube-down on $kube_dir"
    flock -w "${1:-900}" 9 || die "timed out waiting for the lock on $kube_dir"
  fi
}
