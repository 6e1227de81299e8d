# ruff: noqa: E501  # the catalogue quotes each message whole, on one line
"""What bad input and journal faults get from ``migrator``: the cases behind docs/errors.md.

``CASES`` is the source of truth: each case is a command line (with placeholders for the
paths of a scratch directory), the exit code, the exact line on stderr, and what is left.
``tests/cli/test_errors_catalogue.py`` runs every case against a seeded journal and two
test hosts; ``python -m tests.cli.errors_catalogue > docs/errors.md`` writes the page, and
a test checks that the page is what this module prints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

UNCHANGED = "nothing: the journal and both hosts are byte-for-byte as before"
LONG = "x" * 5000


@dataclass(frozen=True)
class Case:
    """One command line and what it gets.

    ``args`` and ``message`` may hold ``{db}``, ``{src}``, ``{dst}``, ``{tmp}``, ``{id}``
    and ``{long}``: the scratch journal's URL, the two hosts' URIs, the scratch directory,
    the seeded migration's id, 5,000 ``x``.
    """

    section: str
    args: tuple[str, ...]
    code: int
    message: str
    left: str = UNCHANGED
    setup: str = ""
    """A named preparation (``tests/cli/test_errors_catalogue.py``), if any."""


def _c(section: str, args: str | tuple[str, ...], code: int, message: str, **kw: str) -> Case:
    argv = tuple(args.split(" ")) if isinstance(args, str) else args
    return Case(section, argv, code, message, **kw)


CASES: list[Case] = [
    # -- migrate ---------------------------------------------------------------
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout 0', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not 0.0 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout -5', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not -5.0 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout nan', 2,
       "migrator: error: --timeout 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout inf', 2,
       "migrator: error: --timeout 'inf' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout 1e400', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not inf (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout 10000000', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not 10000000.0 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout ١٢', 2,
       "migrator: error: --timeout '١٢' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --timeout soon', 2,
       "migrator: error: --timeout 'soon' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --bandwidth -5', 2,
       'migrator: error: --bandwidth must be >= 0, not -5 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --bandwidth 2147483648', 2,
       'migrator: error: --bandwidth must be <= 2147483647, not 2147483648 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --bandwidth 99999999999999999999999999999999', 2,
       "migrator: error: --bandwidth '99999999999999999999999999999999'... is out of range (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --bandwidth ５', 2,
       "migrator: error: --bandwidth '５' is not a whole number (ASCII digits) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --bandwidth 1.5', 2,
       "migrator: error: --bandwidth '1.5' is not a whole number (ASCII digits) (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --protocol 4', 2,
       'migrator: error: --protocol must be <= 3, not 4 (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src test://[::1 --dst {dst}', 2,
       "migrator: error: invalid host URI 'test://[::1': Invalid IPv6 URL"),
    _c('migrate', 'migrate vm1 --src ftp:///srv/a --dst {dst}', 2,
       "migrator: error: invalid host URI 'ftp:///srv/a': unknown scheme 'ftp'; known schemes:"
       " null, qemu, qemu+ssh, qemu+tcp, qemu+tls, qemu+unix, qmp, test"),
    _c('migrate', 'migrate vm1 --src {src} --dst test://relative/x', 2,
       "migrator: error: invalid host URI 'test://relative/x': test host path must be absolute: test:///ABS/DIR, not test://relative/x"),
    _c('migrate', 'migrate vm1 --src {src} --dst test://{tmp}/{long}', 2,
       'migrator: error: --dst is longer than 2048 characters (see `migrator migrate --help`)'),
    _c('migrate', 'migrate vm1 --src {src} --dst {src}/', 2,
       'migrator: error: source and destination are the same host: {src}'),
    _c('migrate', 'migrate vm1 --src {src} --dst test://{tmp}//host-a/./', 2,
       'migrator: error: source and destination are the same host: {src}'),
    _c('migrate', 'migrate ghost --src {src} --dst {dst}', 2,
       "migrator: error: domain 'ghost' not found on {src}"),
    _c('migrate', 'migrate ghost --src test://{tmp}/new-host --dst {dst}', 2,
       "migrator: error: domain 'ghost' not found on test://{tmp}/new-host"),
    _c('migrate', ('migrate', '', '--src', '{src}', '--dst', '{dst}'), 2,
       "migrator: error: DOMAIN must be non-empty text, not '' (see `migrator migrate --help`)"),
    _c('migrate', 'migrate {long} --src {src} --dst {dst}', 2,
       'migrator: error: DOMAIN is longer than 255 characters (see `migrator migrate --help`)'),
    _c('migrate', ('migrate', 'vm\udcff', '--src', '{src}', '--dst', '{dst}'), 2,
       "migrator: error: argument 'vm\\udcff' is not valid UTF-8"),
    _c('migrate', ('migrate', 'vm1', '--src', '{src}', '--dst', '{dst}', '--dname', ''), 2,
       "migrator: error: --dname must be non-empty text, not '' (see `migrator migrate --help`)"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --flag bogus', 2,
       "migrator: error: --flag: unknown flag 'bogus'; valid flags: live, peer2peer, tunnelled, persist-dest, undefine-source, paused, non-shared-disk, non-shared-inc, change-protection, unsafe, offline, compressed, abort-on-error, auto-converge, rdma-pin-all, postcopy, tls, parallel, non-shared-synchronous-writes, postcopy-resume, zerocopy"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --frobnicate', 2,
       "migrator: error: No such option '--frobnicate'. (see `migrator migrate --help`)"),
    _c('migrate', ('migrate', 'vm1', '--src', '{src}', '--dst', '{dst}', '--hook-command', ''), 2,
       "migrator: error: --hook-command '': the hook command is empty"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst} --hook-command /nonexistent/notify', 2,
       "migrator: error: --hook-command '/nonexistent/notify': '/nonexistent/notify' not found"),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst}', 2,
       "migrator: error: domain 'vm1' already exists on {dst}", setup='vm1-on-dst'),
    _c('migrate', 'migrate vm1 --src {src} --dst test://{tmp}/list-host --timeout 5', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: not a regular file (a FIFO)', left='nothing: the journal and both hosts are byte-for-byte as before; the FIFO unread', setup='host-json-fifo'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst}', 2,
       "migrator: error: {tmp}/host-a/domains/vm1.7b11e3d1b4ef.json is not a host state: domain 'vm1': 'state' must be one of absent, incoming, paused, running, shutoff, not 5", setup='domain-state-5'),
    _c('migrate', 'migrate vm1 --src {src} --dst {dst}', 2,
       "migrator: error: {tmp}/host-a/host.json is not a host state: fault of 'begin': count, message, seconds missing", setup='fault-without-count'),
    _c('migrate', 'submit vm1 --src {src} --dst test://{tmp}/list-host', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: not a regular file (a FIFO)', left='nothing: the journal and both hosts are byte-for-byte as before; the FIFO unread', setup='host-json-fifo'),
    # -- list ------------------------------------------------------------------
    _c('list', 'list --limit 0', 2,
       'migrator: error: --limit must be >= 1, not 0 (see `migrator list --help`)'),
    _c('list', 'list --limit -1', 2,
       'migrator: error: --limit must be >= 1, not -1 (see `migrator list --help`)'),
    _c('list', 'list --limit 1e3', 2,
       "migrator: error: --limit '1e3' is not a whole number (ASCII digits) (see `migrator list --help`)"),
    _c('list', 'list --limit 99999999999999999999999', 2,
       'migrator: error: --limit must be <= 2147483647, not 99999999999999999999999 (see `migrator list --help`)'),
    _c('list', 'list --limit 5 --all', 2,
       'migrator: error: give --limit or --all, not both'),
    _c('list', 'list --since 99999999999d', 2,
       "migrator: error: --since '99999999999d': longer than a century"),
    _c('list', 'list --since ١٢d', 2,
       "migrator: error: --since '١٢d': expected an ISO time or an age like 30s, 2h, 3d"),
    _c('list', 'list --since 9999-99-99', 2,
       "migrator: error: --since '9999-99-99': expected an ISO time or an age like 30s, 2h, 3d"),
    _c('list', 'list --since 0001-01-01T00:00:00+05:00', 2,
       "migrator: error: --since '0001-01-01T00:00:00+05:00': expected an ISO time or an age like 30s, 2h, 3d"),
    _c('list', 'list --until yesterday', 2,
       "migrator: error: --until 'yesterday': expected an ISO time or an age like 30s, 2h, 3d"),
    _c('list', 'list --state HALFWAY', 2,
       "migrator: error: Invalid value for '--state': 'HALFWAY' is not one of 'queued', 'new', 'beginning', 'begun', 'preparing', 'prepared', 'prepare_failed', 'performing', 'performed', 'perform_failed', 'finishing', 'finished', 'finish_failed', 'confirming', 'confirmed', 'rolled_back', 'failed', 'lost', 'in_doubt', 'dumping', 'dumped', 'preparing2', 'prepared2', 'performing2', 'performed2', 'finishing2', 'preparing1', 'prepared1', 'performing1', 'performed1', 'finishing1', 'postcopy_switching', 'postcopy_active', 'postcopy_paused', 'postcopy_resuming'. (see `migrator list --help`)"),
    _c('list', ('list', '--domain', '\udcff'), 2,
       "migrator: error: argument '\\udcff' is not valid UTF-8"),
    # -- one migration ---------------------------------------------------------
    _c('one migration', ('show', ''), 2,
       "migrator: error: Invalid value for 'ID': '': expected a migration id or its first characters (see `migrator show --help`)"),
    _c('one migration', 'show zz', 2,
       "migrator: error: Invalid value for 'ID': 'zz': expected a migration id or its first characters (see `migrator show --help`)"),
    _c('one migration', 'show {long}', 2,
       "migrator: error: Invalid value for 'ID': 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': expected a migration id or its first characters (see `migrator show --help`)"),
    _c('one migration', 'show 00000000', 2,
       "migrator: error: no migration matches '00000000'"),
    _c('one migration', ('diagram', ''), 2,
       "migrator: error: Invalid value for '[ID]': '': expected a migration id or its first characters (see `migrator diagram --help`)"),
    _c('one migration', 'diagram --format gif', 2,
       "migrator: error: Invalid value for '--format': 'gif' is not one of 'mermaid', 'dot', 'svg', 'png'. (see `migrator diagram --help`)"),
    _c('one migration', 'export', 2,
       'migrator: error: give a migration ID or --all, not both'),
    _c('one migration', 'export {id} --all', 2,
       'migrator: error: give a migration ID or --all, not both'),
    _c('one migration', 'export {id} --state failed', 2,
       'migrator: error: --state and --since go with --all'),
    _c('one migration', 'export --all -o /nonexistent/dir/x.json', 2,
       'migrator: error: -o /nonexistent/dir/x.json: no such directory /nonexistent/dir'),
    _c('one migration', 'export --all -o /proc/x.json', 2,
       'migrator: error: -o /proc/x.json: cannot be created in /proc (No such file or directory)'),
    _c('one migration', ('diagram', '-o', ''), 2,
       "migrator: error: -o '.': expected a file name, not a directory"),
    _c('one migration', 'resolve {id} --running-on mars', 2,
       "migrator: error: Invalid value for '--running-on': 'mars' is not one of 'src', 'dst'. (see `migrator resolve --help`)"),
    _c('one migration', 'resolve {id} --running-on src', 2,
       'migrator: error: migration {id} is CONFIRMED, not IN_DOUBT'),
    _c('one migration', 'abort {id}', 2,
       'migrator: error: migration {id} is CONFIRMED: only a migration that has not finished Perform can be aborted'),
    _c('one migration', 'replay 00000000', 2,
       "migrator: error: no migration matches '00000000'"),
    _c('one migration', 'set-downtime {id} 500', 2,
       'migrator: error: migration {id} is CONFIRMED, not in Perform: a downtime request applies only while Perform (protocol v3) runs'),
    _c('one migration', 'set-speed {id} 0', 2,
       'migrator: error: MIB must be >= 1, not 0 (see `migrator set-speed --help`)'),
    _c('one migration', 'postcopy 00000000', 2,
       "migrator: error: no migration matches '00000000'"),
    # -- convergence policies --------------------------------------------------
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --stall-iterations 3 --on-stall postcopy', 2,
       'migrator: error: post-copy is not available for this migration'),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --protocol 2 --max-downtime 500', 2,
       'migrator: error: a convergence policy applies to Perform of protocol v3; this migration would use v2: migrate without the policy\'s settings'),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --parallel-connections 2 --flag postcopy', 2,
       'migrator: error: parallel connections are refused with post-copy: QEMU cannot switch a multifd migration to post-copy (the destination does not get the guest); migrate with one of them'),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --parallel-connections 2 --flag tunnelled', 2,
       "migrator: error: parallel connections are refused with tunnelled: a tunnelled migration goes over the daemons' one connection; migrate with one of them"),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --downtime-steps 3', 2,
       'migrator: error: options: downtime_steps needs max_downtime_ms: the ramp ends at it'),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --on-stall force', 2,
       "migrator: error: Invalid value for '--on-stall': 'force' is not one of 'abort', 'postcopy', 'pause'. (see `migrator migrate --help`)"),
    _c('convergence policies', 'migrate vm1 --src {src} --dst {dst} --policy-file /dev/zero', 2,
       'migrator: error: policy file /dev/zero: not a regular file (a character device)'),
    # -- prune, metrics --------------------------------------------------------
    _c('prune, metrics', 'prune --older-than -5d', 2,
       "migrator: error: --older-than '-5d': expected a duration like 30s, 2h, 3d"),
    _c('prune, metrics', 'prune --older-than ١d', 2,
       "migrator: error: --older-than '١d': expected a duration like 30s, 2h, 3d"),
    _c('prune, metrics', 'prune --older-than 999999999999d', 2,
       "migrator: error: --older-than '999999999999d': longer than a century"),
    _c('prune, metrics', 'prune --older-than 5x', 2,
       "migrator: error: --older-than '5x': expected a duration like 30s, 2h, 3d"),
    _c('prune, metrics', 'metrics --port 70000', 2,
       'migrator: error: --port must be <= 65535, not 70000 (see `migrator metrics --help`)'),
    _c('prune, metrics', 'metrics --port -1', 2,
       'migrator: error: --port must be >= 0, not -1 (see `migrator metrics --help`)'),
    # -- recover ---------------------------------------------------------------
    _c('recover', 'recover --timeout 0', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not 0.0 (see `migrator recover --help`)'),
    _c('recover', 'recover --timeout nan', 2,
       "migrator: error: --timeout 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator recover --help`)"),
    _c('recover', 'recover --timeout -1', 2,
       'migrator: error: --timeout must be more than 0 and at most 1e+06 s, not -1.0 (see `migrator recover --help`)'),
    _c('recover', 'recover --probe-patience -1', 2,
       'migrator: error: --probe-patience must be at least 0 and at most 1e+06 s, not -1.0 (see `migrator recover --help`)'),
    _c('recover', 'recover --host-map nothing', 2,
       "migrator: error: --host-map 'nothing': give OLD=NEW, two host URIs"),
    _c('recover', 'recover --host-map test:///nowhere/a=test:///nowhere/b', 2,
       'migrator: error: --host-map: no migration to recover was journaled with host test:///nowhere/a (give the URI as `migrator show` prints it)'),
    # -- test-host -------------------------------------------------------------
    _c('test-host', 'test-host define {src} vm9 --memory 0', 2,
       'migrator: error: --memory must be >= 1, not 0 (see `migrator test-host define --help`)'),
    _c('test-host', 'test-host define {src} vm9 --memory 999999', 2,
       'migrator: error: --memory must be <= 4096, not 999999 (see `migrator test-host define --help`)'),
    _c('test-host', ('test-host', 'define', '{src}', '\udcff'), 2,
       "migrator: error: argument '\\udcff' is not valid UTF-8"),
    _c('test-host', 'test-host fault {src} --step perform --mode slow --seconds nan', 2,
       "migrator: error: --seconds 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator test-host fault --help`)"),
    _c('test-host', 'test-host fault {src} --step perform --mode slow --seconds -1', 2,
       'migrator: error: --seconds must be more than 0 and at most 1e+06 s, not -1.0 (see `migrator test-host fault --help`)'),
    _c('test-host', 'test-host fault {src} --step perform --mode error --count 0', 2,
       'migrator: error: --count must be >= 1, not 0 (see `migrator test-host fault --help`)'),
    _c('test-host', 'test-host list test://{tmp}/list-host', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: a JSON object expected', left='host.json as it was', setup='host-json-list'),
    _c('test-host', 'test-host list test://{tmp}/journal.db/sub', 1,
       'migrator: error: {tmp}/journal.db/sub/host.json cannot be read: Not a directory', left='nothing'),
    _c('test-host', 'test-host list test://{tmp}/list-host', 2,
       "migrator: error: {tmp}/list-host/host.json is not a host state: 'domains' is not a map of JSON objects", left='host.json as it was', setup='host-json-domains-5'),
    _c('test-host', 'test-host list test://{tmp}/list-host', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: JSON nested too deeply', left='host.json as it was', setup='host-json-deep'),
    _c('test-host', 'test-host list test://{tmp}/list-host', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: not a regular file (a character device)', left='the symbolic link to /dev/zero, unread', setup='host-json-dev-zero'),
    _c('test-host', 'test-host list test://{tmp}/list-host', 2,
       'migrator: error: {tmp}/list-host/host.json is not a host state: not a regular file (a FIFO)', left='the FIFO, unread', setup='host-json-fifo'),
    _c('test-host', 'test-host list {src}', 2,
       "migrator: error: {tmp}/host-a/domains/vm1.7b11e3d1b4ef.json is not a host state: domain 'vm1': 'state' must be one of absent, incoming, paused, running, shutoff, not 5", setup='domain-state-5'),
    # -- worker ----------------------------------------------------------------
    _c('worker', 'worker --poll inf', 2,
       "migrator: error: --poll 'inf' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator worker --help`)"),
    _c('worker', 'worker --poll 0', 2,
       'migrator: error: --poll must be at least 0.01 and at most 1e+06 s, not 0.0 (see `migrator worker --help`)'),
    _c('worker', 'worker --lease nan', 2,
       "migrator: error: --lease 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator worker --help`)"),
    _c('worker', 'worker --lease inf', 2,
       "migrator: error: --lease 'inf' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator worker --help`)"),
    _c('worker', 'worker --lease 1e308', 2,
       'migrator: error: --lease must be at least 0.5 and at most 1e+06 s, not 1e+308 (see `migrator worker --help`)'),
    _c('worker', 'worker --lease 1e12', 2,
       'migrator: error: --lease must be at least 0.5 and at most 1e+06 s, not 1000000000000.0 (see `migrator worker --help`)'),
    _c('worker', 'worker --concurrency 0', 2,
       'migrator: error: --concurrency must be >= 1, not 0 (see `migrator worker --help`)'),
    _c('worker', 'worker --timeout nan', 2,
       "migrator: error: --timeout 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator worker --help`)"),
    _c('worker', 'worker --limits {tmp}/hosts-5.json', 2,
       'migrator: error: limits file {tmp}/hosts-5.json: hosts.x must be a table of keys, not 5', setup='limits-files'),
    _c('worker', 'worker --limits {tmp}/true.toml', 2,
       'migrator: error: limits file {tmp}/true.toml: max_outgoing must be a whole number >= 1, not True', setup='limits-files'),
    _c('worker', 'worker --limits {tmp}/unknown.toml', 2,
       'migrator: error: limits file {tmp}/unknown.toml: unknown key hosts.x.max_outgong (known: max_outgoing, max_incoming)', setup='limits-files'),
    _c('worker', 'worker --limits {tmp}/top.toml', 2,
       'migrator: error: limits file {tmp}/top.toml: unknown key max_ingoing (known: max_outgoing, max_incoming, hosts)', setup='limits-files'),
    _c('worker', 'worker --limits {tmp}/fifo.toml', 2,
       'migrator: error: limits file {tmp}/fifo.toml: not a regular file (a FIFO)', left='the FIFO, unread', setup='limits-files'),
    _c('worker', 'worker --limits {tmp}/zero.json', 2,
       'migrator: error: limits file {tmp}/zero.json: not a regular file (a character device)', left='the symbolic link to /dev/zero, unread', setup='limits-files'),
    _c('worker', 'worker --max-outgoing 3', 2,
       "migrator: error: this worker's limits differ from those of running worker w1: max_outgoing 3, not 1; give every worker the same limits",
       left='nothing: the worker claimed nothing and registered no row', setup='running-worker'),
    _c('worker', 'worker --limits {tmp}/host-override.toml --max-outgoing 1', 2,
       "migrator: error: this worker's limits differ from those of running worker w1: hosts.test:///big.max_outgoing 4, not 1; give every worker the same limits",
       left='nothing: the worker claimed nothing and registered no row', setup='running-worker'),
    # -- workers ---------------------------------------------------------------
    _c('workers', 'workers --within nan', 2,
       "migrator: error: --within 'nan' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator workers --help`)"),
    _c('workers', 'workers --within inf', 2,
       "migrator: error: --within 'inf' is not a number (ASCII digits, e.g. 30 or 2.5) (see `migrator workers --help`)"),
    _c('workers', 'workers --lease 0', 2,
       'migrator: error: --lease must be at least 0.5 and at most 1e+06 s, not 0.0 (see `migrator workers --help`)'),
    _c('workers', 'workers forget 0000', 2,
       "migrator: error: no worker '0000' in the journal"),
    # -- webhooks --------------------------------------------------------------
    _c('webhooks', 'webhooks run --config {tmp}/missing.json', 2,
       'migrator: error: webhook configuration {tmp}/missing.json: No such file or directory'),
    _c('webhooks', 'webhooks run --config {tmp}/fifo.json', 2,
       'migrator: error: webhook configuration {tmp}/fifo.json: not a regular file (a FIFO)', left='the FIFO, unread', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/bad.toml', 2,
       "migrator: error: webhook configuration {tmp}/bad.toml: not valid TOML: Expected '=' after a key in a key/value pair (at line 1, column 5)", setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/no-secret.json', 2,
       'migrator: error: webhook configuration {tmp}/no-secret.json: endpoint 1: give one of secret and secret_file', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/ftp.toml', 2,
       'migrator: error: webhook configuration {tmp}/ftp.toml: endpoint 1: url must be http:// or https:// with a host', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/password.json', 2,
       'migrator: error: webhook configuration {tmp}/password.json: endpoint 1: url is not a URL: <unparseable URL>', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/unknown.json', 2,
       "migrator: error: webhook configuration {tmp}/unknown.json: endpoint 1: unknown key 'retries'", setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/kinds.json', 2,
       'migrator: error: webhook configuration {tmp}/kinds.json: endpoint 1: kinds must be a list of event kinds (intent, ok, error, recovery, resolve, abort, in_doubt, decided, queue, tuned, stalled, over_budget, action, request)', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/twice.json', 2,
       "migrator: error: webhook configuration {tmp}/twice.json: endpoint name 'ops' is used twice", setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/zero-secret.json', 2,
       'migrator: error: webhook configuration {tmp}/zero-secret.json: endpoint 1: secret_file /dev/zero: not a regular file (a character device)', setup='webhook-files'),
    _c('webhooks', 'webhooks run --config {tmp}/no-secret.json --poll 0', 2,
       'migrator: error: --poll must be at least 0.01 and at most 1e+06 s, not 0.0 (see `migrator webhooks run --help`)'),
    # -- qmp-host --------------------------------------------------------------
    _c('qmp-host', 'qmp-host set-downtime qmp:///srv/q vm1 0', 2,
       'migrator: error: MILLISECONDS must be >= 1, not 0 (see `migrator qmp-host set-downtime --help`)'),
    _c('qmp-host', 'qmp-host define qmp:///srv/q vm1 --memory 8', 2,
       'migrator: error: --memory must be >= 16, not 8 (see `migrator qmp-host define --help`)'),
    # -- journal ---------------------------------------------------------------
    _c('journal', '--db sqlite:// list', 2,
       'migrator: error: journal sqlite:// unavailable: an in-memory SQLite journal keeps nothing: give a file, sqlite:///PATH'),
    _c('journal', '--db sqlite:///:memory: list', 2,
       'migrator: error: journal sqlite:///:memory: unavailable: an in-memory SQLite journal keeps nothing: give a file, sqlite:///PATH'),
    _c('journal', '--db sqlite:///{tmp}/journal.db?mode=ro list', 2,
       'migrator: error: journal {db}?mode=ro unavailable: a SQLite journal URL takes no options (got mode)'),
    _c('journal', '--db postgresql+psycopg://u@db.invalid:abc/x list', 2,
       "migrator: error: journal postgresql+psycopg://u@db.invalid:abc/x unavailable: not a database URL (invalid literal for int() with base 10: 'abc')"),
    _c('journal', '--db postgresql+psycopg://u@db.invalid:99999/x list', 2,
       'migrator: error: journal postgresql+psycopg://u@db.invalid:99999/x unavailable: port 99999 is out of range'),
    _c('journal', '--db not-a-url list', 2,
       'migrator: error: journal not-a-url unavailable: not a database URL (Could not parse SQLAlchemy URL from given URL string)'),
    _c('journal', '--db sqlite:///{tmp}/other.db list', 2,
       "migrator: error: journal sqlite:///{tmp}/other.db unavailable: not a migrator journal: it holds another program's tables (notes)", left="the other program's file, unchanged", setup='foreign-sqlite'),
    _c('journal', '--db sqlite:///{tmp}/garbage.db list', 2,
       'migrator: error: journal sqlite:///{tmp}/garbage.db unavailable: file is not a database', left='the file, unchanged', setup='garbage-file'),
    _c('journal', 'list', 2,
       'migrator: error: journal {db} has schema revision 9999, newer than this migrator knows (up to {head}); upgrade migrator', setup='newer-schema'),
    _c('journal', '--db sqlite:///{tmp}/nothing.db show 0123abcd', 2,
       'migrator: error: no journal at {tmp}/nothing.db: nothing was journaled there (--db or MIGRATOR_DB names the journal; a migration or `migrator db upgrade` creates it)'),
    _c('journal', ('--db', 'sqlite:///\udcff.db', 'list'), 2,
       "migrator: error: argument 'sqlite:///\\udcff.db' is not valid UTF-8"),
    _c('journal', 'list', 2,
       'migrator: error: journal {db} unavailable: its alembic_version table holds several revisions (0003, {head}): a journal has one; delete the rows that are not the revision its tables match', setup='two-stamps'),
    _c('journal', 'db upgrade', 2,
       'migrator: error: journal {db} unavailable: its alembic_version table holds several revisions (0003, {head}): a journal has one; delete the rows that are not the revision its tables match', setup='two-stamps'),
    _c('journal', 'db current', 2,
       "migrator: error: journal {db} unavailable: its alembic_version table is empty but it holds migrator's tables: the schema revision is unknown; insert the revision its tables match (this migrator's is {head}) into alembic_version", setup='empty-stamp-old-tables'),
    # -- general ---------------------------------------------------------------
    _c('general', 'frobnicate', 2,
       "migrator: error: No such command 'frobnicate'. (see `migrator --help`)"),
]  # fmt: skip


PLACEHOLDERS = {
    "{db}": "sqlite:////srv/journal.db",
    "{src}": "test:///srv/host-a",
    "{dst}": "test:///srv/host-b",
    "{tmp}": "/srv",
    "{id}": "5a9e1c4e-0000-4000-8000-000000000000",
    "{long}": "xxx...(5,000 x)",
    "{head}": "HEAD",
}


def shown(text: str) -> str:
    """``text`` with placeholders as the page shows them, escaped for a Markdown table."""
    for key, value in PLACEHOLDERS.items():
        text = text.replace(key, value)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text.replace("|", "\\|").replace("`", "'")


def command_line(case: Case) -> str:
    return " ".join(["migrator", *(repr(a) if not a or " " in a else a for a in case.args)])


def markdown() -> str:
    """docs/errors.md: every case, by section."""
    parts = [
        "# Errors: what bad input and faults get\n",
        "Generated from `tests/cli/errors_catalogue.py` (`python -m tests.cli.errors_catalogue"
        " > docs/errors.md`); `tests/cli/test_errors_catalogue.py` runs every case against"
        " a journal holding one confirmed migration and two test hosts, checks the exit code"
        " and the exact line on stderr, and, for exit 2, that the journal and the hosts are"
        " byte-for-byte unchanged. `/srv` stands for the scratch directory. Journal faults"
        " (disk full, a locked journal, a database restart, a journal replaced under a"
        " running migration) are in [Journal faults](#journal-faults) below.\n",
        f"{len(CASES)} cases; exit codes as in [Command line](cli.md#exit-codes).\n",
    ]
    section = ""
    for case in CASES:
        if case.section != section:
            section = case.section
            parts.append(f"\n## {section}\n\n| input | exit | message | left |\n|---|---|---|---|")
        parts.append(
            f"| `{shown(command_line(case))}` | {case.code} | {shown(case.message)} |"
            f" {shown(case.left)} |"
        )
    parts.append("\n" + FAULTS)
    parts.append(FUZZING)
    return "\n".join(parts) + "\n"


FAULTS = """## Journal faults

