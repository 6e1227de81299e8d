"""``migrator serve`` (the HTTP API, its event stream and the dashboard) and ``migrator
token`` (the API's bearer tokens): docs/api.md. The web stack is imported only here."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import click

from migrator.cli import context
from migrator.cli.exits import ExitCode
from migrator.cli.options import SECONDS, Count, Text, json_option
from migrator.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8080"
_DB = click.option(
    "--db", "db_url", metavar="URL", help="Journal URL (default: the global --db / MIGRATOR_DB)."
)


def _journal_url(db_url: str | None) -> str:
    return db_url if db_url is not None else context.settings().db


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@_DB
@click.option(
    "--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
    help="Address and port; beyond loopback only once the journal holds a token.",
)  # fmt: skip
@click.option(
    "--tls-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve HTTPS with this certificate (PEM), with --tls-keyfile.",
)  # fmt: skip
@click.option(
    "--tls-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's private key (PEM).",
)  # fmt: skip
@click.option(
    "--cors-origin", "cors", multiple=True, type=Text(255), metavar="ORIGIN",
    help="Allow cross-origin requests from ORIGIN (repeatable; default: none).",
)  # fmt: skip
@click.option(
    "--max-body", type=Count(1, 1 << 24), default=65536, show_default=True,
    help="Bytes a request body may have (413 over it).",
)  # fmt: skip
@click.option(
    "--timeout", type=SECONDS, default=600.0, show_default=True,
    help="Seconds each pre-flight check of a host may take when a migration is queued.",
)  # fmt: skip
@click.option(
    "--poll", type=SECONDS, default=0.2, show_default=True,
    help="Seconds between two reads of the journal by an idle event stream.",
)  # fmt: skip
def serve(
    db_url: str | None,
    listen: str,
    tls_certfile: Path | None,
    tls_keyfile: Path | None,
    cors: tuple[str, ...],
    max_body: int,
    timeout: float,
    poll: float,
) -> None:
    """Serve the HTTP API (/v1), the event stream and the dashboard (/) until SIGTERM.

    Without tokens (`migrator token create`) only a loopback address is allowed."""
    from migrator.journal.store import Journal
    from migrator.journal.tokens import Tokens

    with context.errors():
        host, port = parse_listen(listen)
        if (tls_certfile is None) != (tls_keyfile is None):
            raise UsageError("give --tls-certfile and --tls-keyfile together")
        journal = Journal.open(_journal_url(db_url))
        click.get_current_context().with_resource(journal)
        if not is_loopback(host) and not Tokens(journal).any():
            raise UsageError(
                f"refusing to listen on {host} without tokens: create one with"
                " `migrator token create --scope operate`, or listen on 127.0.0.1"
            )
        _run(journal, host, port, tls=(tls_certfile, tls_keyfile), cors=cors,
             max_body=max_body, timeout=timeout, poll=poll)  # fmt: skip
    sys.exit(ExitCode.OK)


def _run(journal: object, host: str, port: int, *, tls: tuple[Path | None, Path | None],
         cors: tuple[str, ...], max_body: int, timeout: float, poll: float) -> None:  # fmt: skip
    import uvicorn

    from migrator.journal.store import Journal
    from migrator.service.app import create_app

    assert isinstance(journal, Journal)
    app = create_app(journal, step_timeout=timeout, max_body=max_body, cors_origins=cors, poll=poll)
    certfile, keyfile = tls
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        ssl_certfile=None if certfile is None else str(certfile),
        ssl_keyfile=None if keyfile is None else str(keyfile),
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    scheme = "https" if certfile is not None else "http"
    click.echo(f"serving {journal.url} on {scheme}://{listen_text(host, port)}", err=True)
    uvicorn.Server(config).run()


def listen_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@click.group()
def token() -> None:
    """The HTTP API's bearer tokens, stored hashed in the journal."""


@token.command("create")
@_DB
@click.option(
    "--scope", type=click.Choice(["read", "operate"]), required=True,
    help="read: GETs and the stream; operate: also queue and act on migrations.",
)  # fmt: skip
@click.option("--name", type=Text(255), help="What the token is for.")
def create(db_url: str | None, scope: str, name: str | None) -> None:
    """Make a token and print it (once: only its hash is kept)."""
    from migrator.journal.store import Journal
    from migrator.journal.tokens import Scope, Tokens

    with context.errors():
        journal = Journal.open(_journal_url(db_url))
        click.get_current_context().with_resource(journal)
        made, text = Tokens(journal).create(Scope(scope), name=name)
    click.echo(text)
    click.echo(f"token {made.id} ({made.scope}) created; it is not shown again", err=True)


@token.command("list")
@_DB
@json_option
def list_tokens(db_url: str | None, as_json: bool) -> None:
    """List the tokens: id, scope, name, when made (never the tokens themselves)."""
    from migrator.journal.store import Journal
    from migrator.journal.tokens import Tokens
    from migrator.jsonform import iso

    with context.errors():
        journal = Journal.open(_journal_url(db_url))
        click.get_current_context().with_resource(journal)
        rows = [
            {"id": t.id, "scope": str(t.scope), "name": t.name, "created_at": iso(t.created_at)}
            for t in Tokens(journal).list()
        ]
    if as_json:
        context.print_json(rows)
        return
    from migrator.cli.render import safe

    for row in rows:
        name = safe(row["name"] or "-", 80)
        click.echo(f"{row['id']}  {row['scope']:<7}  {row['created_at']}  {name}")
    if not rows:
        click.echo("no tokens")


@token.command("revoke")
@_DB
@click.argument("token_id", metavar="ID", type=Text(32))
def revoke(db_url: str | None, token_id: str) -> None:
    """Delete a token: requests carrying it are refused from now on."""
    from migrator.journal.store import Journal
    from migrator.journal.tokens import Tokens

    with context.errors():
        journal = Journal.open(_journal_url(db_url))
        click.get_current_context().with_resource(journal)
        if not Tokens(journal).revoke(token_id):
            raise UsageError(f"no token {token_id!r} in the journal (`migrator token list`)")
    click.echo(f"token {token_id} revoked")
