#!/usr/bin/env bash
# A single-node Slurm cluster on 127.0.0.1 for LIM's tests (2 CPUs, one partition `lim`).
#
#   tests/slurm/cluster.sh install        # Debian packages: slurmctld slurmd slurm-client munge (as root)
#   tests/slurm/cluster.sh start DIR      # munged, slurmctld, slurmd with their state in DIR;
#                                         # prints SLURM_CONF=DIR/slurm.conf for `eval`
#   tests/slurm/cluster.sh stop DIR       # cancels every job, stops the daemons, wipes DIR
#
# Every daemon listens on 127.0.0.1 only (CommunicationParameters=NoCtldInAddrAny,NoInAddrAny);
# munge uses its own key and socket in DIR. No accounting daemon: `sacct -c` reads the job
# completion file (JobCompType=jobcomp/filetxt). Runs as root without systemd or cgroups.
set -euo pipefail

cmd=${1:?usage: cluster.sh install | start DIR | stop DIR}

case "$cmd" in
install)
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        exit 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "Slurm is not installed and cannot be (needs root and apt-get); the Slurm test will be skipped" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    pkgs="slurmctld slurmd slurm-client munge"
    apt-get install -y -q --no-install-recommends $pkgs >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends $pkgs >&2; }
    ;;
start)
    dir=$(realpath -m "${2:?start DIR}")
    mkdir -p "$dir"/{state,spool,munge,log}
    chmod 700 "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=128 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<CONF
ClusterName=lim
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=46817
SlurmdPort=46818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=2 RealMemory=$mem State=UNKNOWN
PartitionName=lim Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -c -i
    slurmd -N localhost
    for _ in $(seq 1 50); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "SLURM_CONF=$SLURM_CONF"
            exit 0
        fi
        sleep 0.2
    done
    echo "the Slurm node did not become idle; logs in $dir/log" >&2
    exit 1
    ;;
stop)
    dir=$(realpath -m "${2:?stop DIR}")
    export SLURM_CONF="$dir/slurm.conf"
    if [ -f "$SLURM_CONF" ]; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 25); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    sleep 0.5
    rm -rf "$dir"
    ;;
*)
    echo "usage: cluster.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
