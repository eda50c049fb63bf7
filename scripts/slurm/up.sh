#!/usr/bin/env bash
# Bring up a real SLURM test cluster on this machine, on loopback only.
#
#   scripts/slurm/up.sh              # one node: this host, all its CPUs
#   scripts/slurm/up.sh --nodes 3    # one controller + afnode1..afnode3
#   scripts/slurm/up.sh --nodes 3 --cpus-per-node 2
#                                    # declare 2 CPUs per node (default: the
#                                    # host's CPUs split evenly, at least 1)
#   scripts/slurm/up.sh --print-conf # print the slurm.conf it would write; start nothing
#
# Installs the Debian packages if missing, starts munged, slurmctld and one
# slurmd per node by hand (the machine has no init system), waits until every
# node is idle and prints a summary.  Running it again while the cluster is up
# with the same layout is a no-op; asking for another layout restarts SLURM.
# Stop everything with scripts/slurm/down.sh.
#
# Environment:
#   ASYNCFLOW_HPC_SLURM_CONF     slurm.conf to write (default /etc/slurm/slurm.conf).
#                                Another path gives a second, separate cluster:
#                                its clients need SLURM_CONF=<that path>.
#   ASYNCFLOW_HPC_SLURM_BASE     state/spool/pid/log folder (default
#                                /var/tmp/asyncflow-hpc-slurm, or the folder of
#                                ASYNCFLOW_HPC_SLURM_CONF when that is set)
#   ASYNCFLOW_HPC_SLURM_PORT     slurmctld port (default 6817); slurmd uses +1
#   ASYNCFLOW_HPC_SLURM_TIMEOUT  seconds to wait for the nodes (default 60)
set -euo pipefail

START_TS=$(date +%s.%N)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

NODES=1
CPUS_OPT=""
PRINT_CONF=0
usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) [ $# -ge 2 ] || { echo "up.sh: --nodes needs a value" >&2; exit 2; }
                 NODES=$2; shift 2 ;;
        --nodes=*) NODES=${1#--nodes=}; shift ;;
        --cpus-per-node) [ $# -ge 2 ] || { echo "up.sh: --cpus-per-node needs a value" >&2; exit 2; }
                 CPUS_OPT=$2; shift 2 ;;
        --cpus-per-node=*) CPUS_OPT=${1#--cpus-per-node=}; shift ;;
        --print-conf) PRINT_CONF=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "up.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$NODES" in
    ''|*[!0-9]*) echo "up.sh: --nodes must be a positive integer, got '$NODES'" >&2; exit 2 ;;
esac
case "$CPUS_OPT" in
    '') ;;
    *[!0-9]*|0) echo "up.sh: --cpus-per-node must be a positive integer, got '$CPUS_OPT'" >&2; exit 2 ;;
esac
# Node k listens on 127.0.0.(k+1); keep well inside one /24.
if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 64 ]; then
    echo "up.sh: --nodes must be between 1 and 64" >&2; exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "up.sh: must run as root (starts daemons, writes /etc/slurm and /etc/hosts)" >&2
    exit 1
fi

