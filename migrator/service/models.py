"""The bodies of the API's requests and responses, as pydantic models: the OpenAPI
document (``docs/openapi.json``) is generated from them. Requests refuse unknown fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from migrator import limits
from migrator.states import State

_STRICT = ConfigDict(extra="forbid")


class MigrationRequest(BaseModel):
    """A migration to queue, as ``migrator submit`` takes it."""

    model_config = _STRICT

    domain: str = Field(min_length=1, max_length=limits.MAX_NAME_CHARS)
    src: str = Field(min_length=1, max_length=limits.MAX_URI_CHARS, description="Source host URI.")
    dst: str = Field(
        min_length=1, max_length=limits.MAX_URI_CHARS, description="Destination host URI."
    )
    live: bool = False
    tunnelled: bool = False
    flags: list[str] = Field(
        default=[], max_length=32, description="Flag names, e.g. persist-dest."
    )
    bandwidth: int = Field(default=0, ge=0, le=2**31 - 1, description="MiB/s; 0: no cap.")
    dname: str | None = Field(default=None, min_length=1, max_length=limits.MAX_NAME_CHARS)
    protocol: int | None = Field(default=None, ge=1, le=3)


class ResolveRequest(BaseModel):
    """Where the domain of an IN_DOUBT migration really runs, as an operator established."""

    model_config = _STRICT

    running_on: Literal["src", "dst"]


class DowntimeRequest(BaseModel):
    """The downtime to allow a migration in Perform (as ``migrator set-downtime``)."""

    model_config = _STRICT

    ms: int = Field(ge=1, le=3_600_000, description="Milliseconds.")


class SpeedRequest(BaseModel):
    """The bandwidth to send a migration in Perform or post-copy at (as ``migrator
    set-speed``)."""

    model_config = _STRICT

    mib: int = Field(ge=1, le=1_048_576, description="MiB/s.")


class RuntimeRequest(BaseModel):
    """A journaled runtime request, as ``set-downtime --json`` prints it: applied by
    whoever drives the migration, stamped ``applied_at`` with its ``outcome``."""

    id: int
    migration_id: str
    kind: Literal["downtime", "speed", "postcopy"]
    value: int | None
    requested_at: str
    applied_at: str | None
    outcome: str | None


class Migration(BaseModel):
    """A migration's summary, as ``migrator list --json`` gives it."""

    id: str
    domain: str
    dname: str | None
    src: str
    dst: str
    protocol: int
    flags: int
    flag_names: list[str]
    bandwidth: int
    state: State
    reason: str | None
    owner: str | None
    fence: int
    created_at: str
    updated_at: str
    finished_at: str | None
    duration: float
    progress: dict[str, Any] | None


class Owner(BaseModel):
    owner: str
    seq: int
    at: str | None


class MigrationDetail(Migration):
    """A migration with its owners, the time each of its steps began and its statistics."""

    owners: list[Owner]
    phases: dict[str, str]
    stats: dict[str, Any]


class MigrationPage(BaseModel):
    """A page of migrations, newest first; ``next_cursor`` fetches the next one."""

    items: list[Migration]
    next_cursor: str | None


class EventError(BaseModel):
    type: str | None
    message: str | None


class Event(BaseModel):
    """One journal event of a migration, as ``migrator show --json`` gives it."""

    seq: int
    step: str | None
    kind: str
    state: State
    at: str | None
    cancelled: bool | None
    cookie_in: str | None
    cookie_out: str | None
    uri: str | None
    description: str | None
    error: EventError | None
    detail: dict[str, Any] | None
    coordinator: str | None
    attempt: int
    duration: float | None


class Timeline(BaseModel):
    """A migration and every event of it (``migrator show --json``)."""

    migration: MigrationDetail
    events: list[Event]


class WorkerInfo(BaseModel):
    id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: str | None
    heartbeat_at: str | None
    stopping: bool
    state: str
    holds: list[str]


class StepStats(BaseModel):
    count: int
    errors: int
    p50: float
    p95: float
    max: float


class ReasonCount(BaseModel):
    reason: str
    count: int


class Stats(BaseModel):
    """Counts by state, step durations and the top failure reasons (``migrator stats``)."""

    since: str | None
    total: int
    outcomes: dict[str, int]
    in_flight: int
    steps: dict[str, StepStats]
    top_reasons: list[ReasonCount]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ok"]
    revision: str | None


class Problem(BaseModel):
    """An error (RFC 9457, ``application/problem+json``); ``detail`` is the one-line
    message the command line prints."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
