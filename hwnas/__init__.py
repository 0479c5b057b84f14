"""Hardware-aware NAS: the hierarchical search space, networks, search and CLI."""

from __future__ import annotations

__version__ = "0.1.0"