DEFAULT_CONF=/etc/slurm/slurm.conf
CONF=${ASYNCFLOW_HPC_SLURM_CONF:-$DEFAULT_CONF}
case "$CONF" in /*) ;; *) echo "up.sh: ASYNCFLOW_HPC_SLURM_CONF must be an absolute path" >&2; exit 2 ;; esac
CONF_DIR=$(dirname "$CONF")
if [ "$CONF" = "$DEFAULT_CONF" ]; then
    BASE=${ASYNCFLOW_HPC_SLURM_BASE:-/var/tmp/asyncflow-hpc-slurm}
    HOSTS_MARK='# asyncflow-hpc-slurm'   # tags the /etc/hosts lines we own
else
    BASE=${ASYNCFLOW_HPC_SLURM_BASE:-$CONF_DIR}
    HOSTS_MARK="# asyncflow-hpc-slurm conf=$CONF"
fi
# Every SLURM command below (and the daemons) read this cluster's config.
export SLURM_CONF=$CONF
CTLD_PORT=${ASYNCFLOW_HPC_SLURM_PORT:-6817}
case "$CTLD_PORT" in ''|*[!0-9]*) echo "up.sh: ASYNCFLOW_HPC_SLURM_PORT must be a number" >&2; exit 2 ;; esac
SLURMD_PORT=$((CTLD_PORT + 1))
TIMEOUT=${ASYNCFLOW_HPC_SLURM_TIMEOUT:-60}
PKGS="slurmctld slurmd slurm-client munge slurm-wlm-torque openmpi-bin libopenmpi-dev libpmix2"

MUNGE_DIR=$BASE/munge
MUNGE_RUN=$MUNGE_DIR/run               # socket folder: must be mode 755
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_LOG=$BASE/log/munged.log
RUN_DIR=$BASE/run
LOG_DIR=$BASE/log
CTLD_PID=$RUN_DIR/slurmctld.pid

log() { printf 'up.sh: %s\n' "$*"; }

# ---------------------------------------------------------------- packages
missing_pkgs() {
    local p out=""
    for p in $PKGS; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            out="$out $p"
        fi
    done
    echo "$out"
}
MISSING=$(missing_pkgs)
if [ -n "${MISSING// /}" ]; then
    log "installing:$MISSING"
    apt-get update -q
    # The packages' own scripts try to start services; there is no init
    # system here, so that just fails quietly and we start them by hand.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS
fi

# ---------------------------------------------------------------- helpers
# pid_alive FILE NAME: the pid in FILE is running and its command is NAME
# (guards against a stale pid file whose pid was reused by something else).
pid_alive() {
    local f=$1 name=$2 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

node_names() {
    if [ "$NODES" -eq 1 ]; then
        echo "$HOST"
    else
        local k
        for k in $(seq 1 "$NODES"); do echo "afnode$k"; done
    fi
}

slurmd_pidfile() { echo "$RUN_DIR/slurmd-$1.pid"; }

show_logs() {
    local f
    for f in "$MUNGE_LOG" "$LOG_DIR"/slurmctld.log $(node_names | sed "s|.*|$LOG_DIR/slurmd-&.log|"); do
        [ -f "$f" ] || continue
        echo "----- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

die() {
    echo "up.sh: ERROR: $*" >&2
    show_logs
    exit 1
}

# Bounded: against a port held by something that never answers, scontrol
# would wait its MessageTimeout (10 s) per try.
ctld_up() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }

# /etc/hosts without the lines that end in our mark (another cluster's lines,
# with a longer mark, stay).
without_our_hosts_lines() {
    awk -v m="$HOSTS_MARK" 'length($0) < length(m) || substr($0, length($0) - length(m) + 1) != m' /etc/hosts
}

# Rewrite /etc/hosts with our tagged lines replaced by "$@" (one line each).
# /etc/hosts is often a bind mount, so write in place instead of renaming.
set_hosts_lines() {
    local tmp
    tmp=$(mktemp)
    without_our_hosts_lines >"$tmp"
    local line
    for line in "$@"; do printf '%s %s\n' "$line" "$HOSTS_MARK" >>"$tmp"; done
    if ! cmp -s "$tmp" /etc/hosts; then cat "$tmp" >/etc/hosts; fi
    rm -f "$tmp"
}

# ---------------------------------------------------------------- config
HOST=$(hostname -s)
# What the hardware looks like, as slurmd sees it.
HW=$(slurmd -C | head -n 1)
hw_field() { echo "$HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
HW_CPUS=$(hw_field CPUs)
HW_SOCKETS=$(hw_field SocketsPerBoard)
HW_CORES=$(hw_field CoresPerSocket)
HW_THREADS=$(hw_field ThreadsPerCore)
HW_MEM=$(hw_field RealMemory)

if [ -e /usr/lib/x86_64-linux-gnu/libpmix.so.2 ] || dpkg-query -W -f='${Status}' libpmix2 2>/dev/null | grep -q 'install ok installed'; then
    MPI_DEFAULT=pmix    # plain `srun -n 2 python -m mpi4py...` works with Debian's OpenMPI
else
    MPI_DEFAULT=none
fi

NODE_LINES=""
HOSTS_LINES=()
if [ "$NODES" -eq 1 ]; then
    # The node is this host itself, with what `slurmd -C` reports.
    NODE_LINES="NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$HW_CPUS Boards=1 SocketsPerBoard=$HW_SOCKETS CoresPerSocket=$HW_CORES ThreadsPerCore=$HW_THREADS RealMemory=$HW_MEM State=UNKNOWN"
    CPUS_PER_NODE=$HW_CPUS
    if [ -n "$CPUS_OPT" ] && [ "$CPUS_OPT" != "$HW_CPUS" ]; then
        NODE_LINES="NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS_OPT Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS_OPT ThreadsPerCore=1 RealMemory=$HW_MEM State=UNKNOWN"
        CPUS_PER_NODE=$CPUS_OPT
    fi
else
    # N virtual nodes share this host's cores.  Split the CPUs evenly; a node
    # needs at least one CPU, so with more nodes than cores the declared total
    # exceeds the real one (e.g. 3 nodes x 1 CPU on 2 cores) and the kernel
    # time-slices: fine for placement tests, meaningless for speed.
    CPUS_PER_NODE=$(( HW_CPUS / NODES ))
    [ "$CPUS_PER_NODE" -ge 1 ] || CPUS_PER_NODE=1
    # --cpus-per-node overrides the split (tests that need a 4-rank task over
    # two nodes use 2: 3 nodes x 2 CPUs declared on 2 real cores).
    [ -z "$CPUS_OPT" ] || CPUS_PER_NODE=$CPUS_OPT
    MEM_PER_NODE=$(( HW_MEM / NODES ))
    for k in $(seq 1 "$NODES"); do
        addr=127.0.0.$((k + 1))
        NODE_LINES="$NODE_LINES
NodeName=afnode$k NodeAddr=$addr NodeHostname=afnode$k CPUs=$CPUS_PER_NODE Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS_PER_NODE ThreadsPerCore=1 RealMemory=$MEM_PER_NODE State=UNKNOWN"
        HOSTS_LINES+=("$addr afnode$k")
    done
fi

PBS_SPANK=""
for d in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib/slurm-wlm /usr/lib64/slurm /usr/lib/slurm; do
    if [ -f "$d/spank_pbs.so" ]; then PBS_SPANK=$d/spank_pbs.so; break; fi
done

gen_conf() {
    cat <<EOF
# Generated by asyncflow-hpc scripts/slurm/up.sh --nodes $NODES${CPUS_OPT:+ --cpus-per-node $CPUS_OPT} -- do not edit;
# rerun up.sh instead.  Test cluster on loopback only.
ClusterName=asyncflow
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
# Listen on the configured loopback address only, never on 0.0.0.0.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/slurmd/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups and no systemd here: track processes by parent pid, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# The default batch_sched_delay adds ~3 s to every job start.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=$MPI_DEFAULT
ReturnToService=2
$( { [ "$NODES" -gt 1 ] || [ -n "$CPUS_OPT" ]; } && echo "# Nodes report their configured size, not the whole shared host.
SlurmdParameters=config_overrides"
   [ "$NODES" -gt 1 ] && echo "# Makes jobs use \$JOBS_CONF (see the note where it is written).
TaskProlog=$TASK_PROLOG" )
# The pmix plugin puts per-step folders under TmpFS.  With one shared /tmp,
# virtual nodes collide ("Cannot create directory /tmp/spmix_appdir_0_4.0:
# File exists"), and so does a step whose job id repeats after a state wipe
# if an earlier step crashed; so every node gets its own folder here.
TmpFS=$BASE/tmp/%n
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# sacct -c reads this file; there is no slurmdbd.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt
# Short timers so cancelled/failed jobs leave quickly in tests.
KillWait=5
MailProg=/bin/true
InactiveLimit=0
MinJobAge=60
$NODE_LINES
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
$( [ "$NODES" -gt 1 ] && echo "# For routing tests: \"cpu\" is every node but the last, \"gpu\" the last one (SLURM
# knows no GPU here; a pilot template for it declares gpus_per_node, so RP's agent has some).
PartitionName=cpu Nodes=$(seq -s, -f 'afnode%g' 1 $((NODES - 1))) MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=afnode$NODES MaxTime=INFINITE State=UP" )
EOF
}

# ---------------------------------------------------------------- no-op?
all_daemons_alive() {
    pid_alive "$MUNGE_PID" munged || return 1
    pid_alive "$CTLD_PID" slurmctld || return 1
    local n
    for n in $(node_names); do
        pid_alive "$(slurmd_pidfile "$n")" slurmd || return 1
    done
}

# Node states that count as "up and usable" ("*" marks not responding).
nodes_ready() {
    local out
    out=$(timeout 15 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
    [ -n "$out" ] || return 1
    local want n st
    want=$(node_names | sort)
    [ "$(echo "$out" | awk '{print $1}' | sort -u)" = "$want" ] || return 1
    while read -r n st; do
        case "$st" in
            idle|mix|alloc|comp) ;;
            *) return 1 ;;
        esac
    done <<<"$out"
}

TASK_PROLOG=$BASE/task-prolog.sh
JOBS_CONF=$BASE/slurm-jobs.conf
NEW_CONF=$(gen_conf)
if [ "$PRINT_CONF" -eq 1 ]; then
    printf '%s\n' "$NEW_CONF"
    exit 0
fi

summary() {
    local end took
    end=$(date +%s.%N)
    took=$(awk -v a="$START_TS" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
    echo "up.sh: $1 in ${took}s (base $BASE, MpiDefault=$MPI_DEFAULT)"
    sinfo -h -N -o '  node %N: %t, cpus=%c, mem=%mMB, partition=%P' 2>/dev/null | sed 's/^/up.sh:/' || true
}

if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$NEW_CONF" ] && all_daemons_alive && ctld_up && nodes_ready; then
    summary "already up, nothing to do ($NODES node(s))"
    exit 0
fi

# ---------------------------------------------------------------- layout
mkdir -p "$BASE" "$RUN_DIR" "$LOG_DIR" "$BASE/ctld" "$BASE/slurmd" "$CONF_DIR"
chmod 755 "$BASE"

# A different configuration (e.g. other --nodes) means restarting the SLURM
# daemons; munged is unaffected by it and keeps running.
CONF_CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    CONF_CHANGED=1
fi
if [ "$CONF_CHANGED" -eq 1 ]; then
    # Stop the SLURM daemons of the old layout (and cancel its jobs).  With an
    # unchanged config only the daemons that are missing get started below.
    # The old layout may live under another base folder: take it from the
    # old slurm.conf.
    OLD_BASE=""
    if [ -f "$CONF" ] && grep -q 'asyncflow-hpc scripts/slurm/up.sh' "$CONF"; then
        OLD_BASE=$(sed -n 's|^StateSaveLocation=\(.*\)/ctld$|\1|p' "$CONF")
    fi
    if [ -n "$OLD_BASE" ] && [ "$OLD_BASE" != "$BASE" ]; then
        # Another base: its munged goes too, ours is started below.
        ASYNCFLOW_HPC_SLURM_CONF=$CONF ASYNCFLOW_HPC_SLURM_BASE=$OLD_BASE "$SCRIPT_DIR/down.sh" --quiet
    else
        ASYNCFLOW_HPC_SLURM_CONF=$CONF ASYNCFLOW_HPC_SLURM_BASE=$BASE "$SCRIPT_DIR/down.sh" --keep-munge --quiet
    fi
fi
if [ "$CONF_CHANGED" -eq 1 ] && [ -f "$CONF" ] && grep -q 'asyncflow-hpc scripts/slurm/up.sh' "$CONF"; then
    # Saved controller state refers to the old node set: start clean.
    log "layout changed: wiping saved controller state"
    rm -rf "${BASE:?}/ctld" "${BASE:?}/slurmd" "${BASE:?}/tmp"
    mkdir -p "$BASE/ctld" "$BASE/slurmd" "$BASE/tmp"
    rm -f "$LOG_DIR/jobcomp.txt"
fi
if [ "$CONF_CHANGED" -eq 1 ]; then
    if [ -f "$CONF" ] && ! grep -q 'asyncflow-hpc scripts/slurm/up.sh' "$CONF"; then
        cp -p "$CONF" "$CONF.before-asyncflow-hpc"
        log "saved previous $CONF as $CONF.before-asyncflow-hpc"
    fi
    printf '%s\n' "$NEW_CONF" >"$CONF"
    chmod 644 "$CONF"
fi

# Multi-node only: a client inside a job (e.g. srun in a batch script) on
# afnodeK binds its reply/IO ports to gethostname() = afnodeK = 127.0.0.(K+1)
# because of NoInAddrAny, but the kernel sends its requests from 127.0.0.1,
# and slurmstepd connects back to that source address: "connect io:
# Connection refused".  Jobs therefore get SLURM_CONF pointing to a copy of
# slurm.conf whose clients listen on any address; the daemons keep
# NoInAddrAny.  (Clients on the host itself resolve to 127.0.0.1 and need
# nothing.)
if [ "$NODES" -gt 1 ]; then
    printf '%s\n' "$NEW_CONF" | sed 's/^CommunicationParameters=.*/CommunicationParameters=NoCtldInAddrAny/' >"$JOBS_CONF.tmp"
    mv "$JOBS_CONF.tmp" "$JOBS_CONF"
    chmod 644 "$JOBS_CONF"
    printf '#!/bin/sh\n# Generated by up.sh: TaskProlog output sets the task environment.\necho "export SLURM_CONF=%s"\n' "$JOBS_CONF" >"$TASK_PROLOG"
    chmod 755 "$TASK_PROLOG"
