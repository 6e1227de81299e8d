"""The exception tree of migrator.

Every error the library raises on purpose derives from :class:`MigratorError`::

    MigratorError
    ├── UsageError                 bad input from a caller; the CLI exits 2
    │   ├── InvalidURI             unknown scheme, relative test-host path, bad syntax
    │   ├── DomainNotFound         the domain is not on the source host
    │   ├── DomainExists           the domain (or its new name) is already on the destination
    │   ├── MigrationNotFound      no migration matches an id or id prefix
    │   ├── AmbiguousMigrationId   an id prefix matches several migrations
    │   ├── NoCommonProtocol       the two drivers share no migration protocol
    │   ├── FlagNotHonoured        a migration flag a host's driver does not act on
    │   ├── SettingNotHonoured     a policy setting a host's driver does not act on
    │   └── PostcopyUnavailable    post-copy cannot be started for this migration
    ├── JournalError               the journal cannot be used; the CLI exits 2
    │   ├── JournalUnavailable     cannot connect, not a database, locked, disk full
    │   │   └── JournalReplaced    the database is not the one this journal opened
    │   ├── SchemaOutOfDate        the schema is older (or newer) than this code
    │   ├── FenceLost              another coordinator owns the migration now
    │   ├── StateConflict          a conditional write found another state
    │   └── AbortRequested         a write conditional on no abort found one (internal)
    ├── IllegalTransition          a trigger the state machine refuses
    ├── CoordinatorCrashed         recovery's record of a step cut short by a crash
    ├── HandedOver                 a stopping worker left a migration at a step boundary
    └── DriverError                a driver hook failed (its text is data, never trusted)
        ├── StepTimeout            a hook did not return within its timeout
        ├── StepAbandoned          a hook's call the engine stopped waiting for tried to act
        ├── CookieTooLarge         a driver returned a cookie over REMOTE_MIGRATE_COOKIE_MAX
        ├── DriverTextTooLarge     a description, URI or stats over its bound (drivers/api.py)
        ├── PolicyAborted          a convergence policy cancelled Perform (stall, budget)
        ├── HostStateInvalid       a host's state file is malformed, too large or not a
        │                          file (also a UsageError: bad input, the CLI exits 2)
        ├── HostUnreachable        a host cannot be reached now: a probe asks again
        ├── QMPUnreachable         a QEMU domain's QMP socket does not answer
        └── PostcopyLost           a post-copy migration cannot resume: a side's copy is gone

Errors take identifiers as keyword arguments and write their own message.
"""

from __future__ import annotations


class MigratorError(Exception):
    """Root of every error migrator raises on purpose."""


class UsageError(MigratorError):
    """The caller asked for something that cannot be done; nothing was changed."""


class InvalidURI(UsageError):
    def __init__(self, *, uri: str, reason: str) -> None:
        self.uri = uri
        super().__init__(f"invalid host URI {uri!r}: {reason}")


class DomainNotFound(UsageError):
    def __init__(self, *, domain: str, host: str) -> None:
        self.domain = domain
        super().__init__(f"domain {domain!r} not found on {host}")


class DomainExists(UsageError):
    def __init__(self, *, domain: str, host: str) -> None:
        self.domain = domain
        super().__init__(f"domain {domain!r} already exists on {host}")


class MigrationNotFound(UsageError):
    def __init__(self, *, migration_id: str) -> None:
        super().__init__(f"no migration matches {migration_id!r}")


class AmbiguousMigrationId(UsageError):
    def __init__(self, *, prefix: str, count: int) -> None:
        super().__init__(f"{prefix!r} matches {count} migrations; give more of the id")


class NoCommonProtocol(UsageError):
    def __init__(self, *, src: str, dst: str) -> None:
        super().__init__(
            f"no common migration protocol: source offers {src}, destination offers {dst}"
        )


class FlagNotHonoured(UsageError):
    def __init__(self, *, flag: str, driver: str, host: str, honoured: list[str]) -> None:
        self.flag = flag
        self.driver = driver
        super().__init__(
            f"flag {flag} is not honoured by the {driver} driver ({host}); it honours:"
            f" {', '.join(honoured) or 'no flag'}"
        )


class SettingNotHonoured(UsageError):
    def __init__(self, *, setting: str, driver: str, host: str, honoured: list[str]) -> None:
        self.setting = setting
        listed = ", ".join(honoured) or "none"
        super().__init__(
            f"policy setting {setting} is refused: the {driver} driver of {host} does not"
            f" honour it (it honours: {listed})"
        )


class PostcopyUnavailable(UsageError):
    def __init__(self) -> None:
        super().__init__("post-copy is not available for this migration")


class JournalError(MigratorError):
    """The journal cannot be used as it is."""


class JournalUnavailable(JournalError):
    def __init__(
        self, *, url: str, reason: str, transient: bool = False, outcome_unknown: bool = False
    ) -> None:
        self.transient = transient
        """A connection reset, a server restarting, a busy database: worth retrying."""
        self.outcome_unknown = outcome_unknown
        """The commit itself failed: whether the write happened must be read back."""
        super().__init__(f"journal {url} unavailable: {reason}")


