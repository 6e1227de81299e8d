"""``migrator.bounded``: files read with a size cap, regular files only, JSON of bounded
nesting; every refusal a ``FileRefused`` naming why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrator import bounded


def test_a_regular_file_within_its_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('{"a": [1, 2]}')
    assert bounded.read_json(path, max_bytes=13) == {"a": [1, 2]}


def test_a_file_over_its_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("x" * 14)
    with pytest.raises(bounded.FileRefused, match="larger than 13 bytes"):
        bounded.read_text(path, max_bytes=13)


def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(bounded.FileRefused, match=r"not a regular file \(a FIFO\)"):
        bounded.read_text(fifo, max_bytes=100)


@pytest.mark.parametrize(
    ("target", "kind"), [("/dev/zero", "a character device"), ("/", "a directory")]
)
def test_a_link_to_a_device_or_a_directory_is_refused(
    tmp_path: Path, target: str, kind: str
) -> None:
    link = tmp_path / "host.json"
    link.symlink_to(target)
    with pytest.raises(bounded.FileRefused, match=rf"not a regular file \({kind}\)"):
        bounded.read_text(link, max_bytes=1 << 30)


def test_a_missing_file_is_the_os_error_of_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        bounded.read_text(tmp_path / "absent", max_bytes=10)


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(bounded.FileRefused, match=r"not UTF-8 text \(byte 7\)"):
        bounded.read_text(path, max_bytes=100)


def test_json_nested_too_deeply_is_refused_in_one_line() -> None:
    with pytest.raises(bounded.FileRefused, match=r"^JSON nested too deeply$"):
        bounded.loads("[" * 200_000 + "]" * 200_000)


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(bounded.FileRefused, match="not valid JSON"):
        bounded.loads("{")
