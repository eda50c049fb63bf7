#!/bin/bash
# campaign: run an asyncflow-hpc campaign inside this SLURM allocation (pilot by fork, tasks by srun)
#
# Rendered by `asyncflow-hpc submit SCRIPT --site {{ site }}`; every value below was validated
# and, in the script body, shell-quoted. Submit by hand with: sbatch <this file>
#SBATCH --job-name={{ job_name }}
#SBATCH --nodes={{ nodes }}
#SBATCH --ntasks-per-node={{ ntasks_per_node }}
#SBATCH --gpus-per-node={{ gpus_per_node }}
#SBATCH --time={{ walltime }}
#SBATCH --partition={{ partition }}
#SBATCH --account={{ account }}
#SBATCH --qos={{ qos }}
#SBATCH --reservation={{ reservation }}
#SBATCH --chdir={{ campaign_dir }}
#SBATCH --output={{ output }}
#SBATCH --signal=B:USR1@{{ warning_seconds }}
#SBATCH {{ directives }}

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
echo "asyncflow-hpc: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST} (${SLURM_CPUS_ON_NODE} cpus/node) started $(date -u +%FT%TZ)"

# SLURM sends USR1 to this shell {{ warning_seconds }} s before the time limit (--signal=B:USR1@...):
# pass it on as SIGTERM so the campaign cancels its tasks and closes its pilot cleanly.
# At the limit itself, and on scancel, SLURM sends SIGTERM to every process of the job (the
# campaign handles it) and SIGKILL KillWait seconds later: forwarding a second SIGTERM would
# only cut the campaign's shutdown short. The client stays in this shell's process group (no setsid): the agent must die with the job.
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

# With proctrack/linuxproc SLURM ends only the processes it can trace to the job, and
# RADICAL-Pilot's agent components detach from their parents: after a scancel they
# would live on. A watcher in its own session waits for this shell to end, then ends
# whatever is left of this shell's process group (the campaign and everything it
# started; srun steps and slurmstepd are not in it). Nothing is killed by name.
if command -v setsid >/dev/null 2>&1 && [ "$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ')" = "$$" ]; then
  # ( ... & ): the watcher's parent exits at once, so it is not a descendant of this job
  # either and the scheduler's own SIGTERM/SIGKILL at scancel does not reach it
  ( setsid /bin/bash -c 'trap "" TERM INT HUP; while kill -0 "$1" 2>/dev/null; do sleep 1; done
    kill -TERM -- "-$1" 2>/dev/null || exit 0
    sleep 3; kill -KILL -- "-$1" 2>/dev/null; exit 0' afhpc-reaper "$$" </dev/null >/dev/null 2>&1 & )
fi

# a job SLURM requeued (its node failed) continues from the journal instead of starting over
resume=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  resume=(--resume-if-any)
  echo "asyncflow-hpc: restart ${SLURM_RESTART_COUNT} of this job: resuming from the journal"
fi
"$PYTHON" -m asyncflow_hpc run {{ script_q }} --in-allocation "${resume[@]}" --backend {{ backend_q }} {{ site_args_q }} -- {{ script_args_q }} &
client=$!
status=0
while :; do
  wait "$client"; status=$?   # a trapped signal interrupts wait: wait again
  kill -0 "$client" 2>/dev/null || break
done
echo "asyncflow-hpc: campaign exited with status ${status} at $(date -u +%FT%TZ)"
exit "$status"
