# shellcheck shell=bash
# Shared by ci/docker2-up and ci/docker2-down; sourced, never run. It knows
# where the second Docker Engine's state dir is, which processes and network
# interfaces belong to it, and how to stop them without ever touching the
# machine's own Docker Engine (its dockerd, its containerd, docker0) or a
# process that merely reuses a recorded pid.
#
# Layout of the state dir (${WM_DOCKER2_DIR:-/tmp/wm-docker2}):
#
#   containerd.toml containerd.sock containerd-ttrpc.sock containerd-debug.sock
#   ctd-root/ ctd-state/      containerd's own root and state
#   daemon.json               dockerd's config file (see docker2-up on why)
#   docker.sock docker.pid    dockerd's API socket and pid file
#   data/ exec/               dockerd's data-root and exec-root
#   containerd.pid dockerd.pid  the pids this script started
#   logs/                     containerd.log, dockerd.log
#   tls/                      the TLS listener's certificates (docker2-up):
#                             ca.pem, server-cert.pem, server-key.pem, and the
#                             client's cert.pem and key.pem (ca-key.pem signs)
#   hook-bin/                 a fake nvidia-container-runtime-hook, first in
#                             dockerd's PATH (see docker2-up on why)
#   env                       written once the engine answers; source it

docker2_dir=$(realpath -m -- "${WM_DOCKER2_DIR:-/tmp/wm-docker2}")
# The bridge of the engine's default network, and its address. The machine's
# engine owns docker0 and allocates its user-defined networks from
# 172.17.0.0/16-172.31.0.0/16 and 192.168.0.0/16 (Docker's default pools),
# and an engine does not look at the other's routes: the second engine's
# addresses come from 10.230.0.0/15 so that the two never overlap.
docker2_bridge=${WM_DOCKER2_BRIDGE:-wm-br2}
docker2_bridge_cidr=${WM_DOCKER2_BRIDGE_CIDR:-10.230.0.1/24}
# The pool the second engine's user-defined networks (wm-<owner>) come from:
# a /16, in /24s (docker2-down finds the engine's bridges by its first two
# octets).
docker2_pool=${WM_DOCKER2_POOL:-10.231.0.0/16}
# The port of the engine's TLS listener (tcp://127.0.0.1:PORT, client
# certificates required), below the host-port range the tests publish in.
docker2_tls_port=${WM_DOCKER2_TLS_PORT:-23760}
docker2_components=(dockerd containerd) # stop order: dockerd needs its containerd to stop its containers

# dockerd and ip live in sbin, which a test process's PATH may lack.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

say() { printf 'docker2: %s\n' "$*" >&2; }
die() {
  printf 'docker2: error: %s\n' "$*" >&2
  exit 1
}

# as_root re-runs the calling script as root with sudo (non-interactive)
# when it is not root already: bridges and a Docker daemon need root.
as_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  command -v sudo >/dev/null || die "must run as root (no sudo here)"
  exec sudo -n --preserve-env=WM_DOCKER2_DIR,WM_DOCKER2_BRIDGE,WM_DOCKER2_BRIDGE_CIDR,WM_DOCKER2_POOL,WM_DOCKER2_TLS_PORT \
    bash "$0" "$@"
}

# pid_of NAME prints the pid recorded for NAME if that process is alive and
# still is the one we started (its command line names our state dir).
pid_of() {
  local f=$docker2_dir/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$docker2_dir/" || return 1
  printf '%s\n' "$pid"
}

# strays NAME prints the pids of NAME processes (by argv[0]'s base name)
# whose command line names our state dir and that no pid file records: a
# lost pid file, or containerd shims of our containerd. The machine's own
# dockerd and containerd never name our state dir.
strays() {
  local f pid argv0
  for f in /proc/[0-9]*/cmdline; do
    argv0=
    IFS= read -r -d '' argv0 2>/dev/null <"$f" || true
    [ "${argv0##*/}" = "$1" ] || continue
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$docker2_dir/" && echo "$pid"
  done
  return 0
}

# stop NAME [SECONDS] sends SIGTERM to NAME's processes, waits up to
# SECONDS (default 15) for them to exit, then SIGKILL; removes the pid file.
stop() {
  local pids pid i secs=${2:-15}
  pids=$( { pid_of "$1" || true; strays "$1"; } | sort -u)
  for pid in $pids; do
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $pids; do
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$1 (pid $pid) did not exit in $secs s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$docker2_dir/$1.pid"
}

# kill_tasks kills what our containerd still runs (containers dockerd did
# not stop, as after a dockerd that was killed), so that no container
# process outlives the engine. Needs the containerd still up.
kill_tasks() {
  local sock=$docker2_dir/containerd.sock ns task
  [ -S "$sock" ] && command -v ctr >/dev/null || return 0
  pid_of containerd >/dev/null || return 0
  for ns in $(ctr --address "$sock" namespaces list -q 2>/dev/null); do
    for task in $(ctr --address "$sock" -n "$ns" tasks list -q 2>/dev/null); do
      say "killing the leftover task $ns/$task"
      ctr --address "$sock" -n "$ns" tasks kill -a -s KILL "$task" >/dev/null 2>&1 || true
    done
  done
}

# stop_all stops dockerd, then the containers it leaves running (it runs
# with live-restore, see docker2-up), then containerd and the shims of our
# containerd.
stop_all() {
  stop dockerd 60
  kill_tasks
  stop containerd 15
  stop containerd-shim-runc-v2 5
  stop containerd-shim 5
}

# mounts prints the mount points under the state dir, deepest first.
mounts() { awk -v p="$docker2_dir/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }

# unmount_all unmounts what a stopped engine left mounted under the state
# dir. dockerd leaves nothing when it stops cleanly; after a crash its
# containers' file systems, network namespaces and the bind of its data-root
# stay mounted, and nothing uses them once it is stopped. The next start and
# rm -rf then find plain folders.
unmount_all() {
  local m
  for m in $(mounts); do umount -l "$m" 2>/dev/null || true; done
}

# engine_bridges prints the names of the bridges the second engine made for
# its user-defined networks: br-<id> with an address in its pool. They
# outlive dockerd, and dockerd makes them again when it starts.
engine_bridges() {
  local prefix
  prefix=$(cut -d. -f1-2 <<<"${docker2_pool%/*}").
  ip -o -4 addr show 2>/dev/null | awk -v p="$prefix" '$2 ~ /^br-/ && index($4, p) == 1 { print $2 }' | sort -u
}

# remove_bridges deletes the default bridge and the engine's network
# bridges. Never docker0: that is the machine's engine's.
remove_bridges() {
  local br
  [ "$docker2_bridge" != docker0 ] || die "refusing to touch docker0"
  for br in $(engine_bridges) "$docker2_bridge"; do
    if ip link show "$br" >/dev/null 2>&1; then
      say "deleting bridge $br"
      ip link delete "$br" type bridge 2>/dev/null || say "could not delete bridge $br"
    fi
  done
}

# lock_dir takes an exclusive lock on the state dir (fd 9) so that two
# docker2-up runs, or an up and a down, never act on one dir at once.
lock_dir() {
  mkdir -p "$docker2_dir"
  exec 9<"$docker2_dir"
  if ! flock -n 9; then
    say "waiting for another docker2-up/docker2-down on $docker2_dir"
    flock -w "${1:-300}" 9 || die "timed out waiting for the lock on $docker2_dir"
  fi
}
