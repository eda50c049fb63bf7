#!/usr/bin/env bash
# Stop the SLURM test cluster started by scripts/slurm/up.sh.
#
#   scripts/slurm/down.sh [--keep-munge] [--quiet]
#
# Cancels every job still in squeue, then ends slurmd(s), slurmctld and munged
# by their pid files (never by process name), waiting for each to exit, and
# removes the /etc/hosts lines that up.sh added.  Safe to run when nothing is
# up.  State, logs and /etc/slurm/slurm.conf are left in place.
#
# Environment: ASYNCFLOW_HPC_SLURM_CONF and ASYNCFLOW_HPC_SLURM_BASE as for
# up.sh (default base: the folder named in that slurm.conf if up.sh wrote it,
# else the usual default).
set -euo pipefail

KEEP_MUNGE=0
QUIET=0
while [ $# -gt 0 ]; do
    case "$1" in
        --keep-munge) KEEP_MUNGE=1 ;;
        --quiet) QUIET=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "down.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "down.sh: must run as root" >&2
    exit 1
fi

DEFAULT_CONF=/etc/slurm/slurm.conf
CONF=${ASYNCFLOW_HPC_SLURM_CONF:-$DEFAULT_CONF}
# scancel/squeue/scontrol below talk to this cluster, not another one.
export SLURM_CONF=$CONF
BASE=${ASYNCFLOW_HPC_SLURM_BASE:-}
if [ -z "$BASE" ] && [ -f "$CONF" ] \
        && grep -q 'asyncflow-hpc scripts/slurm/up.sh' "$CONF"; then
    # The running cluster's base folder, as up.sh wrote it into slurm.conf.
    BASE=$(sed -n 's|^StateSaveLocation=\(.*\)/ctld$|\1|p' "$CONF")
fi
if [ "$CONF" = "$DEFAULT_CONF" ]; then
    BASE=${BASE:-/var/tmp/asyncflow-hpc-slurm}
    HOSTS_MARK='# asyncflow-hpc-slurm'
else
    BASE=${BASE:-$(dirname "$CONF")}
    HOSTS_MARK="# asyncflow-hpc-slurm conf=$CONF"
fi
RUN_DIR=$BASE/run
MUNGE_PID=$BASE/munge/run/munged.pid

log() { [ "$QUIET" -eq 1 ] || printf 'down.sh: %s\n' "$*"; }

# Print the pid in FILE if it is alive and runs NAME (else nothing).
live_pid() {
    local f=$1 name=$2 pid
    [ -s "$f" ] || return 0
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
    echo "$pid"
}

# stop_by_pidfiles NAME FILE...: SIGTERM all at once (slurmd takes ~1.5 s and
# slurmctld ~2 s to exit), wait up to 20 s, then SIGKILL what is left.
stop_by_pidfiles() {
    local name=$1 f pid pids="" left i
    shift
    for f in "$@"; do
        pid=$(live_pid "$f" "$name")
        if [ -n "$pid" ]; then
            log "stopping $name (pid $pid, $(basename "$f"))"
            kill -TERM "$pid" 2>/dev/null || true
            pids="$pids $pid"
        fi
    done
    for i in $(seq 1 100); do
        left=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
        [ -n "$left" ] || break
        sleep 0.2
    done
    if [ -n "$left" ]; then
        log "$name pid(s)$left ignored SIGTERM for 20 s: SIGKILL"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
        for i in $(seq 1 25); do
            left=""
            for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
            [ -n "$left" ] || break
            sleep 0.2
        done
    fi
    rm -f "$@"
}

# 1. Cancel jobs while the controller still answers, so no job step is left
#    behind under a dead slurmd.
CTLD_PID=$(live_pid "$RUN_DIR/slurmctld.pid" slurmctld)
if [ -n "$CTLD_PID" ] && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    jobs=$(squeue -h -o '%i' 2>/dev/null | sort -u || true)
    if [ -n "$jobs" ]; then
        log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086  # one argument per job id
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 75); do   # up to 15 s
            [ -z "$(squeue -h -o '%i' 2>/dev/null || true)" ] && break
            sleep 0.2
        done
        left=$(squeue -h -o '%i %T' 2>/dev/null || true)
        [ -z "$left" ] || log "jobs still listed after 15 s (stopping anyway): $left"
    fi
fi

# 2. Compute daemons, then the controller, then munge.
shopt -s nullglob
stop_by_pidfiles slurmd "$RUN_DIR"/slurmd-*.pid
stop_by_pidfiles slurmctld "$RUN_DIR/slurmctld.pid"
if [ "$KEEP_MUNGE" -eq 0 ]; then
    stop_by_pidfiles munged "$MUNGE_PID"
fi

# 3. Our /etc/hosts lines (written in place: /etc/hosts may be a bind mount).
#    Only lines that end in our mark: another cluster's (longer mark) stay.
tmp=$(mktemp)
awk -v m="$HOSTS_MARK" 'length($0) < length(m) || substr($0, length($0) - length(m) + 1) != m' \
    /etc/hosts >"$tmp" 2>/dev/null || cp /etc/hosts "$tmp"
if ! cmp -s "$tmp" /etc/hosts; then
    cat "$tmp" >/etc/hosts
    log "removed the afnode lines from /etc/hosts"
fi
rm -f "$tmp"
log "SLURM test cluster stopped"
