"""Why a stored space config differs from the current one, in words a user can act on.

Stores and predictors are bound to a space key (sha256 of the space config). The config is
opaque JSON to profiling and predictor, except for one conventional field: `network_version`,
the macro network the architectures are built with (configs written before the field
existed describe network version 1). A different version means the stored latencies are of
another network: the fix is to profile again, not to choose another space.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def network_version(config: Any) -> int:
    """The config's network version (1 for configs written before versions existed)."""
    if not isinstance(config, Mapping):
        return 1
    try:
        return int(config.get("network_version", 1))
    except (TypeError, ValueError):
        return 1


def changed_fields(stored: Any, current: Any) -> str:
    """'field: stored -> current' for each differing field (empty if either is unknown)."""
    if not isinstance(stored, Mapping) or not isinstance(current, Mapping) or not stored:
        return ""
    parts = []
    for key in sorted(set(stored) | set(current)):
        if key in ("description",):
            continue
        a, b = stored.get(key, "(absent)"), current.get(key, "(absent)")
        if a != b:
            parts.append(f"{key}: {json.dumps(a)[:40]} -> {json.dumps(b)[:40]}")
    return ", ".join(parts)


def version_mismatch(stored: Any, current: Any, *, made: str, redo: str) -> str | None:
    """A message if the two configs were made with different networks, else None.

    `made` says what was made with the stored config ("profile store X was profiled",
    "predictor X was fitted on profiles"); `redo` says what to run.
    """
    old, new = network_version(stored), network_version(current)
    if old == new:
        return None
    return (
        f"{made} with network version {old}; this hwnas builds network version {new} (another "
        f"macro network, so those latencies do not apply to it): {redo}"
    )
