"""The API's documentation page (``/docs``: Swagger UI), served with its assets from this
server: no CDN is contacted, and the page works offline.

The assets are the files the ``fastapi-offline`` package ships (pinned in
pyproject.toml); its own page factory is not used because FastAPI's Swagger UI page
starts the UI with an inline script, which the page's Content-Security-Policy forbids
(workers/api/headers.py). Here the page is static and the UI is started from a file.
ReDoc (``/redoc``) is not served: its bundle always loads its maker's logo from their
CDN.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS = "/docs"
ASSETS = f"{DOCS}/assets"  # the vendored Swagger UI files
OPEN_PREFIXES = (DOCS,)  # served without an API key
VENDORED = Path(fastapi_offline.__file__).resolve().parent / "static"
SWAGGER_INIT = Path(__file__).resolve().parent / "static" / "swagger-init.js"


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (create the app with ``docs_url=None``, ``redoc_url=None``, so
    FastAPI's CDN pages are not served as well)."""
    app.mount(ASSETS, StaticFiles(directory=VENDORED), name="docs-assets")
    title = escape(app.title)

    @app.get(DOCS, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = escape(request.scope.get("root_path", ""))
        return HTMLResponse(
            "<!doctype html><html><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title} - Swagger UI</title>"
            f'<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">'
            f'<link rel="icon" href="{root}{ASSETS}/favicon.png">'
            f'</head><body><div id="swagger-ui" data-openapi-url="{root}{app.openapi_url}">'
            f'</div><script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>'
            f'<script src="{root}{DOCS}/swagger-init.js"></script></body></html>'
        )

    @app.get(f"{DOCS}/swagger-init.js", include_in_schema=False)
    def swagger_init() -> FileResponse:
        return FileResponse(SWAGGER_INIT, media_type="text/javascript")
