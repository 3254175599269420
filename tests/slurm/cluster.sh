#!/usr/bin/env bash
# cluster.sh: a private Slurm cluster for tests, run as root without systemd or cgroups: one node (this
# machine) or two (the simulated nodes of ../multinode/setup.sh).
#
#   tests/slurm/cluster.sh start DIR [NODES]   start munged, slurmctld and slurmd with every file under DIR
#   tests/slurm/cluster.sh env DIR             print the exports clients need:  eval "$(cluster.sh env DIR)"
#   tests/slurm/cluster.sh stop DIR            cancel every job, wait for an empty queue, stop the daemons
#
# DIR must be an empty or non-existent private directory (e.g. from mktemp -d). slurm.conf is
# written there with the node names and this machine's CPU count; state, spool, logs, pid files, the munge
# key and socket and TmpFS (where the PMIx plugin makes its per-step directories) all live under it,
# so nothing of the machine's own Slurm or munge set-up is read or touched.
# One node: the node is this machine's hostname, the daemons talk over loopback, and the ports
# (HUSAI_SLURM_PORT, default 17817, and the next one) must be free or start refuses.
# Two nodes (NODES = a set-up of ../multinode/setup.sh): slurmctld on nodeA, one munged and one slurmd on
# each of nodeA and nodeB (NodeName nodeA/nodeB, NodeAddr their addresses on the private subnet), all
# started with ../multinode/on.sh; the ports are those of the nodes' own network namespaces. Each node's
# local files (slurmd spool, log and pid file, munge socket, TmpFS) are DIR/nodes/NODE, which on.sh
# bind-mounts over DIR/node on that node (NODES/init.NODE), so the shared slurm.conf names one path
# that is a different directory on each node, as /var/spool and /tmp are on a real cluster; the munge
# key is shared, as a cluster's is. Clients (sbatch, squeue ...) must run on nodeA: on.sh NODES nodeA CMD.
# Daemons are stopped by the PIDs saved at start, never by name; leftover job processes are found
# by this cluster's SLURM_CONF and cluster name in their environment.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin" # the daemons live in sbin, often not on a user's PATH