else
    rm -f "$JOBS_CONF" "$TASK_PROLOG"
fi

# Torque front-end: the spank_pbs plugin sets PBS_JOBID, PBS_O_WORKDIR, ...
# in jobs.  plugstack.conf normally just includes plugstack.conf.d/*.conf.
if [ -n "$PBS_SPANK" ]; then
    mkdir -p "$CONF_DIR/plugstack.conf.d"
    if [ ! -f "$CONF_DIR/plugstack.conf" ]; then
        echo "include $CONF_DIR/plugstack.conf.d/*.conf" >"$CONF_DIR/plugstack.conf"
    elif ! grep -q 'plugstack.conf.d' "$CONF_DIR/plugstack.conf" && ! grep -q 'spank_pbs' "$CONF_DIR/plugstack.conf"; then
        echo "include $CONF_DIR/plugstack.conf.d/*.conf" >>"$CONF_DIR/plugstack.conf"
    fi
    want="optional $PBS_SPANK"
    if [ "$(cat "$CONF_DIR/plugstack.conf.d/asyncflow-pbs.conf" 2>/dev/null)" != "$want" ]; then
        echo "$want" >"$CONF_DIR/plugstack.conf.d/asyncflow-pbs.conf"
    fi
fi

# With NoInAddrAny every daemon binds to the address its host name resolves
# to, so this host's name must resolve (to loopback) too.
HOST_ADDR=$(without_our_hosts_lines | awk -v h="$HOST" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == h) { print $1; exit } }')
[ -n "$HOST_ADDR" ] || HOST_ADDR=$(getent ahostsv4 "$HOST" 2>/dev/null | awk 'NR == 1 { print $1 }')
if [ -z "$HOST_ADDR" ]; then
    HOSTS_LINES=("127.0.0.1 $HOST" "${HOSTS_LINES[@]+"${HOSTS_LINES[@]}"}")
