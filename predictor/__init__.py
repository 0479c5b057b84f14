"""Latency predictors learned from profiles, with honest accuracy reports."""

from __future__ import annotations
