"""The gate in front of every review page: a logged-in reviewer, a CSRF token on every
form, and the headers that keep the pages out of caches and frames.

One ASGI middleware, inside the session middleware, so a route added later cannot
forget a check:

- no reviewer in the session (or one removed since): ``GET``/``HEAD`` are redirected
  to the login page (303), anything else answers 401. Only the login page and the
  static files (CSS, the shortcut script) are served without a login.
- every other method (``POST``) must carry the session's token in the form field
  ``csrf_token`` (the body is read here, bounded, and handed on unchanged): missing
  or wrong is 403. A request whose ``Origin`` is another site is 403 as well. The
  session cookie is ``SameSite=Strict`` besides.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.review.users import user_exists
from core.services import Services
from workers.api.headers import COMMON, REVIEW_CSP, with_headers

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
FORM_MAX_BYTES = 64 * 1024  # a review form is a state, a note and a few hidden fields
PUBLIC_PATHS = frozenset({"/login"})
PUBLIC_PREFIXES = ("/static/",)

# The common security headers (workers/api/headers.py), the pages' own policy, and
# never cached (they show faces and names).
HEADERS = {**COMMON, "cache-control": "no-store", "content-security-policy": REVIEW_CSP}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session: dict) -> str:
    """The session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = new_token()
    return session["csrf"]


def route_path(scope: Scope) -> str:
    """The path inside the review app (without the /review mount point)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def safe_next(value: str | None, root: str) -> str | None:
    """A redirect target only if it stays inside the review pages."""
    if not value or not value.startswith(root + "/") or "//" in value or "\\" in value:
        return None
    return value


class ReviewGuard:
    def __init__(self, app: ASGIApp, svc: Services) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_headers(send, HEADERS)
        path = route_path(scope)
        method = scope["method"]
        session = scope.get("session", {})
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if not public:
            user = session.get("user")
            if not user or not await run_in_threadpool(user_exists, self.svc, user):
                session.clear()
                await self._refuse_anonymous(scope, method)(scope, receive, send)
                return
        if method not in SAFE_METHODS:
            body, too_big = await _read_body(receive, FORM_MAX_BYTES)
            if too_big:
                await PlainTextResponse("form too large", 413)(scope, receive, send)
                return
            problem = _csrf_problem(scope, session, body)
            if problem:
                await PlainTextResponse(problem, 403)(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    @staticmethod
    def _refuse_anonymous(scope: Scope, method: str):
        root = scope.get("root_path", "")
        if method in ("GET", "HEAD"):
            here = scope["path"] + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            return RedirectResponse(f"{root}/login?next={quote(here, safe='')}", status_code=303)
        return PlainTextResponse("log in first", 401, headers={"WWW-Authenticate": "Session"})


def _csrf_problem(scope: Scope, session: dict, body: bytes) -> str | None:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    origin = headers.get("origin")
    if origin and origin != "null":
        host = headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            return "cross-site form refused"
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return "CSRF token missing"
    sent = parse_qs(body.decode("latin-1"), max_num_fields=50).get(CSRF_FIELD, [""])[0]
    expected = session.get("csrf", "")
    if not sent or not expected:
        return "CSRF token missing"
    if not hmac.compare_digest(sent.encode("latin-1"), expected.encode("latin-1")):
        return "CSRF token invalid"
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read above, once; then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
