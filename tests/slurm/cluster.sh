#!/usr/bin/env bash
# cluster.sh: a private single-node Slurm cluster for tests, run as root without systemd or cgroups.
#
#   tests/slurm/cluster.sh start DIR   start munged, slurmctld and slurmd with every file under DIR
#   tests/slurm/cluster.sh env DIR     print the exports clients need:  eval "$(cluster.sh env DIR)"
#   tests/slurm/cluster.sh stop DIR    cancel every job, wait for an empty queue, stop the daemons
#
# DIR must be an empty or non-existent private directory (e.g. from mktemp -d). slurm.conf is
# written there with this machine's hostname and CPU count; state, spool, logs, pid files, the munge
# key and socket and TmpFS (where the PMIx plugin makes its per-step directories) all live under it,
# so nothing of the machine's own Slurm or munge set-up is read or touched. The ports
# (HUSAI_SLURM_PORT, default 17817, and the next one) must be free or start refuses.
# Daemons are stopped by the PIDs saved at start, never by name; leftover job processes are found
# by this cluster's SLURM_CONF and cluster name in their environment.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin" # the daemons live in sbin, often not on a user's PATH

usage() {
    echo "usage: $0 start|stop|env DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
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

write_conf() {
    local host ncpu
    host=$(hostname -s)
    ncpu=$(getconf _NPROCESSORS_ONLN)
    cat >"$dir/slurm.conf" <<CONF
# Written by tests/slurm/cluster.sh for a private test cluster; everything lives under $dir.
ClusterName=husaitest
# The daemons talk over loopback: no name lookup between them.
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port_ctld
SlurmdPort=$port_d
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
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
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
TmpFS=$dir/tmp
KillWait=5
# Test all pending jobs every second (default 60 s), so a requeued job starts right after cred_expire.
SchedulerParameters=sched_interval=1,bf_interval=1
# Finished jobs stay visible to scontrol show job for 30 s (their state and exit code).
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    local b
    for b in slurmctld slurmd munged sbatch; do
        command -v "$b" >/dev/null || die "$b is not installed (Debian: slurmctld slurmd slurm-client munge)"
    done
    [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -e "$dir/run/pids" ] || die "$dir already holds a cluster (run: $0 stop $dir)"
    port_ctld=${HUSAI_SLURM_PORT:-17817}
    port_d=$((port_ctld + 1))
    for p in "$port_ctld" "$port_d"; do
        ! port_busy "$p" || die "port $p is in use (another cluster?); set HUSAI_SLURM_PORT to a free pair"
    done
    mkdir -p "$dir"/{munge,state,spool,run,log,tmp}
    chmod 0700 "$dir" "$dir/munge"
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chmod 0400 "$dir/munge/munge.key"
    write_conf
    : >"$dir/run/pids"
    export SLURM_CONF="$dir/slurm.conf"

    munged -F --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" \
        >>"$dir/log/munged.out" 2>&1 &
    echo "munged $!" >>"$dir/run/pids"
    for _ in $(seq 100); do
        [ -S "$dir/munge/munge.socket" ] && break
        sleep 0.05
    done
    [ -S "$dir/munge/munge.socket" ] || { tail -5 "$dir/log/munged.log" "$dir/log/munged.out" >&2; fail_start "munged did not start"; }

    slurmctld -D -i -f "$dir/slurm.conf" >>"$dir/log/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$dir/run/pids"
    slurmd -D -f "$dir/slurm.conf" >>"$dir/log/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$dir/run/pids"

    local state=""
    for _ in $(seq 300); do # up to 30 s
        state=$(sinfo -h -N -o %T 2>/dev/null || true)
        [ "$state" = idle ] && break
        sleep 0.1
    done
    if [ "$state" != idle ]; then
        tail -n 20 "$dir"/log/*.log "$dir"/log/*.out >&2 || true
        fail_start "the node did not become idle (sinfo says '${state:-nothing}')"
    fi
    say "up: $(hostname -s), $(getconf _NPROCESSORS_ONLN) CPUs, ports $port_ctld/$port_d, SLURM_CONF=$dir/slurm.conf"
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
    local ids
    if alive "$(pid_of slurmctld)"; then
        ids=$(squeue -h -o %A 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one word per job id
            scancel $ids 2>/dev/null || true
            for _ in $(seq 150); do # up to 30 s (KillWait is 5 s)
                [ -z "$(squeue -h -o %A 2>/dev/null || true)" ] && break
                sleep 0.2
            done
        fi
    fi
    # slurmd and slurmctld together (each takes ~2 s to shut down), munged last: both authenticate
    # through it until they are gone.
    stop_pids "$(pid_of slurmd)" "$(pid_of slurmctld)"
    stop_pids "$(pid_of munged)"
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
