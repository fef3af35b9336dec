#!/usr/bin/env bash
# A local Slurm cluster on this machine, one node or several, for tests and CI (no systemd needed).
#
#   bash slurm/cluster.sh start [--nodes N]  # idempotent; N=1 (default) or N>1 nodes; waits for idle nodes
#   bash slurm/cluster.sh stop     # stops the daemons this script started (by PID file, never by name)
#                                  # and removes the namespaces, veths and bridge it made
#   bash slurm/cluster.sh status   # daemons, every node's state, queue
#
# N=1: NodeName=localhost NodeAddr=127.0.0.1 in this machine's own network.
# N>1: node1..N, each a network namespace (convlens-nodeK, hostname nodeK in its own UTS namespace)
# with address $NET.1K on a bridge that exists only inside this machine ($BRIDGE, $NET.1 in the
# root namespace, where slurmctld runs); no default route, so traffic stays between the namespaces
# and the loopback. One slurmd per node; CPUs and memory split between the nodes. munge's socket
# and every path are shared through the filesystem, as a real cluster's shared storage would be.
# Names resolve inside the nodes through $STATE/hosts (nodeK -> its address), bound over /etc/hosts
# in each slurmd's own mount namespace, so
# Ray, gloo and srun find each node by name.
#
# Everything lives in $CONVLENS_SLURM_STATE (default /var/lib/convlens-slurm): slurm.conf, spool
# dirs, logs, PID files. /etc/slurm/slurm.conf is linked to that slurm.conf (only when it is absent
# or already ours), so sbatch/squeue/submitit find the cluster without SLURM_CONF.
# Node: NodeName=localhost NodeAddr=127.0.0.1, resources from `slurmd -C`; one partition "local".
# No accounting (slurmdbd): sacct fails, so callers must never wait on a job without a timeout
# (convlens.launch.slurm.wait_for polls scontrol instead).
# Needs root and the Debian packages slurmctld slurmd slurm-client munge, and for N>1 iproute2 and
# util-linux's unshare/nsenter (installed if missing). Without root `start` says so in one line and
# exits 3 (`make test` goes on and the Slurm tests skip).
# Settings and why: /work/shared/notes/slurm-local.md.
set -euo pipefail
# the daemons live in /usr/sbin, which a user's PATH often lacks
PATH=$PATH:/usr/sbin:/sbin
CANNOT_RUN_HERE=3

STATE=${CONVLENS_SLURM_STATE:-/var/lib/convlens-slurm}
CONF=$STATE/slurm.conf
MARK="# convlens local cluster"
LAYOUT=$STATE/nodes   # the node count of the running cluster: what stop must remove
NET=10.77.0           # private /24 on the bridge; node K is $NET.(10+K)
BRIDGE=convlens-br
NS=convlens-node      # namespace of node K: ${NS}K; its veth in the root namespace: cl-nodeK
NODES=1
export SLURM_CONF=$CONF