usage() {
    echo "usage: $0 start DIR [NODES] | stop DIR | env DIR" >&2
    exit 2
}
[ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$1" = start ]; } || usage
cmd=$1
dir=$2
nodes=${3:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "cluster: $*"; }
die() {
    echo "cluster: error: $*" >&2
    exit 1
}

port_busy() { # port -> 0 if something listens on it (TCP, any address)
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Sets LEFT to the pids of this cluster's job processes: slurmstepd and everything a job started.
# They carry this cluster's SLURM_CONF and, for job processes, SLURM_CLUSTER_NAME=husaitest in their
# environment; the test shell (which has SLURM_CONF too) and its other children have no cluster name.
# Pure bash, so no helper process of ours can show up in the scan.
cluster_procs() {
    local conf="SLURM_CONF=$1/slurm.conf" p e var comm has_conf has_name
    LEFT=()
    for e in /proc/[0-9]*/environ; do
        p=${e#/proc/}
        p=${p%/environ}
        if [ "$p" = "$$" ] || [ "$p" = "$BASHPID" ]; then continue; fi
        has_conf=0 has_name=0
        while IFS= read -r -d '' var; do
            case "$var" in
            "$conf") has_conf=1 ;;
            SLURM_CLUSTER_NAME=husaitest) has_name=1 ;;
            esac
        done 2>/dev/null <"$e" || true
        [ "$has_conf" -eq 1 ] || continue
        comm=""
        read -r comm 2>/dev/null <"/proc/$p/comm" || true
        if [ "$has_name" -eq 1 ] || [ "$comm" = slurmstepd ]; then LEFT+=("$p"); fi
    done
}

# on NODE CMD...: run CMD on NODE (one node: right here).
on() {
    local node=$1
    shift
    if [ -n "$nodes" ]; then bash "$HERE/../multinode/on.sh" "$nodes" "$node" "$@"; else "$@"; fi
}

# on_bg NAME NODE LOG CMD...: CMD on NODE in the background, output appended to LOG, "NAME PID" recorded
# in DIR/run/pids. A plain background command, not a function (whose subshell would be $!), and on.sh
# execs all the way down: the PID is the daemon's own, so stop can signal it.
on_bg() {
    local name=$1 node=$2 log=$3
    shift 3
    if [ -n "$nodes" ]; then
        bash "$HERE/../multinode/on.sh" "$nodes" "$node" "$@" >>"$log" 2>&1 &
    else
        "$@" >>"$log" 2>&1 &
    fi
    echo "$name $!" >>"$dir/run/pids"
}

# Sets nodes (the multinode set-up directory, or empty) from DIR/run/nodes.
read_nodes() {
    nodes=""
    if [ -f "$dir/run/nodes" ]; then nodes=$(cat "$dir/run/nodes"); fi
}

write_conf() {
    local ncpu ctld node_lines names
    ncpu=$(getconf _NPROCESSORS_ONLN)
    if [ -n "$nodes" ]; then
        # shellcheck source=/dev/null
        . "$nodes/state"
        # Addresses given: no name lookup between the daemons.
        ctld="nodeA($MN_IP_A)"
        node_lines="NodeName=nodeA NodeAddr=$MN_IP_A CPUs=$ncpu State=UNKNOWN
NodeName=nodeB NodeAddr=$MN_IP_B CPUs=$ncpu State=UNKNOWN"
        names=nodeA,nodeB
    else
        # The daemons talk over loopback: no name lookup between them.
        names=$(hostname -s)
        ctld="$names(127.0.0.1)"
        node_lines="NodeName=$names NodeAddr=127.0.0.1 CPUs=$ncpu State=UNKNOWN"
    fi
    cat >"$dir/slurm.conf" <<CONF
# Written by tests/slurm/cluster.sh for a private test cluster; everything lives under $dir
# ($dir/node: each node's local files).
ClusterName=husaitest
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port_ctld
SlurmdPort=$port_d
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/node/munge.socket,cred_expire=5
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/node/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/node/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/node/slurmd.log
TmpFS=$dir/node/tmp
KillWait=5
# Test all pending jobs every second (default 60 s), so a requeued job starts right after cred_expire.
SchedulerParameters=sched_interval=1,bf_interval=1
# Finished jobs stay visible to scontrol show job for 30 s (their state and exit code).
MinJobAge=30
$node_lines
PartitionName=test Nodes=$names Default=YES MaxTime=INFINITE State=UP
CONF
}

# start_munged NODE LOCAL: munged on NODE, whose local directory DIR/node is LOCAL; waits for its socket.
start_munged() {
    local node=$1 local_dir=$2 d
    for d in spool tmp; do mkdir -p "$local_dir/$d"; done
    on_bg munged "$node" "$local_dir/munged.out" munged -F --force --socket="$dir/node/munge.socket" \
        --key-file="$dir/munge/munge.key" --pid-file="$dir/node/munged.pid" --log-file="$dir/node/munged.log" \
        --seed-file="$dir/node/munge.seed"
    for _ in $(seq 100); do
        [ -S "$local_dir/munge.socket" ] && break
        sleep 0.05
    done
    [ -S "$local_dir/munge.socket" ] || {
        tail -5 "$local_dir/munged.log" "$local_dir/munged.out" >&2
        fail_start "munged did not start on $node"
    }
}

# start_daemon NAME NODE LOCAL ARGS...: the daemon NAME on NODE in the foreground of a background job.
start_daemon() {
    local name=$1 node=$2 local_dir=$3
    shift 3
    on_bg "$name" "$node" "$local_dir/$name.out" "$name" -D "$@" -f "$dir/slurm.conf"
}

start() {
    local b node idle
    for b in slurmctld slurmd munged sbatch; do
        command -v "$b" >/dev/null || die "$b is not installed (Debian: slurmctld slurmd slurm-client munge)"
    done
    [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -e "$dir/run/pids" ] || die "$dir already holds a cluster (run: $0 stop $dir)"
    port_ctld=${HUSAI_SLURM_PORT:-17817}
    port_d=$((port_ctld + 1))
    if [ -n "$nodes" ]; then
        [ -f "$nodes/state" ] || die "$nodes holds no simulated nodes (run ../multinode/setup.sh $nodes first)"
        nodes=$(cd "$nodes" && pwd)
    else
        for p in "$port_ctld" "$port_d"; do
            ! port_busy "$p" || die "port $p is in use (another cluster?); set HUSAI_SLURM_PORT to a free pair"
        done
    fi
    mkdir -p "$dir"/{munge,state,run,log,node}
    chmod 0700 "$dir" "$dir/munge"
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chmod 0400 "$dir/munge/munge.key"
    write_conf
    : >"$dir/run/pids"
    echo "$nodes" >"$dir/run/nodes"
    export SLURM_CONF="$dir/slurm.conf"

    local -a names=("$(hostname -s)") locals=("$dir/node")
    if [ -n "$nodes" ]; then
        names=(nodeA nodeB)
        locals=("$dir/nodes/nodeA" "$dir/nodes/nodeB")
        for node in 0 1; do
            mkdir -p "${locals[$node]}"
            # `ip netns exec` gives the node a fresh /sys without cgroup mounts, and slurmd refuses to start
            # without them ("No filesystem mounted on /sys/fs/cgroup", then "can't stat
            # /sys/fs/cgroup/systemd"): a cgroup v1 layout with only the named systemd hierarchy is all
            # proctrack/linuxproc and task/none need (no cgroup is created in it).
            cat >"$nodes/init.${names[$node]}" <<INIT
mount --bind ${locals[$node]} $dir/node
mount -t tmpfs -o mode=0755 husai-cgroup /sys/fs/cgroup
mkdir /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
INIT
        done
    fi
    for node in "${!names[@]}"; do start_munged "${names[$node]}" "${locals[$node]}"; done
    start_daemon slurmctld "${names[0]}" "$dir/log" -i
    for node in "${!names[@]}"; do start_daemon slurmd "${names[$node]}" "${locals[$node]}"; done

    local want=1 state=""
    [ -z "$nodes" ] || want=2
    for _ in $(seq 300); do # up to 30 s
        state=$(on nodeA sinfo -h -N -o %T 2>/dev/null | tr '\n' ' ' || true)
        idle=$(grep -o idle <<<"$state" | wc -l || true)
        [ "$idle" -eq "$want" ] && break
        sleep 0.1
    done
    if [ "$idle" -ne "$want" ]; then
        tail -n 20 "$dir"/log/* "$dir"/node*/*.log "$dir"/node*/*.out "$dir"/nodes/*/*.log "$dir"/nodes/*/*.out >&2 2>/dev/null || true
        fail_start "$want node(s) did not become idle (sinfo says '${state:-nothing}')"
    fi
    local name pid comm
    while read -r name pid; do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        [ "$comm" = "$name" ] || fail_start "recorded $name pid $pid is '${comm:-gone}', not the daemon"
    done <"$dir/run/pids"
    if [ -n "$nodes" ]; then
        say "up: nodeA ($MN_IP_A: slurmctld, slurmd) and nodeB ($MN_IP_B: slurmd), $(getconf _NPROCESSORS_ONLN) CPUs each, SLURM_CONF=$dir/slurm.conf"
    else
        say "up: $(hostname -s), $(getconf _NPROCESSORS_ONLN) CPUs, ports $port_ctld/$port_d, SLURM_CONF=$dir/slurm.conf"
    fi
}

fail_start() {
    echo "cluster: error: $*" >&2
    stop || true
    exit 1
}

pid_of() { awk -v n="$1" '$1 == n {print $2}' "$dir/run/pids"; }

stop_pids() { # pid... : SIGTERM, up to 10 s to exit, then SIGKILL
    local pid live
    for pid in "$@"; do if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi; done
    for _ in $(seq 100); do
        live=0
        for pid in "$@"; do if alive "$pid"; then live=1; fi; done
        [ "$live" -eq 0 ] && return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if alive "$pid"; then
            say "pid $pid ignored SIGTERM for 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

stop() {
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/run/pids" ] || return 0
    export SLURM_CONF="$dir/slurm.conf"
    read_nodes
    local ids
    if alive "$(pid_of slurmctld)"; then
        ids=$(on nodeA squeue -h -o %A 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one word per job id
            on nodeA scancel $ids 2>/dev/null || true
            for _ in $(seq 150); do # up to 30 s (KillWait is 5 s)
                [ -z "$(on nodeA squeue -h -o %A 2>/dev/null || true)" ] && break
                sleep 0.2
            done
        fi
    fi
    # slurmd(s) and slurmctld together (each takes ~2 s to shut down), munged last: they authenticate
    # through it until they are gone.
    # shellcheck disable=SC2046 # one word per pid
    stop_pids $(pid_of slurmd) $(pid_of slurmctld)
    # shellcheck disable=SC2046
    stop_pids $(pid_of munged)
    # Job processes (slurmstepd, srun, husai ranks) that outlived the daemons.
    cluster_procs "$dir"
    if [ "${#LEFT[@]}" -gt 0 ]; then
        say "killing leftover job processes: ${LEFT[*]}"
        kill -TERM "${LEFT[@]}" 2>/dev/null || true
        for _ in $(seq 20); do
            sleep 0.1
            cluster_procs "$dir"
            [ "${#LEFT[@]}" -eq 0 ] && break
        done
        [ "${#LEFT[@]}" -eq 0 ] || kill -KILL "${LEFT[@]}" 2>/dev/null || true
    fi
    rm -f "$dir/run/pids"
    if [ -n "$nodes" ]; then rm -f "$nodes"/init.node?; fi
    say "stopped"
}

case "$cmd" in
start) start ;;
stop) stop ;;
env)
    dir=$(cd "$dir" && pwd)
    printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf"
    ;;
*) usage ;;
esac
