"""Security headers on every response of the API, its docs and the review pages.

One ASGI middleware, outermost, so a refusal made before any route (401 without a key,
413 over the body limit) carries them too. A response that already has a header keeps
it: the review pages (workers/api/review/guard.py) set their own, stricter for what a
page may load and never cached; what is common to both is defined once here.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every response: no MIME sniffing, never framed, the path never sent to other sites.
COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
_NEVER = "frame-ancestors 'none'; base-uri 'none'"
# JSON answers load nothing.
API_CSP = f"default-src 'none'; form-action 'none'; {_NEVER}"
# The docs page (workers/api/docs.py): scripts and styles from this server only (no
# inline script: Swagger UI is started from a file), the inline styles it sets on its
# elements, its data: icons, and fetching the schema (and "try it out") from here.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    f"img-src 'self' data:; connect-src 'self'; form-action 'none'; {_NEVER}"
)
# The review pages: their own files, forms posted back to themselves.
REVIEW_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    f"form-action 'self'; {_NEVER}"
)


class SecurityHeaders:
    """Adds ``COMMON`` and a Content-Security-Policy (``csp_for(path)``) to every
    HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, csp_for: Callable[[str], str]) -> None:
        self.app = app
        self.csp_for = csp_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = {**COMMON, "content-security-policy": self.csp_for(scope["path"])}
        await self.app(scope, receive, with_headers(send, wanted))


def with_headers(send: Send, wanted: dict[str, str]) -> Send:
    """``send`` that adds the ``wanted`` headers a response does not already have."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            headers += [
                (k.encode(), v.encode()) for k, v in wanted.items() if k.encode() not in present
            ]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
