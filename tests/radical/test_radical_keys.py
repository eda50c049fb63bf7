"""The task_description keys the backend knows without importing radical.pilot are the ones
the installed radical.pilot has: a new or renamed field fails here, not in a campaign."""

from __future__ import annotations

import pytest

from asyncflow_hpc.backends.radical.keys import RESERVED_KEYS, TASK_FIELDS, TD_ALIASES

rp = pytest.importorskip("radical.pilot")


def test_the_known_fields_are_radical_pilots_fields() -> None:
    schema = set(rp.TaskDescription._schema)
    assert TASK_FIELDS <= schema, f"not RP fields: {sorted(TASK_FIELDS - schema)}"
    unknown = schema - TASK_FIELDS - RESERVED_KEYS
    assert not unknown, f"RP fields neither accepted nor reserved: {sorted(unknown)}"
    assert set(TD_ALIASES.values()) <= TASK_FIELDS
