"""What every command shares: the global options, error translation, opened resources.

Library errors become one line on stderr and an ``ExitCode`` here, and nowhere else.
Journals and coordinators a command opens are registered on click's context, so they are
closed when the command ends, whichever way it ends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

import click

from migrator.cli.exits import ExitCode
from migrator.errors import JournalError, MigratorError, UsageError

if TYPE_CHECKING:
    from migrator.drivers.api import Driver
    from migrator.engine.coordinator import Coordinator
    from migrator.journal.reading import Reads
    from migrator.journal.store import Journal


@dataclass(frozen=True)
class Settings:
    """The options given before the command: ``--db``, ``--traceback`` and ``--otel``."""

    db: str
    traceback: bool
    otel: bool = False


def settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    assert obj is not None, "a command runs under the migrator group"
    return obj


def fail(message: str, code: ExitCode) -> NoReturn:
    """One escaped line on stderr, ``migrator: error: ...``, and exit ``code``."""
    from migrator.cli.render import safe

    click.echo(f"migrator: error: {safe(message, 2000)}", err=True)
    sys.exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and their exit code (``docs/cli.md``)."""
    try:
        yield
    except (UsageError, JournalError) as exc:
        if settings().traceback:
            raise
        fail(str(exc), ExitCode.USAGE)
    except MigratorError as exc:
        if settings().traceback:
            raise
        fail(str(exc), ExitCode.FAILED)


def journal(*, check: bool = True, upgrade: bool | None = None, existing: bool = False) -> Journal:
    """The journal of ``--db``, closed when the command ends. ``existing``, for a command
    that only reads: a SQLite journal that is not there is an error, never created."""
    from migrator.journal.store import Journal

    if existing:
        refuse_missing(settings().db)
    opened = Journal.open(settings().db, check=check, upgrade=upgrade)
    return click.get_current_context().with_resource(opened)


def reader() -> Reads:
    """The journal of ``--db`` for a command that only reads it, closed when the command
    ends: a SQLite journal at this code's revision is read without loading SQLAlchemy
    (``SqliteReader``); any other is opened as ``journal(existing=True)`` opens it."""
    from migrator.journal.sqlite_reader import SqliteReader

    opened = SqliteReader.open(settings().db)
    if opened is None:
        return journal(existing=True)
    return click.get_current_context().with_resource(opened)


def refuse_missing(url: str) -> None:
    """``UsageError`` if ``url`` names a SQLite file that does not exist: opening it would
    create an empty journal, which a read command must not leave behind."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return  # Journal.open says what is wrong with it
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path.startswith((":memory:", "file:")):
        return
    if not Path(path).exists():
        raise UsageError(
            f"no journal at {path}: nothing was journaled there (--db or MIGRATOR_DB names"
            " the journal; a migration or `migrator db upgrade` creates it)"
        )


def coordinator(opened: Journal, **options: Any) -> Coordinator:
    """A coordinator on ``opened``, closed when the command ends (before the journal).

    Failpoints come from ``MIGRATOR_FAILPOINTS`` here, the one place the command line reads
    them (docs/recovery.md): the library itself never looks at the environment.
    """
    from migrator.engine.coordinator import Coordinator
    from migrator.failpoints import Failpoints

    made = Coordinator(opened, failpoints=Failpoints.from_env(), **options)
    click.get_current_context().call_on_close(made.close)
    trace(opened, made.id)
    return made


def trace(opened: Journal, coordinator_id: str) -> None:
    """With ``--otel`` (or its environment, docs/tracing.md), export the traces of what
    ``coordinator_id`` journals until the command ends; else nothing is imported."""
    from migrator.tracing import enabled

    if not enabled(settings().otel):
        return
    try:
        from migrator.tracing import Tracer, otlp_processor

        tracer = Tracer(opened, otlp_processor(), coordinator=coordinator_id)
    except ImportError as exc:
        raise UsageError(
            f"--otel needs the tracing extra (pip install 'migrator[tracing]'): {exc}"
        ) from None
    click.get_current_context().call_on_close(tracer.stop)
    tracer.start()


@runtime_checkable
class CallBounded(Protocol):
    """A driver whose calls to its host have timeouts of their own (libvirt's)."""

    def bound_calls(self, seconds: float | None) -> None: ...


def connect(uri: str, *, timeout: float | None) -> Driver:
    """The driver of host ``uri``, its own calls bounded by ``timeout``, the migration's
    per-step timeout: no call before or during the steps (features, probes) outlasts it."""
    from migrator.drivers.registry import connect as open_driver

    driver = open_driver(uri)
    if isinstance(driver, CallBounded):
        driver.bound_calls(timeout)
    return driver


def connecting(timeout: float | None) -> Callable[[str], Driver]:
    """``connect`` with ``timeout``, for a coordinator that reaches journaled hosts."""
    return lambda uri: connect(uri, timeout=timeout)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=True))
