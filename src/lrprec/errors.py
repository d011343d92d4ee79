"""The exceptions lrprec raises for problems with the user's input or data.

Everything a user can cause — a bad option, a missing or corrupt catalog, a stale index —
is an :class:`LrprecError`: the CLI prints it as one line and exits 2, the web app answers
4xx. Any other exception is a bug: the CLI prints "internal error" with the traceback and
exits 1, so it can be reported instead of looking like a user's mistake. Subclassing
``ValueError`` keeps ``except ValueError`` in callers' code working.
"""
from __future__ import annotations


class LrprecError(ValueError):
    """A problem with the user's input or data (one line for the user, not a bug)."""


class UsageError(LrprecError):
    """An option or argument outside what it accepts (a name, a range, a combination)."""