log() { echo "[cluster] $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

ensure_packages() {
    local missing=()
    for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null || missing+=("$b"); done
    command -v ip >/dev/null || missing+=(ip)  # iproute2: namespaces, veths, bridge (N > 1)
    ((${#missing[@]} == 0)) && return
    log "installing slurm packages (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge iproute2 >/dev/null
}

hw_field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }

node_lines() {  # NodeName and PartitionName lines for $NODES nodes
    local cpus mem
    if ((NODES == 1)); then
        echo "NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(hw_field CPUs) SocketsPerBoard=$(hw_field SocketsPerBoard)" \
             "CoresPerSocket=$(hw_field CoresPerSocket) ThreadsPerCore=$(hw_field ThreadsPerCore)" \
             "RealMemory=$(hw_field RealMemory) State=UNKNOWN"
        echo "PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
        return
    fi
    cpus=$(( $(hw_field CPUs) / NODES )); ((cpus >= 1)) || cpus=1
    mem=$(( $(hw_field RealMemory) / NODES ))
    # the per-node pid, log and spool paths are told apart by %n (the node name)
    echo "SlurmdParameters=config_overrides"
    for k in $(seq "$NODES"); do
        echo "NodeName=node$k NodeAddr=$NET.$((10 + k)) CPUs=$cpus SocketsPerBoard=1 CoresPerSocket=$cpus" \
             "ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=local Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
}

write_conf() {  # writes $CONF.new; the caller decides whether it replaces the running one
    local ctld=localhost suffix=""
    HW=$(slurmd -C | head -1)
    ((NODES == 1)) || { ctld="localhost($NET.1)"; suffix=".%n"; }
    cat >"$CONF.new" <<EOF
$MARK (written by slurm/cluster.sh; edit the script, not this file)
ClusterName=convlens
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d$suffix
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd$suffix.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd$suffix.log
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
$(node_lines)
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

node_names() {  # the node names of $NODES nodes
    if ((NODES == 1)); then echo localhost; else seq -f "node%g" "$NODES"; fi
}

wait_node() {  # wait_node NAME: until the node accepts jobs (timeout 30 s)
    local state
    for _ in $(seq 60); do
        state=$(sinfo -h -n "$1" -o %T 2>/dev/null | head -1 || true)
        case $state in
            idle|mixed|allocated|completing) log "node $1: $state"; return 0 ;;
            down*|drain*|fail*) scontrol update NodeName="$1" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    log "node $1 did not become ready (state: ${state:-none}); see $STATE/slurmctld.log, $STATE/slurmd*.log"
    return 1
}

# ---------------------------------------------------------------- the nodes' network (N > 1)

net_up() {  # bridge $NET.1/24, then per node a namespace, a veth pair and a hosts file
    hosts_file >"$STATE/hosts"
    ip link show "$BRIDGE" >/dev/null 2>&1 || {
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    }
    for k in $(seq "$NODES"); do
        local ns=$NS$k
        ip netns list | grep -qw "^$ns" && continue
        ip netns add "$ns"
        ip link add "cl-node$k" type veth peer name eth0 netns "$ns"
        ip link set "cl-node$k" master "$BRIDGE" up
        ip -n "$ns" addr add "$NET.$((10 + k))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
    log "network: $BRIDGE $NET.1/24, namespaces $(seq -s ' ' -f "$NS%g" "$NODES")"
}

hosts_file() {  # /etc/hosts as the nodes see it (bound over /etc/hosts in their mount namespace)
    echo "127.0.0.1 localhost"
    echo "$NET.1 convlens-ctld"
    for j in $(seq "$NODES"); do echo "$NET.$((10 + j)) node$j"; done
}

net_down() {  # removes exactly what net_up made for $NODES nodes
    for k in $(seq "$NODES"); do
        ip link del "cl-node$k" 2>/dev/null || true
        ip netns del "$NS$k" 2>/dev/null || true
    done
    rm -f "$STATE/hosts"
    ip link del "$BRIDGE" 2>/dev/null || true
    log "network removed"
}

start_slurmd() {  # start_slurmd NAME K: slurmd of node K (K=0: localhost in the root namespace)
    local pidfile=$STATE/slurmd.pid
    ((NODES == 1)) || pidfile=$STATE/slurmd.$1.pid
    alive "$pidfile" && return
    if ((NODES == 1)); then
        slurmd -f "$CONF" -N localhost
    else
        # not `ip netns exec`: it remounts /sys, where slurmd needs the machine's cgroup mount
        mkdir -p "$STATE/d.$1"
        unshare --mount --uts -- sh -c "mount --bind '$STATE/hosts' /etc/hosts && hostname $1 &&
            exec nsenter --net=/run/netns/$NS$2 slurmd -f '$CONF' -N $1"
    fi
    log "started slurmd $1"
}

stop_pid() {  # stop_pid NAME PIDFILE
    alive "$2" || return 0
    local pid; pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { log "stopped $1"; return 0; }; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "killed $1"
}

parse_nodes() {
    while (($#)); do
        case $1 in
            --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
            --nodes=*) NODES=${1#*=}; shift ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
    [[ $NODES =~ ^[1-9][0-9]?$ ]] || { echo "--nodes: a number from 1 to 99, not $NODES" >&2; exit 2; }
}

cmd_start() {
    local fresh=""
    if ((EUID != 0)); then
        log "not started: a local Slurm cluster needs root (slurmctld and slurmd run as root, munged as munge)"
        exit $CANNOT_RUN_HERE
    fi
    ensure_packages
    mkdir -p "$STATE/ctld" "$STATE/d"
    write_conf
    if [[ -f $CONF ]] && ! cmp -s "$CONF" "$CONF.new"; then
        log "slurm.conf changed: restarting daemons"
        cmd_stop_slurm
        fresh=-c  # the old nodes' jobs and state are not carried over
    fi
    mv "$CONF.new" "$CONF"
    echo "$NODES" >"$LAYOUT"
    link_conf
    start_munge
    ((NODES == 1)) || net_up
    alive "$STATE/slurmctld.pid" || { slurmctld -f "$CONF" $fresh; log "started slurmctld"; }
    local k=0
    for name in $(node_names); do k=$((k + 1)); start_slurmd "$name" "$k"; done
    for name in $(node_names); do wait_node "$name"; done
}

cmd_stop_slurm() {  # the daemons and network of the cluster that runs now (its $LAYOUT)
    local NODES; NODES=$(cat "$LAYOUT" 2>/dev/null || echo 1)
    for pidfile in "$STATE"/slurmd.pid "$STATE"/slurmd.node*.pid; do
        [[ -e $pidfile ]] && stop_pid "slurmd $(basename "$pidfile" .pid)" "$pidfile"
    done
    stop_pid slurmctld "$STATE/slurmctld.pid"
    ((NODES == 1)) || net_down
}

cmd_stop() {
    cmd_stop_slurm
    stop_pid munged /run/munge/munged.pid
    rm -f "$LAYOUT"
}

cmd_status() {
    local daemons=("munged:/run/munge/munged.pid" "slurmctld:$STATE/slurmctld.pid")
    for f in "$STATE"/slurmd.pid "$STATE"/slurmd.node*.pid; do
        [[ -e $f ]] && daemons+=("$(basename "$f" .pid):$f")
    done
    for d in "${daemons[@]}"; do
        if alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; fi
    done
    alive "$STATE/slurmctld.pid" || return 1
    sinfo -N -o "%N %T %c %m %G %o"
    squeue
}

cmd=${1:-}; (($#)) && shift
case $cmd in
    start) parse_nodes "$@"; cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start [--nodes N]|stop|status" >&2; exit 2 ;;
esac
