"""``asyncflow-hpc sites list|show|check``: the clusters this machine knows, and whether they work.

``check`` asks the scheduler itself — commands on PATH, the partition exists, the account is
accepted (``sbatch --test-only``, which queues nothing) — so that a typo in a site file shows
up before a campaign waits in a queue for hours.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence

import click

from ..errors import ConfigurationError
from ..hpc.resources import resource_entry, resource_name
from ..hpc.rpconfig import shipped_resources
from ..hpc.schedulers import scheduler_for
from ..hpc.sites import Site, find_site, load_sites, site_file_paths

__all__ = ["check_site", "sites_group"]

_site_files = click.option("--site-file", "site_files", multiple=True,
                           type=click.Path(exists=True, dir_okay=False),
                           help="Read sites from this TOML file too (repeatable).")


@click.group("sites", context_settings={"help_option_names": ["-h", "--help"]})
def sites_group() -> None:
    """Sites: clusters described in TOML (scheduler, partition, account, launcher, ...).

    Read from built-in sites, ~/.config/asyncflow-hpc/sites.toml, ./asyncflow-hpc.toml,
    $ASYNCFLOW_HPC_SITE_FILE and --site-file (later wins). RADICAL-Pilot resource names
    such as ornl.frontier are sites too.

    \b
    A site file holds [sites.NAME] tables with the fields
      scheduler (slurm|pbs), partition (or queue), account (or project), qos, reservation,
      cores_per_node, gpus_per_node, launcher (srun|mpirun|mpiexec), prepare (shell lines),
      environment, walltime (minutes), max_walltime, max_nodes, directives, work_dir,
      rp_resource, description
    (reference: docs/hpc.md, "Site files"). A wrong field is an error naming the file,
    the site and the field.
    """


def _load(name: str, site_files: Sequence[str]) -> Site:
    try:
        return find_site(name, site_files)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


@sites_group.command("list")
@_site_files
@click.option("--rp", "show_rp", is_flag=True,
              help="Also list RADICAL-Pilot's shipped resource names usable as sites.")
def list_sites(site_files: Sequence[str], show_rp: bool) -> None:
    """List the sites defined here (name, scheduler, partition, where defined)."""
    try:
        sites = load_sites(site_files)
        files = site_file_paths(site_files)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'NAME':<20} {'SCHEDULER':<9} {'PARTITION':<12} {'LAUNCHER':<8} SOURCE")
    for name, site in sorted(sites.items()):
        click.echo(f"{name:<20} {site.scheduler:<9} {site.partition or '-':<12} "
                   f"{site.launcher:<8} {site.source}")
    click.echo(f"site files read: {', '.join(map(str, files)) or 'none'}")
    if show_rp:
        names = sorted(shipped_resources())
        click.echo(f"RADICAL-Pilot resources ({len(names)}): {' '.join(names) or 'RP not installed'}")


@sites_group.command("show")
@click.argument("name")
@_site_files
@click.option("--rp-config", type=click.Choice(["none", "batch", "allocation"]), default="none",
              show_default=True, help="Also print the RADICAL-Pilot resource config generated "
              "for login-node (batch) or in-allocation mode.")
@click.option("--job-script", is_flag=True,
              help="Print only the batch script of the pilot job that 'run --site NAME' "
                   "submits from a login node (PSI/J's template, as RADICAL-Pilot fills it).")
@click.option("--nodes", type=int, default=None, help="With --job-script: pilot nodes.")
@click.option("--runtime", type=int, default=None, metavar="MIN",
              help="With --job-script: pilot walltime in minutes.")
def show_site(name: str, site_files: Sequence[str], rp_config: str, job_script: bool,
              nodes: int | None, runtime: int | None) -> None:
    """Show one site's settings (and, with --rp-config, the RP config made from it).

    NAME is a site from a site file or a RADICAL-Pilot resource name (ornl.frontier). Only
    the fields that are set are printed, with the file the site came from (source).
    """
    site = _load(name, site_files)
    if job_script:
        from ..hpc.pilot_script import pilot_job_script

        try:
            click.echo(pilot_job_script(site, nodes=nodes, runtime=runtime), nl=False)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    for key, value in site.as_dict().items():
        click.echo(f"{key:<15} = {json.dumps(value)}")
    if rp_config != "none":
        in_alloc = rp_config == "allocation"
        try:
            entry = resource_entry(site, in_allocation=in_alloc)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"\n# RADICAL-Pilot resource {resource_name(site, in_alloc)}")
        click.echo(json.dumps(entry, indent=2, sort_keys=True))


def check_site(site: Site) -> list[tuple[str, str, str]]:
    """(status, check, detail) rows; status is ``ok``, ``FAIL`` or ``skip``."""
    scheduler = scheduler_for(site.scheduler)
    rows: list[tuple[str, str, str]] = []
    for cmd in scheduler.commands:
        path = shutil.which(cmd)
        rows.append(("ok" if path else "FAIL", f"command {cmd}", path or "not on PATH"))
    launcher = shutil.which(site.launcher)
    rows.append(("ok" if launcher else "FAIL", f"launcher {site.launcher}", launcher or "not on PATH"))
    if any(r[0] == "FAIL" for r in rows[:len(scheduler.commands)]):
        return rows
    return rows + scheduler.check(site)


@sites_group.command("check")
@click.argument("name")
@_site_files
def check_command(name: str, site_files: Sequence[str]) -> None:
    """Check a site against this machine: scheduler commands, partition, account.

    SLURM: sbatch/srun/squeue/scancel/sinfo and the site's launcher are on PATH, the
    partition exists (sinfo -p), and partition, account, qos and reservation together are
    accepted (sbatch --test-only, which queues nothing). PBS: qsub/qstat/qdel and the
    launcher, the queue exists (qstat -Q); the account cannot be checked without submitting.
    Exits 1 when any check fails. Run it on the cluster's login node.
    """
    site = _load(name, site_files)
    rows = check_site(site)
    for status, what, detail in rows:
        click.echo(f"{status:<5} {what:<40} {detail}")
    if any(status == "FAIL" for status, _, _ in rows):
        raise SystemExit(1)
