"""Several RADICAL-Pilot pilots behind one backend: routed by need, elastic, walltime-aware.

``PilotPool`` (:mod:`.pool`) is the backend; ``PilotTemplate`` (:mod:`.template`) describes
one kind of pilot; :mod:`.pilot` keeps one pilot's facts and costs.
"""

from .pool import PilotPool
from .template import PilotTemplate

__all__ = ["PilotPool", "PilotTemplate"]
