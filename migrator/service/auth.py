"""Who may do what: bearer tokens of the journal (``migrator token create``), ``read`` for
GETs and the stream, ``operate`` for everything that changes a migration.

Once a journal holds any token every request must carry one; a journal with none is open
to anyone who reaches the server, which ``migrator serve`` only allows on a loopback
address.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from migrator.journal.tokens import Scope, Tokens

ANY_TOKEN_TTL = 1.0
"""Seconds the answer to "does the journal hold any token?" is kept."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="migrator"'}

bearer = HTTPBearer(auto_error=False, description="A token from `migrator token create`.")
CREDENTIALS = Depends(bearer)


class Auth:
    """Checks a request's bearer token against the journal's tokens."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._lock = threading.Lock()
        self._any: tuple[float, bool] = (-ANY_TOKEN_TTL, False)

    def required(self) -> bool:
        """Whether requests need a token: the journal holds one (asked at most once a
        ``ANY_TOKEN_TTL``)."""
        with self._lock:
            at, found = self._any
            if time.monotonic() - at < ANY_TOKEN_TTL:
                return found
        found = self.tokens.any()
        with self._lock:
            self._any = (time.monotonic(), found)
        return found

    def check(self, credentials: HTTPAuthorizationCredentials | None, needed: Scope) -> None:
        """Nothing if the request may do what ``needed`` allows; else 401 or 403."""
        if credentials is None:
            if self.required():
                raise HTTPException(401, "a bearer token is required", headers=CHALLENGE)
            return
        scope = self.tokens.scope_of(credentials.credentials)
        if scope is None:
            raise HTTPException(401, "the bearer token is not valid", headers=CHALLENGE)
        if needed is Scope.OPERATE and scope is not Scope.OPERATE:
            raise HTTPException(403, "this token's scope is read: the action needs operate")


def allow(needed: Scope) -> Callable[..., None]:
    """A dependency that lets a request through if its token has ``needed``."""

    def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = CREDENTIALS
    ) -> None:
        auth: Auth = request.app.state.auth
        auth.check(credentials, needed)

    return dependency


READ = Depends(allow(Scope.READ))
OPERATE = Depends(allow(Scope.OPERATE))