elif [ "${HOST_ADDR#127.}" = "$HOST_ADDR" ]; then
    log "WARNING: $HOST resolves to $HOST_ADDR, not loopback; slurmctld/slurmd bind to 127.0.0.1 and may not be reachable"
fi
# Virtual node names resolve to their own loopback addresses.
set_hosts_lines "${HOSTS_LINES[@]+"${HOSTS_LINES[@]}"}"

# ---------------------------------------------------------------- munge
if ! pid_alive "$MUNGE_PID" munged; then
    mkdir -p "$MUNGE_DIR" "$MUNGE_RUN"
    chown munge:munge "$MUNGE_DIR" "$MUNGE_RUN"
    # Clients must reach the socket: munged refuses a socket folder that is
    # not traversable by all ("execute permissions for all required").
    chmod 755 "$MUNGE_DIR" "$MUNGE_RUN"
    if [ ! -s "$MUNGE_KEY" ]; then
        mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 600 "$MUNGE_KEY"
    touch "$MUNGE_LOG"
    chown munge:munge "$MUNGE_LOG"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
    runuser -u munge -- munged \
        --key-file="$MUNGE_KEY" \
        --socket="$MUNGE_SOCKET" \
        --pid-file="$MUNGE_PID" \
        --log-file="$MUNGE_LOG" \
        --seed-file="$MUNGE_DIR/munged.seed" \
        || die "munged failed to start"
