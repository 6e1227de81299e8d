"""Options and values several commands share: ``--json``, ``--hook-command``, times, states."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrator import limits
from migrator.errors import UsageError
from migrator.states import State

if TYPE_CHECKING:
    from migrator.hooks import CommandHook

F = TypeVar("F", bound=Callable[..., Any])
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_AGE = timedelta(days=100 * 366)
"""The longest age a duration option takes (a century): older is before any journal."""
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


class Seconds(click.ParamType[float]):
    """A time in seconds: ASCII digits, finite, more than 0 (at least 0 with ``zero``, at
    least ``least`` if given) and at most MAX_SECONDS."""

    name = "seconds"

    def __init__(self, *, zero: bool = False, least: float | None = None) -> None:
        self.zero, self.least = zero, least

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        label = _label(param)
        try:
            number = value if isinstance(value, float) else limits.parse_number(value, name=label)
            return limits.seconds(number, name=label, zero=self.zero, least=self.least)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None


class Count(click.IntRange):
    """A whole number in ASCII digits within [low, high] (default: what the journal holds);
    its help shows the range as ``IntRange`` does, without the journal's own bound."""

    def __init__(self, low: int = 0, high: int = limits.INT32_MAX) -> None:
        super().__init__(low, None if high == limits.INT32_MAX else high)
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        label = _label(param)
        try:
            number = value if isinstance(value, int) else limits.parse_integer(value, name=label)
            return limits.integer(number, name=label, low=self.low, high=self.high)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None


class MigrationId(click.ParamType[str]):
    """An id or an id prefix: 1 to 36 characters of hex digits and dashes."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not text or len(text) > 36 or text.strip("0123456789abcdef-"):
            self.fail(
                f"{value[:60]!r}: expected a migration id or its first characters", param, ctx
            )
        return text


def _label(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    return (
        param.opts[0] if param.opts and param.opts[0].startswith("-") else param.human_readable_name
    )


class Text(click.ParamType[str]):
    """Text that fits the journal: non-empty, valid UTF-8, at most ``max_chars``."""

    name = "text"

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return limits.text(value, name=_label(param), max_chars=self.max_chars)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None


SECONDS = Seconds()
MIGRATION_ID = MigrationId()
NAME = Text(limits.MAX_NAME_CHARS)
URI = Text(limits.MAX_URI_CHARS)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


PROBE_PATIENCE_DEFAULT = 20.0
"""``--probe-patience``'s default: ``Coordinator``'s (kept here, not imported, so that the
command line's options load no engine)."""


def probe_patience_option(f: F) -> F:
    return click.option(
        "--probe-patience",
        type=Seconds(zero=True),
        default=PROBE_PATIENCE_DEFAULT,
        show_default=True,
        metavar="S",
        help="How long a probe asks again a host it cannot reach (0: asks once), s.",
    )(f)


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
    if not _is_age(value):
        raise UsageError(f"{option} {text[:60]!r}: expected a duration like 30s, 2h, 3d")
    number = int(value[:-1]) if len(value) <= 20 else MAX_AGE.days * 86400 + 1
    if number * AGE_UNITS[value[-1]] > MAX_AGE.total_seconds():
        raise UsageError(f"{option} {text[:60]!r}: longer than a century")
    return timedelta(seconds=number * AGE_UNITS[value[-1]])


def _is_age(value: str) -> bool:
    return value[:-1].isascii() and value[:-1].isdigit() and value[-1:] in AGE_UNITS


def parse_time(text: str, option: str = "--since") -> datetime:
    """An ISO time (naive means UTC) or an age such as ``30s``, ``15m``, ``2h``, ``3d``."""
    value = text.strip()
    if _is_age(value):
        return datetime.now(UTC) - parse_age(value, option)
    try:
        when = datetime.fromisoformat(value) if value.isascii() else None
        if when is not None:
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
            when.astimezone(UTC)  # an offset that pushes it beyond the calendar fails here
    except (ValueError, OverflowError):
        when = None
    if when is None:
        raise UsageError(f"{option} {text[:60]!r}: expected an ISO time or an age like 30s, 2h, 3d")
    return when


def states_of(names: Iterable[str]) -> list[State]:
    """``--state`` values (any case) as states."""
    return [State(name.upper()) for name in names]


def hooks_from(commands: tuple[str, ...]) -> list[CommandHook]:
    """``--hook-command`` values as hooks; an empty or unparsable one is a UsageError."""
    if not commands:
        return []  # and nothing of the hooks' code imported
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