class JournalReplaced(JournalUnavailable):
    def __init__(self, *, url: str, detail: str) -> None:
        super().__init__(
            url=url,
            reason=f"it is not the database this journal opened ({detail}); nothing more is"
            " written to it",
        )


class SchemaOutOfDate(JournalError):
    def __init__(self, *, url: str, found: str | None, expected: str, newer: bool = False) -> None:
        self.found = found
        self.expected = expected
        if newer:
            message = (
                f"journal {url} has schema revision {found}, newer than this migrator"
                f" knows (up to {expected}); upgrade migrator"
            )
        elif found is None:
            message = f"journal {url} has no migrator schema; run `migrator db upgrade`"
        else:
            message = (
                f"journal {url} is out of date (schema revision {found}, expected {expected});"
                " run `migrator db upgrade`"
            )
        super().__init__(message)


class FenceLost(JournalError):
    def __init__(self, *, migration_id: str, fence: int) -> None:
        self.migration_id, self.fence = migration_id, fence
        super().__init__(
            f"migration {migration_id} is no longer owned with fence {fence};"
            " another coordinator took it"
        )


class StateConflict(JournalError):
    """A conditional write found the migration in another state than it expected.

    Another writer moved it (the same fence, so the same owner: two threads of one
    coordinator, say); nothing was written.
    """

    def __init__(self, *, migration_id: str, expected: str, found: str, wanted: str) -> None:
        self.migration_id = migration_id
        self.expected, self.found, self.wanted = expected, found, wanted
        super().__init__(
            f"migration {migration_id} is {found}, not {expected}: its move to {wanted}"
            " lost to another write"
        )


class AbortRequested(JournalError):
    """A write made on condition that no abort was requested found one; nothing of it was
    written (``Journal.record_changes(..., unless_aborted=True)``). The engine acts on it:
    it never reaches a caller."""

    def __init__(self, *, migration_id: str) -> None:
        self.migration_id = migration_id
        super().__init__(f"migration {migration_id}: an abort was requested")


class CoordinatorCrashed(MigratorError):
    """Journaled by recovery as the outcome of a step whose coordinator died mid-call."""

    def __init__(self, *, step: str, detail: str) -> None:
        super().__init__(
            f"recovery took over {step} from a coordinator that died or lost its lease; {detail}"
        )


class IllegalTransition(MigratorError):
    def __init__(self, *, state: str, trigger: str) -> None:
        self.state = state
        self.trigger = trigger
        super().__init__(f"trigger {trigger!r} is not allowed in state {state}")


class HookCommandFailed(MigratorError):
    """A ``--hook-command`` exited non-zero, timed out or could not start."""


class DriverError(MigratorError):
    """A driver hook failed. Drivers raise it (or anything) and the coordinator journals it."""


class HostUnreachable(DriverError):
    """The host cannot be reached now (refused, lost, silent): asking again later may
    succeed, so a probe asks again within its patience (``Steps.probe``)."""


class PolicyAborted(DriverError):
    def __init__(self, *, why: str, detail: str) -> None:
        self.why = why
        super().__init__(f"the convergence policy aborted Perform ({why}): {detail}")


class StepTimeout(DriverError):
    def __init__(self, *, step: str, seconds: float) -> None:
        super().__init__(f"{step} did not return within {seconds:g} s")


class DriverTextTooLarge(DriverError):
    def __init__(self, *, step: str, what: str, size: int, limit: int) -> None:
        super().__init__(f"{step} returned a {what} of {size} bytes; the limit is {limit}")


class StepAbandoned(DriverError):
    """A hook's call the engine stopped waiting for (its timeout, or the migration taken
    over) tried to act: hosts refuse it (``StepContext.stopped``)."""

    def __init__(self, *, step: str) -> None:
        super().__init__(f"{step} was abandoned by its coordinator: it may change nothing more")


class CookieTooLarge(DriverError):
    def __init__(self, *, step: str, size: int, limit: int) -> None:
        super().__init__(f"{step} returned a cookie of {size} bytes; the limit is {limit}")


class HostStateInvalid(DriverError, UsageError):
    """A host's state file (``host.json``, a test host's domain file) is not what migrator
    writes: not a regular file, too large, not JSON, or of the wrong shape. Bad input, as a
    hand-edited file is: pre-flight refuses it before anything is journaled."""

    def __init__(self, *, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path} is not a host state: {reason}")


class QMPUnreachable(DriverError):
    """The QMP socket of a QEMU domain does not answer (no process, or one that hangs)."""


class PostcopyLost(DriverError):
    """A post-copy migration cannot be resumed: the destination's copy (or the source's
    pages) is gone. Recovery ends the migration IN_DOUBT with this text."""

    def __init__(self, *, domain: str, host: str, detail: str) -> None:
        self.domain = domain
        super().__init__(f"post-copy of {domain!r} cannot resume on {host}: {detail}")


class HandedOver(MigratorError):
    """A stopping worker stopped driving a migration at a step boundary (docs/workers.md).

    Raised before a step's intent is committed, so the journal holds no intent without its
    step; the worker then gives the migration back (to the queue, or its lease to others).
    """

    def __init__(self, *, migration_id: str, state: str) -> None:
        self.migration_id = migration_id
        super().__init__(f"migration {migration_id} handed over in {state}")
