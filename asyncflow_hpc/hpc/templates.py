"""Batch scripts from ``batch_templates/``, with every value validated and quoted.

A template is a plain shell script with ``{{ name }}`` placeholders. The renderer knows no
shell: safety comes from the values. Each one is checked before it is put in (a job name with
``;``, a space or a newline is refused, numbers must be numbers), and values meant for the
script body come in a ``*_q`` form quoted with :func:`shlex.quote`. Scheduler directive lines
(``#SBATCH``/``#PBS``) get only values that need no quoting at all.

Rendering rules: a line whose placeholder is ``None`` is left out (optional directives such as
``--account``); a line whose placeholder is a list is repeated once per item (``prepare``
commands, extra directives); an unknown placeholder is an error, so a typo in a template can
never reach a cluster.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..suggestions import did_you_mean
from .sites import Site

__all__ = ["TemplateError", "TemplateInfo", "job_values", "list_templates", "render_template",
           "template_dirs", "template_path", "validate_job_name"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
#: characters allowed in a path that goes into a directive line (no quoting there)
_DIRECTIVE_PATH = re.compile(r"^/[A-Za-z0-9_./+@%:,=-]*$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class TemplateError(ConfigurationError):
    """A template or a value for it is unusable; the message names which."""


@dataclasses.dataclass(frozen=True)
class TemplateInfo:
    scheduler: str
    name: str
    path: Path
    summary: str


def template_dirs() -> list[Path]:
    """Where templates live: inside the installed package, else the source tree's top level."""
    here = Path(__file__).resolve().parent.parent
    candidates = [here / "batch_templates", here.parent / "batch_templates"]
    return [p for p in candidates if p.is_dir() and any(p.glob("*/*.sh"))]


def _summary(path: Path) -> str:
    for line in path.read_text().splitlines()[1:6]:
        if line.startswith("# ") and ":" in line:
            return line[2:].split(":", 1)[1].strip()
    return ""


def list_templates() -> list[TemplateInfo]:
    """Every template, one per (scheduler, name); the package's copy wins."""
    seen: dict[tuple[str, str], TemplateInfo] = {}
    for root in template_dirs():
        for path in sorted(root.glob("*/*.sh")):
            key = (path.parent.name, path.stem)
            seen.setdefault(key, TemplateInfo(key[0], key[1], path, _summary(path)))
    return sorted(seen.values(), key=lambda t: (t.scheduler, t.name))


def template_path(scheduler: str, name: str = "campaign") -> Path:
    """The file of one template; a clear error listing the others when it is missing."""
    if not _TEMPLATE_NAME.match(scheduler) or not _TEMPLATE_NAME.match(name):
        raise TemplateError(f"bad template name {scheduler}/{name}")
    for info in list_templates():
        if info.scheduler == scheduler and info.name == name:
            return info.path
    names = [f"{t.scheduler}/{t.name}" for t in list_templates()]
    raise TemplateError(f"no template {scheduler}/{name}"
                        f"{did_you_mean(f'{scheduler}/{name}', names)}; available: "
                        f"{', '.join(names) or 'none found'}")


def validate_job_name(name: str) -> str:
    """A job name safe everywhere: letters, digits and ``_ . + -``; at most 64 characters."""
    if not isinstance(name, str) or not _JOB_NAME.match(name):
        named = {"\n": "a newline", " ": "a space", "\t": "a tab"}
        bad = sorted({named.get(c, repr(c)) for c in str(name) if not re.match(r"[A-Za-z0-9_.+-]", c)})
        why = f"contains {', '.join(bad)}" if bad else "is empty or longer than 64 characters"
        raise TemplateError(f"job name {name!r} {why}; use letters, digits and _ . + - only")
    return name


def _check_text(key: str, value: str) -> None:
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise TemplateError(f"value of {key!r} contains a newline or control character: {value!r}")


def render_template(scheduler: str, name: str, values: Mapping[str, Any]) -> str:
    """Render ``batch_templates/<scheduler>/<name>.sh`` with ``values`` (see module doc)."""
    text = template_path(scheduler, name).read_text()
    return render_text(text, values, f"{scheduler}/{name}")


