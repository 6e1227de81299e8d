"""Per-host limits: defaults, overrides, and their file (docs/workers.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from migrator.errors import UsageError
from migrator.hostlimits import HostLimit, HostLimits


def test_overrides_win_over_defaults_and_none_means_no_limit() -> None:
    limits = HostLimits(max_outgoing=2, hosts={"h": HostLimit(max_outgoing=5)})
    assert (limits.outgoing("h"), limits.outgoing("x"), limits.incoming("h")) == (5, 2, None)


def test_admits_counts_each_direction_against_its_own_host() -> None:
    limits = HostLimits(max_outgoing=1, max_incoming=2)
    assert limits.admits("a", "b", {}, {"b": 1})
    assert not limits.admits("a", "b", {"a": 1}, {})
    assert not limits.admits("a", "b", {}, {"b": 2})


def test_the_file_is_toml_or_json(tmp_path: Path) -> None:
    toml = tmp_path / "limits.toml"
    toml.write_text('max_outgoing = 2\n[hosts."test:///big"]\nmax_incoming = 4\n')
    json = tmp_path / "limits.json"
    json.write_text('{"max_incoming": 1, "hosts": {"h": {"max_outgoing": 3}}}')
    assert HostLimits.load(toml) == HostLimits(2, None, {"test:///big": HostLimit(None, 4)})
    assert HostLimits.load(json) == HostLimits(None, 1, {"h": HostLimit(3, None)})


@pytest.mark.parametrize(
    "text", ["max_outgoing = 0", "max_outgoing = 'two'", "colour = 1", "max_incoming = ["]
)
def test_a_bad_file_is_a_usage_error_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match="limits"):
        HostLimits.load(path)


def test_options_replace_the_file_defaults() -> None:
    limits = HostLimits(max_outgoing=2, max_incoming=2).with_defaults(
        max_outgoing=None, max_incoming=5
    )
    assert (limits.max_outgoing, limits.max_incoming) == (2, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_outgoing = true\n", "max_outgoing must be a whole number >= 1, not True"),
        ("max_incoming = 1.5\n", "max_incoming must be a whole number >= 1, not 1.5"),
        ("max_ingoing = 2\n", "unknown key max_ingoing (known: max_outgoing, max_incoming, hosts)"),
        ('[hosts."a"]\nmax_outgong = 1\n', "unknown key hosts.a.max_outgong"),
        ('[hosts."a"]\nmax_incoming = false\n', "hosts.a.max_incoming must be a whole number"),
        ("hosts = 5\n", "hosts must be a table of keys, not 5"),
        ("hosts = {a = 5}\n", "hosts.a must be a table of keys, not 5"),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ],
)
def test_a_limits_file_is_validated_strictly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        HostLimits.load(path)


def test_a_json_limits_file_with_a_host_that_is_a_number_is_named(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text('{"hosts": {"x": 5}}')
    with pytest.raises(UsageError, match=r"hosts\.x must be a table of keys, not 5"):
        HostLimits.load(path)


def test_a_limits_file_that_is_a_fifo_or_a_device_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # no writer: a plain read would wait for ever
    with pytest.raises(UsageError, match=r"not a regular file \(a FIFO\)"):
        HostLimits.load(fifo)
    with pytest.raises(UsageError, match=r"not a regular file \(a character device\)"):
        HostLimits.load(Path("/dev/zero"))
