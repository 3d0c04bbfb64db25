"""API keys: constant-time checks, refused before the body is read."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"


class KeyChecker:
    """Constant-time check of a presented key against every configured key.

    Keys are compared as SHA-256 digests so the comparison time does not depend on
    the keys' lengths either, and every key is compared (no early exit)."""

    def __init__(self, secret: SecretStr | None) -> None:
        raw = secret.get_secret_value() if secret is not None else ""
        self._digests = [
            hashlib.sha256(k.strip().encode()).digest() for k in raw.split(",") if k.strip()
        ]

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def ok(self, presented: bytes | None) -> bool:
        if not self._digests:
            return True  # only reachable with allow_no_auth=True
        if not presented:
            return False
        given = hashlib.sha256(presented).digest()
        match = False
        for d in self._digests:
            match |= hmac.compare_digest(given, d)
        return match


class RequireKeyMiddleware:
    """Refuse unauthenticated requests before the body is read.

    FastAPI parses a multipart body before it runs dependencies, so the route-level
    check alone would let anyone without a key make the server spool a full-size
    upload. This check runs first; the route dependency repeats it (and declares the
    scheme in the OpenAPI schema)."""

    def __init__(
        self,
        app: ASGIApp,
        checker: KeyChecker,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.checker = checker
        self.open_paths = open_paths
        # Sub-applications with their own login (the review pages) under these paths.
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._is_open(scope):
            presented = next(
                (v for k, v in scope["headers"] if k == API_KEY_HEADER.lower().encode()), None
            )
            if not self.checker.ok(presented):
                await _unauthorized()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _is_open(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.open_paths or any(
            path == p or path.startswith(p + "/") for p in self.open_prefixes
        )


API_KEY_SCHEME = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="One of the configured API keys."
)


def require_key(request: Request, key: Annotated[str | None, Security(API_KEY_SCHEME)]) -> None:
    """Route dependency: declares the scheme in OpenAPI and checks the key again."""
    checker: KeyChecker = request.app.state.key_checker
    # Starlette decodes header bytes as latin-1; encode back to the bytes sent.
    if not checker.ok(key.encode("latin-1") if key else None):
        raise HTTPException(status_code=401, detail=f"missing or invalid {API_KEY_HEADER}")


def _unauthorized() -> JSONResponse:
    return JSONResponse({"detail": f"missing or invalid {API_KEY_HEADER}"}, status_code=401)
