"""The one error type for bad user input, shared by every layer.

It lives in the lowest layer (targets) so profiling, predictor and hwnas can all raise it;
the CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""


class RuntimeMissing(UserError):
    """A backend's runtime is not installed; the message names the pip extra."""
