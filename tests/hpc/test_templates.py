"""Batch templates: rendering rules, validation and quoting of every value."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from asyncflow_hpc.hpc.sites import site_from_dict
from asyncflow_hpc.hpc.templates import (
    TemplateError,
    job_values,
    list_templates,
    render_template,
    render_text,
    validate_job_name,
)

SLURM = site_from_dict("c", {"scheduler": "slurm", "partition": "debug", "account": "proj",
                             "qos": "normal", "prepare": ["module load x"],
                             "environment": {"A": "it's"}, "walltime": 30})
PBS = site_from_dict("p", {"scheduler": "pbs", "queue": "workq", "cores_per_node": 8})


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "camp.py"
    path.write_text("print('hi')\n")
    return path


def test_templates_ship_for_both_schedulers():
    names = {(t.scheduler, t.name) for t in list_templates()}
    assert {("slurm", "campaign"), ("pbs", "campaign")} <= names
    for t in list_templates():
        assert t.summary, f"{t.path} needs a '# name: summary' line"


ROOT = Path(__file__).resolve().parents[2]


def test_one_source_of_truth_is_packaged(tmp_path):
    """Top-level batch_templates/ is the source; the package holds a link to it, and a build
    (what a wheel gets) carries real files."""
    link = ROOT / "asyncflow_hpc" / "batch_templates"
    if not link.is_symlink():
        pytest.skip("not a source checkout")
    assert os.readlink(link) == "../batch_templates"
    assert link.resolve() == (ROOT / "batch_templates").resolve()
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                           "build_py", "-d", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for t in list_templates():
        built = out / "asyncflow_hpc" / "batch_templates" / t.scheduler / f"{t.name}.sh"
        assert built.is_file() and not built.is_symlink(), built
        assert built.read_text() == t.path.read_text()


@pytest.mark.parametrize("bad", ["a;b", "a\nb", "a b", "$(x)", "a`b`", "", "x" * 65, "a'b", "a|b"])
def test_unsafe_job_names_refused(bad):
    with pytest.raises(TemplateError, match="job name"):
        validate_job_name(bad)


def test_unsafe_job_name_refused_through_job_values(script, tmp_path):
    with pytest.raises(TemplateError, match=r"contains ';'"):
        job_values(SLURM, script, campaign_dir=tmp_path, job_name="x;reboot")
    with pytest.raises(TemplateError, match="a newline"):
        job_values(SLURM, script, campaign_dir=tmp_path, job_name="x\n#SBATCH --uid=0")


def test_slurm_render(script, tmp_path):
    values = job_values(SLURM, script, campaign_dir=tmp_path, nodes=2, runtime=75,
                        script_args=["--samples", "a b; rm -rf /"])
    text = render_template("slurm", "campaign", values)
    assert "{{" not in text
    assert "#SBATCH --job-name=afhpc-camp\n" in text
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --time=01:15:00\n" in text
    assert "#SBATCH --partition=debug\n" in text and "#SBATCH --qos=normal\n" in text
    assert "#SBATCH --signal=B:USR1@120\n" in text
    assert "--reservation" not in text and "--gpus-per-node" not in text  # unset: line dropped
    assert "\nmodule load x\n" in text and "export A='it'\"'\"'s'" in text
    assert f"export TMPDIR={shlex.quote(str(tmp_path / 'tmp'))}" in text
    run_line = next(line for line in text.splitlines() if "-m asyncflow_hpc run" in line)
    assert "--in-allocation" in run_line and "--site c" in run_line
    assert shlex.split(run_line)[-3:] == ["--samples", "a b; rm -rf /", "&"]
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # valid shell


def test_pbs_render(script, tmp_path):
    text = render_template("pbs", "campaign", job_values(PBS, script, campaign_dir=tmp_path,
                                                         backend="local"))
    assert "#PBS -N afhpc-camp\n" in text and "#PBS -q workq\n" in text
    assert "#PBS -l select=1:ncpus=8:mpiprocs=8\n" in text and "#PBS -l walltime=00:30:00\n" in text
    assert "-A " not in text and "qos" not in text
    assert "--backend local" in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_bad_values(script, tmp_path):
    with pytest.raises(TemplateError, match="nodes"):
        job_values(SLURM, script, campaign_dir=tmp_path, nodes=0)
    with pytest.raises(TemplateError, match="runtime"):
        job_values(SLURM, script, campaign_dir=tmp_path, runtime=0)
    with pytest.raises(TemplateError, match="without spaces"):
        job_values(SLURM, script, campaign_dir=tmp_path / "with space")
    with pytest.raises(TemplateError, match="does not exist"):
        job_values(SLURM, tmp_path / "nope.py", campaign_dir=tmp_path)
    with pytest.raises(TemplateError, match="script argument 0"):
        job_values(SLURM, script, campaign_dir=tmp_path, script_args=["a\nb"])
    with pytest.raises(TemplateError, match="warning_seconds"):
        job_values(SLURM, script, campaign_dir=tmp_path, runtime=1, warning_seconds=120)
    limited = site_from_dict("l", {"scheduler": "slurm", "max_nodes": 2, "max_walltime": 60})
    with pytest.raises(TemplateError, match="at most 2 nodes"):
        job_values(limited, script, campaign_dir=tmp_path, nodes=3)
    with pytest.raises(TemplateError, match="at most 60 minutes"):
        job_values(limited, script, campaign_dir=tmp_path, runtime=61)


def test_render_rules():
    assert render_text("a {{ x }}\nb {{ y }}\nc\n", {"x": 1, "y": None}) == "a 1\nc\n"
    assert render_text("- {{ l }}\n", {"l": ["p", "q"]}) == "- p\n- q\n"
    with pytest.raises(TemplateError, match="no value"):
        render_text("{{ typo }}\n", {})
    with pytest.raises(TemplateError, match="newline"):
        render_text("{{ x }}\n", {"x": "a\nb"})


@pytest.mark.parametrize("site", [SLURM, PBS], ids=["slurm", "pbs"])
def test_templates_start_a_detached_watcher_of_the_process_group(site, script, tmp_path):
    """Detached agent processes must not outlive a cancelled job (proctrack/linuxproc)."""
    text = render_template(site.scheduler, "campaign", job_values(site, script, campaign_dir=tmp_path))
    watcher = text[text.index("( setsid"):text.index("afhpc-reaper")]
    assert 'kill -TERM -- "-$1"' in watcher and 'kill -KILL -- "-$1"' in watcher
    assert "pkill" not in text and "killall" not in text  # never by name
    assert text.index("afhpc-reaper") < text.index("-m asyncflow_hpc run")

