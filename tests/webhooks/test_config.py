"""The webhook configuration: TOML or JSON, secrets from files, kinds, names; a secret or
a password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import UsageError
from migrator.records import EventKind
from migrator.webhooks import load


def test_a_toml_file_gives_its_endpoints_with_secrets_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "ops.secret").write_text("  from-a-file\n")
    config = tmp_path / "webhooks.toml"
    config.write_text(
        '[[endpoints]]\nname = "ops"\nurl = "https://h.example/a"\nsecret_file = "ops.secret"\n'
        'kinds = ["ok", "error"]\n\n'
        '[[endpoints]]\nurl = "http://bob:pw@h.example:8080/b"\nsecret = "inline"\nfrom = "start"\n'
    )
    ops, other = load(config)
    assert (ops.name, ops.secret, ops.start) == ("ops", b"from-a-file", "now")
    assert ops.kinds == {EventKind.OK, EventKind.ERROR}
    assert ops.wants(EventKind.OK) and not ops.wants(EventKind.INTENT)
    assert other.secret == b"inline" and other.start == "start" and other.kinds is None
    assert other.name.startswith("url-") and other.name == load(config)[1].name  # stable
    assert "pw" not in repr(other) and "inline" not in repr(other)


def test_json_is_read_the_same(tmp_path: Path) -> None:
    config = tmp_path / "webhooks.json"
    config.write_text('{"endpoints": [{"name": "a", "url": "http://127.0.0.1/x", "secret": "s"}]}')
    [endpoint] = load(config)
    assert endpoint.url == "http://127.0.0.1/x" and endpoint.secret == b"s"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"endpoints": []}', '"endpoints" must be a list of 1 to 100 endpoints'),
        ('{"hooks": []}', 'expected one key, "endpoints"'),
        (
            '{"endpoints": [{"url": "http://h/x", "secret": "s", "secret_file": "f"}]}',
            "give one of",
        ),
        ('{"endpoints": [{"url": "http://h/x", "secret": ""}]}', "secret must be a non-empty"),
        ('{"endpoints": [{"url": "http://h/x", "secret": "s", "name": "a b"}]}', "name must be"),
        ('{"endpoints": [{"url": "http://h/x", "secret": "s", "from": "then"}]}', '"from" must be'),
        ('{"endpoints": [{"url": "http://h:99999/x", "secret": "s"}]}', "url is not a URL"),
        ('{"endpoints": [{"secret": "s"}]}', "url is missing"),
        ('{"endpoints": [{"url": "http://h/x", "secret_file": "none"}]}', "No such file"),
    ],
)
def test_a_bad_configuration_is_one_line_naming_the_file(
    tmp_path: Path, text: str, says: str
) -> None:
    config = tmp_path / "webhooks.json"
    config.write_text(text)
    with pytest.raises(UsageError) as caught:
        load(config)
    message = str(caught.value)
    assert message.startswith(f"webhook configuration {config}: ") and says in message
    assert "\n" not in message
