"""``asyncflow-hpc templates list|show``: the batch scripts ``submit`` renders.

Showing the raw template lets users read exactly what will run in their allocation (and copy
it to adapt by hand); ``submit --dry-run`` shows it rendered for a site.
"""

from __future__ import annotations

import click

from ..errors import ConfigurationError
from ..hpc.templates import list_templates, template_path

__all__ = ["templates_group"]


@click.group("templates", context_settings={"help_option_names": ["-h", "--help"]})
def templates_group() -> None:
    """Batch templates (batch_templates/<scheduler>/<name>.sh) that run a campaign in an allocation.

    'submit' renders one for a site and hands it to sbatch or qsub; inside the job it runs
    'asyncflow-hpc run SCRIPT --in-allocation'.
    """


@templates_group.command("list")
def list_command() -> None:
    """List the templates: scheduler/name, what each does, and its file."""
    for info in list_templates():
        click.echo(f"{info.scheduler + '/' + info.name:<20} {info.summary}")
        click.echo(f"{'':<20} {info.path}")


@templates_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Print one template unrendered; NAME is scheduler/name (slurm/campaign, pbs/campaign).

    Placeholders are {{ name }}: a line whose value is unset is left out, a list value
    repeats its line. 'asyncflow-hpc submit SCRIPT --site S --dry-run' prints the template
    rendered with a site's validated, quoted values. A scheduler alone (slurm) means its
    'campaign' template.
    """
    scheduler, _, template = name.partition("/")
    try:
        path = template_path(scheduler, template or "campaign")
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(path.read_text(), nl=False)
