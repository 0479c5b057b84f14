"""Measure candidate networks on a target and keep every measurement (SQLite)."""

from __future__ import annotations
