#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and CI (no systemd needed).
#
#   bash slurm/cluster.sh start    # idempotent: starts what is not running, waits for the node to be idle
#   bash slurm/cluster.sh stop     # stops the daemons this script started (by PID file, never by name)
#   bash slurm/cluster.sh status   # daemons, node state, queue
#
# Everything lives in $CONVLENS_SLURM_STATE (default /var/lib/convlens-slurm): slurm.conf, spool
# dirs, logs, PID files. /etc/slurm/slurm.conf is linked to that slurm.conf (only when it is absent
# or already ours), so sbatch/squeue/submitit find the cluster without SLURM_CONF.
# Node: NodeName=localhost NodeAddr=127.0.0.1, resources from `slurmd -C`; one partition "local".
# No accounting (slurmdbd): sacct fails, so callers must never wait on a job without a timeout
# (convlens.launch.slurm.wait_for polls scontrol instead).
# Needs root and the Debian packages slurmctld slurmd slurm-client munge (installed if missing).
# Settings and why: /work/shared/notes/slurm-local.md.
set -euo pipefail

STATE=${CONVLENS_SLURM_STATE:-/var/lib/convlens-slurm}
CONF=$STATE/slurm.conf
MARK="# convlens local cluster"
export SLURM_CONF=$CONF

log() { echo "[cluster] $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

ensure_packages() {
    local missing=()
    for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null || missing+=("$b"); done
    ((${#missing[@]} == 0)) && return
    log "installing slurm packages (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {  # writes $CONF.new; the caller decides whether it replaces the running one
    local hw cpus sockets cores threads mem
    hw=$(slurmd -C | head -1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket)
    threads=$(field ThreadsPerCore); mem=$(field RealMemory)
    cat >"$CONF.new" <<EOF
$MARK (written by slurm/cluster.sh; edit the script, not this file)
ClusterName=convlens
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MailProg=/bin/true
# cgroup plugins fail here (no freezer); linuxproc still cleans up a job's processes
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# requeued jobs restart in seconds instead of ~150 s
SchedulerParameters=bf_interval=1,sched_interval=1
SlurmctldParameters=preempt_send_user_signal
# submitit ignores SIGTERM: SIGKILL follows after KillWait
KillWait=5
ReturnToService=2
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

link_conf() {
    local etc=/etc/slurm/slurm.conf
    mkdir -p /etc/slurm
    if [[ -L $etc && $(readlink "$etc") == "$CONF" ]]; then return; fi
    if [[ -e $etc ]] && ! grep -q "^$MARK" "$etc"; then
        log "warning: $etc is not ours; clients need SLURM_CONF=$CONF"
        return
    fi
    ln -sfn "$CONF" "$etc"
}

start_munge() {
    alive /run/munge/munged.pid && return
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || \
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; \
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    # as root munged refuses ("Logfile is insecure")
    runuser -u munge -- /usr/sbin/munged --force
}

wait_node() {  # until the node accepts jobs (timeout 30 s)
    local state
    for _ in $(seq 60); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
        case $state in
            idle|mixed|allocated|completing) log "node localhost: $state"; return 0 ;;
            down*|drain*|fail*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    log "node did not become ready (state: ${state:-none}); see $STATE/slurmctld.log, $STATE/slurmd.log"
    return 1
}

stop_pid() {  # stop_pid NAME PIDFILE
    alive "$2" || return 0
    local pid; pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { log "stopped $1"; return 0; }; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "killed $1"
}

cmd_start() {
    ensure_packages
    mkdir -p "$STATE/ctld" "$STATE/d"
    write_conf
    if [[ -f $CONF ]] && ! cmp -s "$CONF" "$CONF.new"; then
        log "slurm.conf changed: restarting daemons"
        cmd_stop_slurm
    fi
    mv "$CONF.new" "$CONF"
    link_conf
    start_munge
    alive "$STATE/slurmctld.pid" || { slurmctld -f "$CONF"; log "started slurmctld"; }
    alive "$STATE/slurmd.pid" || { slurmd -f "$CONF" -N localhost; log "started slurmd"; }
    wait_node
}

cmd_stop_slurm() {
    stop_pid slurmd "$STATE/slurmd.pid"
    stop_pid slurmctld "$STATE/slurmctld.pid"
}

cmd_stop() {
    cmd_stop_slurm
    stop_pid munged /run/munge/munged.pid
}

cmd_status() {
    for d in "munged:/run/munge/munged.pid" "slurmctld:$STATE/slurmctld.pid" "slurmd:$STATE/slurmd.pid"; do
        if alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; fi
    done
    alive "$STATE/slurmctld.pid" || return 1
    sinfo -N -o "%N %T %c %m %G"
    squeue
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