fi
for _ in $(seq 1 50); do
    munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 && break
    sleep 0.1
done
munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 \
    || die "munge credential round trip fails on $MUNGE_SOCKET"

# ---------------------------------------------------------------- slurm
if ! pid_alive "$CTLD_PID" slurmctld; then
    rm -f "$CTLD_PID"
    slurmctld || die "slurmctld failed to start"
fi
deadline=$(( $(date +%s) + TIMEOUT ))
until ctld_up; do
    [ "$(date +%s)" -lt "$deadline" ] || die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT}s"
    sleep 0.2
done

for n in $(node_names); do
    pf=$(slurmd_pidfile "$n")
    if ! pid_alive "$pf" slurmd; then
        rm -f "$pf"
        mkdir -p "$BASE/slurmd/$n"
        mkdir -p "$BASE/tmp/$n"
        if [ "$NODES" -eq 1 ]; then
            slurmd || die "slurmd failed to start"
        else
            # Debian's slurmd is built without --enable-multiple-slurmd: with
            # NoInAddrAny it binds to the address of gethostname(), so plain
            # `slurmd -N afnodeK` processes all try 127.0.0.1:6818 and all but
            # one die with "Address already in use".  Each node therefore gets
            # its own UTS namespace whose hostname is the node name, which
            # /etc/hosts maps to the node's loopback address.  Jobs inherit it,
            # so `hostname` inside a job prints the node name too.
            unshare --uts sh -c 'hostname "$1" && exec slurmd -N "$1"' sh "$n" \
                || die "slurmd -N $n (in its own UTS namespace) failed to start"
        fi
    fi