| fault | what `migrator` does | test |
|---|---|---|
| The SQLite journal is deleted or replaced while a migration runs | the next write stops the migration: `journal ... unavailable: the journal was replaced or deleted since it was opened`, naming the migration left behind and `migrator recover`; exit 1 | `tests/journal/test_faults.py` |
| The disk fills up (SQLite page limit) at any step | `journal ... unavailable: database or disk is full; migration ID left in STATE; `migrator recover` brings it to a safe end`; exit 1; `recover` then finishes it | `tests/journal/test_faults.py` |
| Another process holds the SQLite journal locked | writes wait at most the busy timeout (10 s), then one line: `database is locked`; exit 2 when nothing was written (`migrate`: `no migration was started`), 1 when a migration was left behind (named, with `migrator recover`); `recover` stops once, every row saying why | `tests/journal/test_faults.py` |
| PostgreSQL restarts (connections cut and refused for up to 5 s) | writes are retried within a bounded time; a commit whose outcome is unknown is read back, never repeated blindly; the migration ends `CONFIRMED`, exit 0 | `tests/journal/test_faults.py` |
"""


FUZZING = """## Fuzzing

`tests/cli/test_fuzz.py` draws command lines over every command and option (Hypothesis):
arbitrary text, numbers (huge, negative, `nan`, infinite, non-ASCII digits), ids, URIs,
journal URLs, output files and hook commands, in any order, with stray arguments. Every
one must exit with a documented code (0, 1, 2 or 3), print no traceback and no
`unexpected` error, and after exit 2 print one line and leave the journal and the hosts
byte-for-byte unchanged. `worker` runs as a real process: one refused must exit by
itself, one that starts (its `worker ID started` line) is stopped with SIGTERM and must exit
0; its `--limits` draws valid, invalid and device files. `metrics` (serves until stopped),
`qmp-host define` (starts QEMU) and `demo` (writes up to 4 GiB) are left out; their options
are cases above.

| run | command | examples | time (2 cores) |
|---|---|---|---|
| CI (every `pytest`) | `pytest tests/cli/test_fuzz.py` | 120 | 7 to 16 s |
| long | `HYPOTHESIS_PROFILE=long pytest tests/cli/test_fuzz.py -p no:cacheprovider` | 5,000 | 4.5 min |

The last long run (`--hypothesis-show-statistics`): 5,000 passing, 0 failing (and 2,421
draws discarded as invalid), 0 to 85 ms per command line, 267 s in all.

What the long runs found, each now a case above: `-o ''` (an output file with no name)
wrote a temporary file into the working directory and failed with an unexpected error;
a command refused for an unknown domain created the (missing) host's directory.
"""


if __name__ == "__main__":
    sys.stdout.write(markdown())
