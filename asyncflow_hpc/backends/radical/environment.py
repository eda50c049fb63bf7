"""What RP reads from the machine: its environment variables and resource config files.

RP reads its settings from the process environment when the session and its component
processes start, so they are set only for the duration of start-up (:class:`rp_environment`)
and restored afterwards; nothing leaks into the rest of the user's program.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from ...safe_files import private_dir, write_file
from .options import Options

__all__ = ["ENV_LOCK", "import_path", "rp_environment", "write_resource_configs"]

#: two backends starting at once would see each other's values: serialise
ENV_LOCK = threading.Lock()


class rp_environment:
    """RP's environment for the duration of start-up, restored afterwards."""

    def __init__(self, work_dir: Path, batch_options: tuple[str, tuple[str, ...]] | None = None
                 ) -> None:
        self.work_dir = work_dir
        self.batch_options = batch_options
        self.saved: dict[str, str | None] = {}
        self.saved_tempdir: str | None = None

    def __enter__(self) -> None:
        w = self.work_dir
        env = os.environ
        values = {
            "RADICAL_PILOT_BASE": str(w / "session"),
            "RADICAL_PILOT_SESSION_BASE": str(w / "session"),
            "RADICAL_CONFIG_USER_DIR": str(w / "config"),
            "RADICAL_BASE": str(w),
            "TMPDIR": str(w / "tmp"),
        }
        # SLURM requeues a batch job whose node failed (JobRequeue=1): RP would then see no
        # failure and wait until the walltime. Pilot jobs are submitted without requeue.
        if "SBATCH_NO_REQUEUE" not in env and "SBATCH_REQUEUE" not in env:
            values["SBATCH_NO_REQUEUE"] = "1"
        # a user's explicit choice wins for these two (see docs/radical-pilot.md)
        for key, default in (("RADICAL_PROFILE", "FALSE"), ("RADICAL_DEFAULT_IFACE", "lo")):
            if key not in env:
                values[key] = default
        if self.batch_options:
            # the site's own batch options reach the pilot's job through a stand-in for
            # sbatch/qsub first on the PATH of RP's processes (see hpc.pilot_script)
            from ...hpc.pilot_script import submit_wrappers

            scheduler, options = self.batch_options
            folder = submit_wrappers(w / "bin", scheduler, list(options))
            if folder is not None:
                values["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
        for key, value in values.items():
            self.saved[key] = env.get(key)
            env[key] = value
        self.saved_tempdir = tempfile.tempdir

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = self.saved_tempdir


def write_resource_configs(opts: Options, user_dir: str | None) -> None:
    """User resource configs plus ours, in the config dir RP will read."""
    src = user_dir or os.path.expanduser("~")
    user_cfgs = Path(src) / ".radical" / "pilot" / "configs"
    dst = opts.work_dir / "config" / ".radical" / "pilot" / "configs"
    private_dir(dst)
    if user_cfgs.is_dir() and user_cfgs.resolve() != dst.resolve():
        for f in user_cfgs.glob("resource_*.json"):
            shutil.copy(f, dst / f.name)
    patches: dict[str, dict[str, Any]] = {}
    res = opts.resource
    if res.startswith("local."):
        # The agent must find RP's helper scripts from THIS interpreter. Under pyenv (and
        # some module systems) the login shell's PATH puts shims first; bootstrap_0.sh
        # then sources a shim instead of radical-utils-env.sh and the pilot dies at once.
        pre = [f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH"]
        if sys.prefix != sys.base_prefix:
            pre.append(f"export VIRTUAL_ENV={shlex.quote(sys.prefix)}")
        patches[res] = {"pre_bootstrap_0": pre}
        if _pilot_may_exceed_machine(opts):
            # local.localhost fakes 8 cores per node. RP's MPIEXEC method pins ranks with
            # an OpenMPI rankfile to the scheduler's core indices; an index the machine
            # does not have makes mpiexec exit 1 without a word. MPIRUN places ranks by
            # host name only, so MPI tasks run wherever the pilot put them.
            patches[res]["launch_methods"] = {"order": ["FORK", "MPIRUN", "MPIEXEC"]}
    for name, patch in patches.items():
        site, entry = name.split(".", 1)
        path = dst / f"resource_{site}.json"
        data = _read_config(path)
        cur = dict(data.get(entry) or {})
        patch = dict(patch)  # ours: what the entry already says wins, bootstrap lines add up
        patch["pre_bootstrap_0"] = (list(cur.get("pre_bootstrap_0") or [])
                                    + patch["pre_bootstrap_0"])
        if "launch_methods" in cur:
            patch.pop("launch_methods", None)
        cur.update(patch)
        data[entry] = cur
        write_file(path, json.dumps(data, indent=2).encode(), 0o600)
    for name, user in opts.site_config.items():  # the user's entries, over ours
        site, entry = name.split(".", 1)
        path = dst / f"resource_{site}.json"
        data = _read_config(path)
        cur = dict(data.get(entry) or {})
        user = dict(user)
        if name in patches and "pre_bootstrap_0" in user:
            user["pre_bootstrap_0"] = patches[name]["pre_bootstrap_0"] + list(
                user["pre_bootstrap_0"])
        cur.update(user)
        data[entry] = cur
        write_file(path, json.dumps(data, indent=2).encode(), 0o600)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def _pilot_may_exceed_machine(opts: Options) -> bool:
    """True when a local pilot may hand out core indices this machine does not have."""
    cores = opts.pilot.get("cores")
    if not cores:  # nodes x the config's (fake) cores_per_node: 8 on local.localhost
        return True
    return int(cores) > (os.cpu_count() or 1)


def import_path() -> list[str]:
    """This process's import path as absolute folders (the raptor workers get it)."""
    seen: list[str] = []
    for entry in [os.getcwd(), *sys.path]:
        path = os.path.abspath(entry or os.getcwd())
        if os.path.isdir(path) and path not in seen:
            seen.append(path)
    return seen
