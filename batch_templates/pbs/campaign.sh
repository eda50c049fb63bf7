#!/bin/bash
# campaign: run an asyncflow-hpc campaign inside this PBS allocation (pilot by fork, tasks by mpiexec)
#
# Rendered by `asyncflow-hpc submit SCRIPT --site {{ site }}`; every value below was validated
# and, in the script body, shell-quoted. Submit by hand with: qsub <this file>
# Written for PBS Pro / OpenPBS; tested only through SLURM's Torque-style qsub front-end
# (slurm-wlm-torque): no real PBS server was available.
#PBS -N {{ job_name }}
#PBS -l {{ pbs_select }}
#PBS -l walltime={{ walltime }}
#PBS -q {{ partition }}
#PBS -A {{ account }}
#PBS {{ directives }}
#PBS -j oe
#PBS -o {{ output }}

# Environment the site asks for (module loads, venv activation, exports).
{{ prepare }}

# The campaign runs with the interpreter of this environment (after the lines above).
PYTHON={{ python_q }}
if ! "$PYTHON" -c 'import {{ imports }}' 2>/dev/null; then
  echo "asyncflow-hpc: '$PYTHON' (after the site's prepare lines) cannot import {{ imports }}; install asyncflow-hpc there, or set the site's python" >&2
  exit 2
fi

cd {{ campaign_dir_q }} || exit 1
# RADICAL-Pilot writes /tmp/rp.agent_cfg.* and /tmp/rp.session.*: keep them in the campaign.
export TMPDIR={{ tmp_dir_q }}
mkdir -p -m 700 "$TMPDIR"
if [ "$(id -u)" = 0 ]; then  # OpenMPI refuses root without both of these
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export RADICAL_PROFILE="${RADICAL_PROFILE:-FALSE}"
echo "asyncflow-hpc: job ${PBS_JOBID:-${SLURM_JOB_ID:-?}} started $(date -u +%FT%TZ)"

# PBS has no early-warning signal: at the limit (or qdel) it sends SIGTERM to every process
# of the job, then SIGKILL after a grace period (kill_delay); the campaign handles that
# SIGTERM itself (cancel tasks, close the pilot). USR1, for sites that send one early, is
# passed on as SIGTERM. No setsid: the agent must die with the job.
client=
forward() {
  echo "asyncflow-hpc: $1 received, stopping the campaign" >&2
  [ -n "$client" ] && kill -TERM "$client" 2>/dev/null
}
note() {  # the scheduler signals every process of the job: the campaign has it already
  echo "asyncflow-hpc: $1 received by the job; the campaign is shutting down" >&2
}
trap 'forward USR1' USR1
trap 'note TERM' TERM
trap 'note INT' INT

# Processes that detach from their parents (RADICAL-Pilot's agent components) can
# outlive the job where the scheduler does not track sessions or cgroups. A watcher in
# its own session waits for this shell to end, then ends whatever is left of this
# shell's process group. Nothing is killed by name.
if command -v setsid >/dev/null 2>&1 && [ "$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ')" = "$$" ]; then
  # ( ... & ): the watcher's parent exits at once, so it is not a descendant of this job
  # either and the scheduler's own SIGTERM/SIGKILL at scancel does not reach it
  ( setsid /bin/bash -c 'trap "" TERM INT HUP; while kill -0 "$1" 2>/dev/null; do sleep 1; done
    kill -TERM -- "-$1" 2>/dev/null || exit 0
    sleep 3; kill -KILL -- "-$1" 2>/dev/null; exit 0' afhpc-reaper "$$" </dev/null >/dev/null 2>&1 & )
fi

"$PYTHON" -m asyncflow_hpc run {{ script_q }} --in-allocation --backend {{ backend_q }} {{ site_args_q }} -- {{ script_args_q }} &
client=$!
status=0
while :; do
  wait "$client"; status=$?   # a trapped signal interrupts wait: wait again
  kill -0 "$client" 2>/dev/null || break
done
echo "asyncflow-hpc: campaign exited with status ${status} at $(date -u +%FT%TZ)"
exit "$status"
