"""Options and values several commands share: ``--json``, ``--hook-command``, times, states."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator.errors import UsageError
from migrator.states import State

if TYPE_CHECKING:
    from migrator.hooks import CommandHook

F = TypeVar("F", bound=Callable[..., Any])
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STATE_CHOICE = click.Choice([s.value for s in State], case_sensitive=False)


class LazyChoice(click.Choice[str]):
    """A ``Choice`` whose values are computed on first use, so that declaring the option
    imports nothing (``migrator --help`` stays fast)."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]  # click declares a plain attribute
    def choices(self) -> Sequence[str]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, _value: Sequence[str]) -> None:
        """Ignored: ``Choice.__init__`` sets the values, which here come from ``load``."""


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def hook_option(f: F) -> F:
    return click.option(
        "--hook-command",
        "hook_commands",
        multiple=True,
        metavar="CMD",
        help="Run CMD HOOK ID after each journal commit, the event as JSON on stdin.",
    )(f)


def parse_age(text: str, option: str) -> timedelta:
    """A duration such as ``30s``, ``15m``, ``2h``, ``3d``, ``1w``; else a UsageError."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in AGE_UNITS:
        return timedelta(seconds=int(value[:-1]) * AGE_UNITS[value[-1]])
    raise UsageError(f"{option} {text!r}: expected a duration like 30s, 2h, 3d")


def parse_time(text: str, option: str = "--since") -> datetime:
    """An ISO time (naive means UTC) or an age such as ``30s``, ``15m``, ``2h``, ``3d``."""
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in AGE_UNITS:
        return datetime.now(UTC) - parse_age(value, option)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected an ISO time or an age like 30s, 2h, 3d"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def states_of(names: Iterable[str]) -> list[State]:
    """``--state`` values (any case) as states."""
    return [State(name.upper()) for name in names]


def hooks_from(commands: tuple[str, ...]) -> list[CommandHook]:
    """``--hook-command`` values as hooks; an empty or unparsable one is a UsageError."""
    from migrator.hooks import CommandHook

    hooks = []
    for command in commands:
        try:
            hook = CommandHook(command)
        except ValueError as exc:
            raise UsageError(f"--hook-command {command!r}: {exc}") from None
        if shutil.which(hook.argv[0]) is None:
            raise UsageError(f"--hook-command {command!r}: {hook.argv[0]!r} not found")
        hooks.append(hook)
    if hooks:
        _show_hook_warnings()
    return hooks


class _WarningLine(logging.Handler):
    """Log records as one escaped line on stderr: ``migrator: warning: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        from migrator.cli.render import safe

        click.echo(f"migrator: warning: {safe(record.getMessage(), 1000)}", err=True)


def _show_hook_warnings() -> None:
    logger = logging.getLogger("migrator.hooks")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
