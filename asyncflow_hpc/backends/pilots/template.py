"""Pilot templates: what one kind of pilot offers, and how many of them a pool may hold.

A :class:`PilotTemplate` names a place (a site, or an RP resource such as ``local.localhost``),
a pilot's size and walltime, what its nodes offer (cores, GPUs, a partition) and the elastic
bounds ``min_pilots``/``max_pilots``. Tasks are routed by what they need (:func:`needs_of`)
to the templates that offer it (:meth:`PilotTemplate.offers`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigurationError
from ...suggestions import did_you_mean

__all__ = ["Needs", "PilotTemplate", "needs_of", "template_from"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
#: RadicalPilotBackend keywords a template passes on through ``options``
PASSED_OPTIONS = frozenset({"warm", "raptor", "nice", "client", "project", "account",
                            "prepare_env", "sandbox", "memory", "access_schema", "job_name"})


@dataclasses.dataclass(frozen=True)
class Needs:
    """What one task asks of a pilot."""

    cores: int = 1  # ranks x cores_per_rank
    cores_per_rank: int = 1
    gpus: float = 0.0  # per rank
    pilot: str | None = None  # a template's name (``task_description["pilot"]``)
    partition: str | None = None  # ``task_description["partition"]``

    def text(self) -> str:
        parts = [f"{self.cores} core(s)"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU(s) per rank")
        if self.pilot:
            parts.append(f"pilot {self.pilot!r}")
        if self.partition:
            parts.append(f"partition {self.partition!r}")
        return ", ".join(parts)


def needs_of(td: Mapping[str, Any] | None) -> Needs:
    """A task description's needs (RP's defaults: one rank of one core, no GPU)."""
    td = td or {}
    ranks = _positive(td.get("ranks"), 1)
    per_rank = _positive(td.get("cores_per_rank"), 1)
    try:
        gpus = float(td.get("gpus_per_rank") or 0)
    except (TypeError, ValueError):
        gpus = 0.0
    pilot = td.get("pilot")
    part = td.get("partition")
    return Needs(ranks * per_rank, per_rank, gpus, pilot if isinstance(pilot, str) else None,
                 part if isinstance(part, str) else None)


def _positive(value: Any, default: int) -> int:
    try:
        return max(1, int(value)) if value else default
    except (TypeError, ValueError):
        return default


@dataclasses.dataclass(frozen=True)
class PilotTemplate:
    """One kind of pilot a :class:`~.pool.PilotPool` may start.

    ``site`` (a :class:`~asyncflow_hpc.hpc.sites.Site` or a site's name) or ``resource`` (an
    RP resource, e.g. ``"local.localhost"``) says where. ``nodes`` per pilot, or ``cores``
    for a pilot smaller than a node (RP's local resource); ``runtime`` is each pilot's
    walltime in minutes. ``partition``, ``cores_per_node`` and ``gpus_per_node`` override the
    site's (a "gpu" template on the same cluster is the site with another partition and GPUs).
    ``min_pilots``/``max_pilots`` bound how many pilots of this template run at once (a
    walltime replacement may overlap the pilot it replaces). ``options`` are further
    :class:`~asyncflow_hpc.backends.radical.RadicalPilotBackend` keywords (see
    :data:`PASSED_OPTIONS`).
    """

    name: str
    site: Any = None
    resource: str | None = None
    nodes: int = 1
    cores: int | None = None
    runtime: int = 60
    partition: str | None = None
    cores_per_node: int | None = None
    gpus_per_node: int | None = None
    min_pilots: int = 0
    max_pilots: int = 1
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"pilot template {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigurationError(f"pilot template name {self.name!r} must start with a "
                                     "letter and use letters, digits, '-' or '_' (at most 32)")
        if (self.site is None) == (self.resource is None):
            raise ConfigurationError(f"{where}: give site= (a Site or a site's name) or "
                                     "resource= (an RP resource such as 'local.localhost'), one")
        if self.resource is not None and (not isinstance(self.resource, str)
                                          or self.resource.count(".") != 1):
            raise ConfigurationError(f"{where}: resource must be '<site>.<entry>', e.g. "
                                     f"'local.localhost', got {self.resource!r}")
        for key, low in (("nodes", 1), ("runtime", 1), ("min_pilots", 0), ("max_pilots", 1)):
            _check_int(where, key, getattr(self, key), low)
        for key, low in (("cores", 1), ("cores_per_node", 1), ("gpus_per_node", 0)):
            if getattr(self, key) is not None:
                _check_int(where, key, getattr(self, key), low)
        if self.min_pilots > self.max_pilots:
            raise ConfigurationError(f"{where}: min_pilots ({self.min_pilots}) exceeds "
                                     f"max_pilots ({self.max_pilots})")
        if self.partition is not None and (not isinstance(self.partition, str)
                                           or not self.partition):
            raise ConfigurationError(f"{where}: partition must be a non-empty string")
        if not isinstance(self.options, Mapping):
            raise ConfigurationError(f"{where}: options must be a mapping of "
                                     "RadicalPilotBackend keywords")
        for key in self.options:
            if key not in PASSED_OPTIONS:
                hint = did_you_mean(key, PASSED_OPTIONS | TEMPLATE_FIELDS)
                raise ConfigurationError(
                    f"{where}: options[{key!r}] is not a pilot option{hint}; accepted: "
                    f"{', '.join(sorted(PASSED_OPTIONS))}")
        site = self.site
        if isinstance(site, str):
            from ...hpc.sites import find_site

            site = find_site(site)
        if site is not None:
            from ...hpc.sites import Site

            if not isinstance(site, Site):
                raise ConfigurationError(f"{where}: site must be a Site or a site's name, "
                                         f"got {site!r}")
            changes = {k: v for k, v in (("partition", self.partition),
                                         ("cores_per_node", self.cores_per_node),
                                         ("gpus_per_node", self.gpus_per_node)) if v is not None}
            if changes:
                site = dataclasses.replace(site, **changes)
            if site.max_nodes and self.nodes > site.max_nodes:
                raise ConfigurationError(f"{where}: nodes={self.nodes} exceeds site "
                                         f"{site.name!r}'s max_nodes ({site.max_nodes})")
            if site.max_walltime and self.runtime > site.max_walltime:  # type: ignore[operator]
                raise ConfigurationError(f"{where}: runtime={self.runtime} min exceeds site "
                                         f"{site.name!r}'s max_walltime ({site.max_walltime} min)")
            object.__setattr__(self, "site", site)

    # ------------------------------------------------------------------ what it offers
    @property
    def node_cores(self) -> int:
        """Cores of one node (the site's, else this machine's for a local resource)."""
        if self.cores_per_node:
            return self.cores_per_node
        if self.site is not None and self.site.cores_per_node:
            return self.site.cores_per_node
        return os.cpu_count() or 1

    @property
    def node_cores_known(self) -> bool:
        """Whether the template or its site says how many cores a node has."""
        return bool(self.cores_per_node or (self.site is not None and self.site.cores_per_node))

    @property
    def capacity(self) -> int:
        """Cores of one pilot of this template."""
        return self.cores if self.cores else self.nodes * self.node_cores

    @property
    def node_gpus(self) -> int:
        if self.gpus_per_node is not None:
            return self.gpus_per_node
        return self.site.gpus_per_node if self.site is not None else 0

    @property
    def queue(self) -> str | None:
        return self.partition or (self.site.partition if self.site is not None else None)

    @property
    def pilot_nodes(self) -> float:
        """Nodes one pilot holds (a fraction for a ``cores=`` pilot below a node)."""
        return self.nodes if not self.cores else self.cores / self.node_cores

    def offers(self, needs: Needs) -> str | None:
        """None when a pilot of this template can run a task with ``needs``, else why not."""
        if needs.pilot is not None and needs.pilot != self.name:
            return f"it is not pilot {needs.pilot!r}"
        if needs.partition is not None and needs.partition != self.queue:
            return f"its partition is {self.queue or 'the default'}"
        if needs.cores > self.capacity:
            return f"it has {self.capacity} core(s)"
        if needs.cores_per_rank > self.node_cores:
            return f"its nodes have {self.node_cores} core(s)"
        if needs.gpus and not self.node_gpus:
            return "it has no GPU"
        if needs.gpus > self.node_gpus:
            return f"its nodes have {self.node_gpus} GPU(s)"
        return None

    def backend_keywords(self) -> dict[str, Any]:
        """Keywords of the :class:`RadicalPilotBackend` of one pilot (``work_dir`` and
        ``name`` are the pool's to add)."""
        kw: dict[str, Any] = dict(self.options)
        kw["runtime"] = self.runtime
        kw["on_pilot_failure"] = "fail"  # the pool moves the tasks of a pilot that ended
        if self.site is not None:
            kw["site"] = self.site
            kw["nodes"] = self.nodes
        else:
            kw["resource"] = self.resource
            if self.cores:
                kw["cores"] = self.cores
            else:
                kw["nodes"] = self.nodes
            extra = {k: v for k, v in (("cores_per_node", self.cores_per_node),
                                       ("gpus_per_node", self.gpus_per_node)) if v is not None}
            if extra:
                kw["site_config"] = {self.resource: extra}
            if self.partition:
                kw["queue"] = self.partition
        return kw

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "where": self.site.name if self.site is not None
                else self.resource, "nodes": self.pilot_nodes, "cores": self.capacity,
                "gpus_per_node": self.node_gpus, "partition": self.queue,
                "runtime_min": self.runtime, "min_pilots": self.min_pilots,
                "max_pilots": self.max_pilots}


TEMPLATE_FIELDS = frozenset(f.name for f in dataclasses.fields(PilotTemplate))


def template_from(value: PilotTemplate | Mapping[str, Any]) -> PilotTemplate:
    """A template, or one built from a dict (an unknown key names the right one)."""
    if isinstance(value, PilotTemplate):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"a pilot template must be a PilotTemplate or a dict, "
                                 f"got {value!r}")
    for key in value:
        if key not in TEMPLATE_FIELDS:
            aliases = {"walltime": "runtime", "queue": "partition", "min": "min_pilots",
                       "max": "max_pilots", "min_blocks": "min_pilots",
                       "max_blocks": "max_pilots", "gpus": "gpus_per_node"}
            raise ConfigurationError(
                f"pilot template {value.get('name', '?')!r}: unknown key {key!r}"
                f"{did_you_mean(key, TEMPLATE_FIELDS, aliases)}; valid keys: "
                f"{', '.join(sorted(TEMPLATE_FIELDS))}")
    if "name" not in value:
        raise ConfigurationError(f"pilot template {dict(value)!r} has no name")
    return PilotTemplate(**value)


def _check_int(where: str, key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{where}: {key} must be an integer >= {low}, got {value!r}"
                                 + (" (minutes)" if key == "runtime" else ""))