done

# ---------------------------------------------------------------- wait idle
deadline=$(( $(date +%s) + TIMEOUT ))
resumed=""
while ! nodes_ready; do
    [ "$(date +%s)" -lt "$deadline" ] || {
        sinfo -N -l >&2 || true
        die "nodes not idle after ${TIMEOUT}s"
    }
    # ReturnToService=2 brings most nodes back alone; a node left DOWN or
    # DRAINED from an earlier run needs an explicit resume (once per node).
    while read -r n st; do
        case "$st" in
            down|drain|drng|fail|failg|down\*|drain\*|fail\*)
                case " $resumed " in *" $n "*) continue ;; esac
                log "node $n is $st: resuming"
                scontrol update nodename="$n" state=resume 2>/dev/null || true
                resumed="$resumed $n"
                ;;
        esac
    done < <(timeout 15 sinfo -h -N -o '%N %t' 2>/dev/null || true)
    for n in $(node_names); do
        pid_alive "$(slurmd_pidfile "$n")" slurmd || {
            sleep 0.5   # pid file may not be written yet right after the fork
            pid_alive "$(slurmd_pidfile "$n")" slurmd || die "slurmd for node $n died"
        }
    done
    sleep 0.2
done

summary "SLURM up ($NODES node(s), ${CPUS_PER_NODE} CPU(s) each, host has $HW_CPUS)"
