"""Numbers of libvirt's RPC, as ``src/remote/remote_protocol.x`` and ``virterror.h`` fix them.

Only what the driver uses; every value is part of libvirt's stable wire ABI.
"""

from __future__ import annotations

import enum

PROGRAM = 0x20008086
"""REMOTE_PROGRAM: the remote driver's procedures."""
PROTOCOL_VERSION = 1
KEEPALIVE_PROGRAM = 0x6B656570
"""KEEPALIVE_PROGRAM ("keep"): PING and PONG messages between calls."""
KEEPALIVE_VERSION = 1
MESSAGE_MAX = 32 * 1024 * 1024
"""VIR_NET_MESSAGE_MAX: no frame may be longer."""
MIGRATE_COOKIE_MAX = 4 * 1024 * 1024
TYPED_PARAMS_MAX = 64
STRING_MAX = 4 * 1024 * 1024


class Proc(enum.IntEnum):
    CONNECT_OPEN = 1
    CONNECT_CLOSE = 2
    CONNECT_GET_VERSION = 4
    CONNECT_GET_CAPABILITIES = 7
    DOMAIN_DESTROY = 12
    DOMAIN_GET_XML_DESC = 14
    DOMAIN_LOOKUP_BY_NAME = 23
    DOMAIN_LOOKUP_BY_UUID = 24
    DOMAIN_RESUME = 28
    DOMAIN_SUSPEND = 34
    CONNECT_GET_HOSTNAME = 59
    CONNECT_SUPPORTS_FEATURE = 60
    AUTH_LIST = 66
    DOMAIN_IS_PERSISTENT = 151
    CONNECT_GET_LIB_VERSION = 157
    DOMAIN_GET_JOB_INFO = 163
    DOMAIN_ABORT_JOB = 164
    DOMAIN_MIGRATE_SET_MAX_DOWNTIME = 166
    DOMAIN_MIGRATE_SET_MAX_SPEED = 207
    DOMAIN_GET_STATE = 212
    DOMAIN_UNDEFINE_FLAGS = 231
    DOMAIN_GET_JOB_STATS = 298
    DOMAIN_MIGRATE_BEGIN3_PARAMS = 302
    DOMAIN_MIGRATE_PREPARE3_PARAMS = 303
    DOMAIN_MIGRATE_PERFORM3_PARAMS = 305
    DOMAIN_MIGRATE_FINISH3_PARAMS = 306
    DOMAIN_MIGRATE_CONFIRM3_PARAMS = 307
    DOMAIN_MIGRATE_START_POST_COPY = 364
    DOMAIN_ABORT_JOB_FLAGS = 442


class KeepAlive(enum.IntEnum):
    PING = 1
    PONG = 2


class MessageType(enum.IntEnum):
    CALL = 0
    REPLY = 1
    MESSAGE = 2
    STREAM = 3
    CALL_WITH_FDS = 4
    REPLY_WITH_FDS = 5
    STREAM_HOLE = 6


class Status(enum.IntEnum):
    OK = 0
    ERROR = 1
    CONTINUE = 2


class AuthType(enum.IntEnum):
    NONE = 0
    SASL = 1
    POLKIT = 2


class DrvFeature(enum.IntEnum):
    """virDrvFeature: what CONNECT_SUPPORTS_FEATURE answers about."""

    MIGRATION_V2 = 3
    MIGRATION_V3 = 6
    MIGRATE_CHANGE_PROTECTION = 7
    PROGRAM_KEEPALIVE = 10
    """Asked before CONNECT_OPEN: the daemon then pings the client (``keepalive.py``)."""
    MIGRATION_PARAMS = 13


class ParamType(enum.IntEnum):
    """virTypedParameterType."""

    INT = 1
    UINT = 2
    LLONG = 3
    ULLONG = 4
    DOUBLE = 5
    BOOLEAN = 6
    STRING = 7


class DomainStateCode(enum.IntEnum):
    """virDomainState."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class RunningReason(enum.IntEnum):
    """virDomainRunningReason (the reason of a RUNNING state)."""

    UNKNOWN = 0
    BOOTED = 1
    MIGRATED = 2
    RESTORED = 3
    FROM_SNAPSHOT = 4
    UNPAUSED = 5
    MIGRATION_CANCELED = 6
    SAVE_CANCELED = 7
    WAKEUP = 8
    CRASHED = 9
    POSTCOPY = 10
    POSTCOPY_FAILED = 11


class PausedReason(enum.IntEnum):
    """virDomainPausedReason (the reason of a PAUSED state)."""

    UNKNOWN = 0
    USER = 1
    MIGRATION = 2
    SAVE = 3
    DUMP = 4
    IOERROR = 5
    WATCHDOG = 6
    FROM_SNAPSHOT = 7
    SHUTTING_DOWN = 8
    SNAPSHOT = 9
    CRASHED = 10
    STARTING_UP = 11
    POSTCOPY = 12
    POSTCOPY_FAILED = 13
    API_ERROR = 14


class JobType(enum.IntEnum):
    """virDomainJobType."""

    NONE = 0
    BOUNDED = 1
    UNBOUNDED = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5


class JobOperation(enum.IntEnum):
    """virDomainJobOperation, the job statistics' ``operation``: what the job is doing."""

    UNKNOWN = 0
    START = 1
    SAVE = 2
    RESTORE = 3
    MIGRATION_IN = 4
    MIGRATION_OUT = 5


class ErrorCode(enum.IntEnum):
    """The virErrorNumber values the driver acts on."""

    NO_DOMAIN = 42
    OPERATION_INVALID = 55
    OPERATION_ABORTED = 78
    OPERATION_UNSUPPORTED = 84
    MIGRATE_FINISH_OK = 93


ABORT_JOB_POSTCOPY = 1
"""VIR_DOMAIN_ABORT_JOB_POSTCOPY: pause a post-copy migration (QEMU's ``migrate-pause``)
instead of cancelling it (libvirt >= 8.5)."""
POSTCOPY_RESUME_VERSION = 8_005_000
"""libvirt 8.5.0: the first to resume a failed post-copy (VIR_MIGRATE_POSTCOPY_RESUME)."""

JOB_STATS_COMPLETED = 1
"""VIR_DOMAIN_JOB_STATS_COMPLETED: the statistics of the job that just ended."""


class MigrateParam(enum.StrEnum):
    """VIR_MIGRATE_PARAM_*: the typed parameters of the ``*_PARAMS`` migration steps."""

    URI = "migrate_uri"
    DEST_NAME = "destination_name"
    DEST_XML = "destination_xml"
    BANDWIDTH = "bandwidth"
    BANDWIDTH_POSTCOPY = "bandwidth.postcopy"
    PARALLEL_CONNECTIONS = "parallel.connections"
