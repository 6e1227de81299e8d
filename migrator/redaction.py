"""Passwords out of URLs: what the journal, the logs and every error message keep.

``redact`` is the one function that hides a password, for journal URLs
(``postgresql+psycopg://bob:***@db/x``) and host URIs (``test://bob:***@a.example/srv/a``)
alike. It imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

UNPARSEABLE = "<unparseable URL>"
"""What a text that cannot be read as a URL becomes: it may hold a password anywhere."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``; a URL without one is returned as is.

    A text that is not a URL but holds an ``@`` (where a password could hide) becomes
    ``UNPARSEABLE``, never itself.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return UNPARSEABLE
    if not parts.netloc:
        return UNPARSEABLE if "@" in url else url
    if password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