def render_text(text: str, values: Mapping[str, Any], what: str = "template") -> str:
    """Render one template text; see the module docstring for the rules."""
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        names = _PLACEHOLDER.findall(line)
        for key in names:
            if key not in values:
                raise TemplateError(f"{what} line {lineno}: no value for {{{{ {key} }}}}")
        if any(values[k] is None for k in names):
            continue
        lists = [k for k in names if isinstance(values[k], (list, tuple))]
        if len(lists) > 1:
            raise TemplateError(f"{what} line {lineno}: more than one list placeholder")
        repeat = lists[0] if lists else None
        for item in (list(values[repeat]) if repeat else [None]):
            def sub(m: re.Match[str], item: Any = item, repeat: str | None = repeat) -> str:
                text = str(item if m.group(1) == repeat else values[m.group(1)])
                _check_text(m.group(1), text)
                return text
            out.append(_PLACEHOLDER.sub(sub, line))
    return "\n".join(out) + "\n"


def _hhmmss(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _directive_path(key: str, path: Path) -> str:
    text = str(path)
    if not _DIRECTIVE_PATH.match(text):
        raise TemplateError(f"{key} {text!r} must be an absolute path without spaces, quotes or "
                            "shell characters (it goes into a #SBATCH/#PBS line)")
    return text


def job_values(site: Site, script: str | Path, *, campaign_dir: str | Path,
               job_name: str | None = None, nodes: int | None = None,
               runtime: int | None = None, backend: str = "radical",
               script_args: Sequence[str] = (), warning_seconds: int = 120,
               site_file: str | Path | None = None, python: str | None = None) -> dict[str, Any]:
    """Validated values for the campaign templates of ``site``."""
    script_path = Path(script).resolve()
    if not script_path.is_file():
        raise TemplateError(f"campaign script {script_path} does not exist")
    camp = Path(campaign_dir).resolve()
    name = validate_job_name(job_name or f"afhpc-{re.sub(r'[^A-Za-z0-9_.+-]', '_', script_path.stem)}"[:64])
    nodes = 1 if nodes is None else nodes
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise TemplateError(f"nodes must be a whole number >= 1, got {nodes!r}")
    if site.max_nodes and nodes > site.max_nodes:
        raise TemplateError(f"site {site.name!r} allows at most {site.max_nodes} nodes, asked for {nodes}")
    minutes = site.walltime if runtime is None else runtime
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise TemplateError(f"runtime must be a whole number of minutes >= 1, got {minutes!r}")
    if site.max_walltime and minutes > site.max_walltime:
        raise TemplateError(f"site {site.name!r} allows at most {site.max_walltime} minutes, "
                            f"asked for {minutes}")
    if not isinstance(warning_seconds, int) or warning_seconds < 0 or warning_seconds >= minutes * 60:
        raise TemplateError(f"warning_seconds must be >= 0 and shorter than the runtime, "
                            f"got {warning_seconds!r}")
    if backend not in ("radical", "local", "dryrun"):
        raise TemplateError(f"backend {backend!r}: choose radical, local or dryrun")
    for i, arg in enumerate(script_args):
        _check_text(f"script argument {i}", str(arg))
    # the job runs the campaign with the site's interpreter: the site's python, else the
    # python3 its prepare lines put first, else this one (the job inherits this environment)
    py = python or site.python or ("python3" if site.prepare else sys.executable)
    _check_text("python", py)
    exports = [f"export {k}={shlex.quote(v)}" for k, v in site.environment.items()]
    site_args = ["--site", site.name]
    if site_file is not None:
        site_args += ["--site-file", str(Path(site_file).resolve())]
    return {
        "job_name": name,
        "site": site.name,
        "nodes": nodes,
        "cores_per_node": site.cores_per_node,
        "pbs_select": (f"select={nodes}:ncpus={site.cores_per_node}:mpiprocs={site.cores_per_node}"
                       if site.cores_per_node else f"select={nodes}"),
        "gpus_per_node": site.gpus_per_node or None,
        "ntasks_per_node": site.ntasks_per_node,
        "walltime": _hhmmss(minutes),
        "runtime": minutes,
        "partition": site.partition,
        "account": site.account,
        "qos": site.qos,
        "reservation": site.reservation,
        "directives": site.batch_options(),
        "warning_seconds": warning_seconds,
        "campaign_dir": _directive_path("campaign directory", camp),
        "output": _directive_path("output file", camp / f"{name}.out"),
        "campaign_dir_q": shlex.quote(str(camp)),
        "tmp_dir_q": shlex.quote(str(camp / "tmp")),
        "prepare": list(site.prepare) + exports,
        "python": py,
        "python_q": shlex.quote(py),
        "imports": "asyncflow_hpc, radical.pilot" if backend == "radical" else "asyncflow_hpc",
        "script_q": shlex.quote(str(script_path)),
        "backend_q": shlex.quote(backend),
        "site_args_q": " ".join(shlex.quote(a) for a in site_args),
        "script_args_q": " ".join(shlex.quote(str(a)) for a in script_args),
    }
