"""The exit codes of ``migrator`` (``docs/cli.md``), defined once for every command."""

from __future__ import annotations

import enum

from migrator.states import State


class ExitCode(enum.IntEnum):
    """What a ``migrator`` process tells its caller."""

    OK = 0
    """Success: the migration was confirmed, or the command did what it was asked."""
    FAILED = 1
    """The migration rolled back or failed, or a command's work failed."""
    USAGE = 2
    """Bad usage or bad input (including a journal that cannot be used); nothing changed."""
    IN_DOUBT = 3
    """A migration is IN_DOUBT: `migrator resolve` decides where the domain runs."""
    INTERRUPTED = 130
    """Ctrl-C."""
    TERMINATED = 143
    """SIGTERM (128 + 15), as a shell reports a process it ended."""


BY_STATE = {State.CONFIRMED: ExitCode.OK, State.IN_DOUBT: ExitCode.IN_DOUBT}


def for_state(state: State) -> ExitCode:
    """A migration's end as an exit code: OK if confirmed, IN_DOUBT, else FAILED."""
    return BY_STATE.get(state, ExitCode.FAILED)
