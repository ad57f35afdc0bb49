# shellcheck shell=bash
# Shared by ci/kube-up and ci/kube-down; sourced, never run. It knows where
# the state dir is, which processes it holds, and how to stop them without
# ever killing a process that merely reuses a recorded pid.

kube_dir=$(realpath -m -- "${WM_KUBE_DIR:-/tmp/wm-kube}")
kube_components=(kubelet kube-scheduler kube-controller-manager kube-apiserver etcd) # stop order

# The node: containerd's root and state, the kubelet's root, the CNI
# configuration and address store, all below node_dir. The bridge, the
# cgroup folder and the pod subnet are the machine's, so their names come
# from a hash of the state dir: two state dirs never share them (the
# subnet, 10.222.N.0/24, only differs with odds of 255 in 256).
node_dir=$kube_dir/node
node_id=$(printf '%s' "$kube_dir" | sha256sum | cut -c1-6)
node_bridge=wmk-$node_id
node_cgroup=wm-kube-$node_id
node_subnet=10.222.$((16#${node_id:0:2})).0/24
node_ip=${node_subnet%.0/24}.1 # the bridge's address, where the kubelet listens
node_name=wm-node

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

# node_cgroups prints the node's cgroup folders (every hierarchy's),
# deepest first: the pods' processes are in them and nowhere else.
node_cgroups() {
  local d
  for d in /sys/fs/cgroup/"$node_cgroup" /sys/fs/cgroup/*/"$node_cgroup"; do
    [ -d "$d" ] && find "$d" -depth -type d
  done
  return 0
}

# kill_pods kills every process of the node's pods and removes their
# cgroups; the kubelet must be stopped first, or it starts them again.
kill_pods() {
  local i procs d
  for ((i = 0; i < 50; i++)); do
    procs=$(node_cgroups | while read -r d; do cat "$d/cgroup.procs" 2>/dev/null; done | sort -u)
    [ -n "$procs" ] || break
    # shellcheck disable=SC2086 # one pid a word
    kill -KILL $procs 2>/dev/null || true
    sleep 0.1
  done
  node_cgroups | while read -r d; do rmdir "$d" 2>/dev/null || true; done
}

# node_mounts prints the mount points below node_dir, deepest first.
node_mounts() {
  awk -v p="$node_dir/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | tac
}

# stop_node stops the kubelet, the pods, containerd and its shims, and
# unmounts what they left mounted (the pods' root file systems, network
# namespaces and volumes), so that node_dir can be removed.
stop_node() {
  local m
  stop kubelet
  kill_pods
  stop containerd
  for m in $(strays containerd-shim-runc-v2); do kill -KILL "$m" 2>/dev/null || true; done
  for m in $(node_mounts); do umount -l "$m" 2>/dev/null || true; done
  if [ -n "$(node_mounts)" ]; then
    say "warning: still mounted below $node_dir: $(node_mounts | tr '\n' ' ')"
    return 1
  fi
}

stop_all() {
  local c
  stop_node || true
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
