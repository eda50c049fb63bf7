"""The batch job of a pilot in login-node mode: what it looks like, and the site's options in it.

From a login node RADICAL-Pilot submits each pilot as a batch job through PSI/J, whose
templates know nodes, time, partition, account, QOS, reservation and one constraint, not a
site's other options (memory, exclusive nodes, ``directives`` such as ``--gres=...``).
:func:`submit_wrappers` writes ``sbatch``/``qsub`` stand-ins into a folder that goes first on
the PATH of RP's processes: each passes the site's options on the command line (where they
override nothing the script says and add what it does not) and runs the real command.
:func:`pilot_job_script` renders the script with PSI/J's own template, as RP would submit it,
with those options shown as directive lines (``dask-jobqueue``'s ``job_script()``).
"""

from __future__ import annotations

import datetime
import io
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .resources import pilot_options, site_resource_config
from .sites import Site

__all__ = ["pilot_job_script", "submit_wrappers"]

_SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}
_PREFIX = {"slurm": "#SBATCH", "pbs": "#PBS"}


def _option_words(options: list[str]) -> list[str]:
    words: list[str] = []
    for option in options:
        words += shlex.split(option)
    return words


def submit_wrappers(folder: str | os.PathLike[str], scheduler: str,
                    options: list[str]) -> Path | None:
    """Write the submit command's stand-in (see the module docstring) into ``folder``; the
    folder, or None when there is nothing to add or the real command is not installed."""
    command = _SUBMIT.get(scheduler)
    if not options or command is None:
        return None
    folder = Path(folder)
    real = shutil.which(command, path=os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != folder.resolve()))
    if real is None:
        return None
    from ..safe_files import private_dir, write_file

    private_dir(folder)
    words = " ".join(shlex.quote(w) for w in [real, *_option_words(options)])
    write_file(folder / command, (
        "#!/bin/sh\n"
        "# asyncflow-hpc: the site's options for pilot jobs (see asyncflow_hpc.hpc.pilot_script)\n"
        f'exec {words} "$@"\n').encode(), 0o700)
    return folder


def pilot_job_script(site: Site, *, nodes: int | None = None, runtime: int | None = None
                     ) -> str:
    """The batch script of the pilot that ``run SCRIPT --site SITE`` submits from a login
    node: PSI/J's template filled as RADICAL-Pilot fills it (its bootstrap path shown as a
    placeholder), the site's extra options as directive lines after the others."""
    try:
        import psij
    except ImportError as exc:
        raise ConfigurationError("showing a pilot's job script needs RADICAL-Pilot (and PSI/J): "
                                 "pip install 'asyncflow-hpc[radical]'") from exc
    opts = pilot_options(site, nodes=nodes, runtime=runtime)
    _, entry = site_resource_config(site, in_allocation=False)
    cores = int((entry or {}).get("cores_per_node") or site.cores_per_node or 1)
    schema = "slurm" if site.scheduler == "slurm" else "pbs"
    attrs = psij.JobAttributes()
    attrs.duration = datetime.timedelta(minutes=opts["runtime"])
    part, _, qos = str(opts.get("queue") or "").partition(":")
    proj, _, res = str(opts.get("project") or "").partition(":")
    attrs.queue_name = part or None
    attrs.project_name = proj or None
    attrs.reservation_id = res or None
    if qos:
        attrs.set_custom_attribute(name=f"{schema}.qos", value=qos)
    sandbox = f"{site.work_dir or '$HOME'}/radical.pilot.sandbox"
    spec = psij.JobSpec()
    spec.attributes = attrs
    spec.inherit_environment = False  # RP's batch pilots start clean (--export=NONE)
    spec.executable = "/bin/bash"
    spec.arguments = ["-l", f"{sandbox}/<session>/<pilot>/bootstrap_0.sh"]
    spec.directory = f"{sandbox}/<session>/<pilot>"
    spec.resources = psij.ResourceSpecV1(node_count=opts["nodes"],
                                         process_count=opts["nodes"] * cores)
    job = psij.Job(spec)
    executor: Any = psij.JobExecutor.get_instance(schema)
    buf = io.StringIO()
    executor.generate_submit_script(job, executor._create_script_context(job), buf)
    return _with_options(buf.getvalue(), schema, site.batch_options())


def _with_options(text: str, scheduler: str, options: list[str]) -> str:
    """``text`` with one directive line per option after its last directive line."""
    if not options:
        return text
    prefix = _PREFIX[scheduler]
    lines = text.splitlines()
    last = max((i for i, line in enumerate(lines) if line.startswith(prefix)), default=0)
    extra = [f"{prefix} {option}  # from the site (passed on the {_SUBMIT[scheduler]} command "
             "line)" for option in options]
    return "\n".join(lines[:last + 1] + extra + lines[last + 1:]) + "\n"
