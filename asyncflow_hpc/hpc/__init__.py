"""Clusters: site files, RADICAL-Pilot resource configs, batch templates, allocations.

This package turns a short TOML description of a cluster (a *site*) into everything a campaign
needs there: the RADICAL-Pilot resource config (so nobody writes RP JSON by hand), a batch
script that runs the campaign inside an allocation, and the pilot settings. It never imports a
backend's internals: the RADICAL-Pilot backend receives plain keyword arguments.
"""

from __future__ import annotations

from .allocation import Allocation, current_allocation
from .sites import Site, SiteError, find_site, load_sites
from .templates import TemplateError, list_templates, render_template

__all__ = [
    "Allocation",
    "Site",
    "SiteError",
    "TemplateError",
    "current_allocation",
    "find_site",
    "list_templates",
    "load_sites",
    "render_template",
]
