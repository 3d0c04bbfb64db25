"""HTTP ingest API: a platform POSTs images, the pipeline judges them, the platform polls.

``create_app(svc, dispatcher)`` builds the FastAPI app; ``run(...)`` serves it with
uvicorn (``idwatch api``). Endpoints (all but ``/healthz`` and the docs need the
``X-API-Key`` header):

- ``POST /uploads`` (multipart: ``file``, optional ``reference``) -> 202
  ``{"upload_id", "status", "duplicate"}``; 415 with the reason when the content is not
  accepted (``core.pipeline.sources.admit``: a video, while video uploads are off)
- ``GET /uploads/{id}?alerts_limit=&alerts_offset=`` -> status, reason, face count,
  times, one page of the upload's alerts and ``alerts_total``; for a video also its
  duration and progress (``segments_done`` of ``segments_total``)
- ``GET /alerts?identity=&upload_id=&limit=&offset=`` -> alert rows (``X-Total-Count``
  header); every list is paged in the database query, never in Python
- ids in paths and queries are bounded to their column (1 to 2^31-1): others are 422
- ``GET /healthz`` -> ``{"ok": true}`` after a trivial database query
- ``/review``: the review pages for people (workers/api/review; their own login, not
  API keys), when ``IDWATCH_REVIEW_SECRET`` is set

Limits: the whole request body is capped at ``api_max_request_bytes`` by FastAPI's
own body limit (Content-Length is checked before anything is read, and the bytes are
counted while reading, so an absent or lying Content-Length cannot get past it), the
upload itself at its kind's limit, told from its first bytes: ``max_upload_bytes`` for
an image (or anything that is not a video), ``max_video_bytes`` for a video, which is
stored streaming, never whole in memory; both answer 413. The client's filename is only
ever a label (``Upload.original_name``): stored files are named by their SHA-256.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated

from fastapi import (
    BackgroundTasks,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Response,
    UploadFile,
)
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text
from starlette.types import ASGIApp

from core.alerts.listing import count_alerts, list_alerts
from core.errors import Rejected
from core.pipeline.dispatch import Dispatcher
from core.pipeline.sources.admit import admit
from core.pipeline.sources.media import SNIFF_BYTES, max_bytes_for
from core.pipeline.sources.submit import submit_bytes, submit_video_stream
from core.pipeline.status import mark_failed
from core.services import Services
from core.storage.models import Alert, Upload, UploadStatus
from workers.api.auth import KeyChecker, RequireKeyMiddleware, require_key
from workers.api.docs import OPEN_PREFIXES as DOCS_PREFIXES
from workers.api.docs import add_docs
from workers.api.headers import API_CSP, DOCS_CSP, REVIEW_CSP, SecurityHeaders
from workers.api.labels import REFERENCE_MAX, upload_label
from workers.api.models import ERRORS, AlertOut, ErrorOut, Health, UploadAccepted, UploadOut
from workers.api.params import Offset, OptionalRowId, RowId
from workers.api.review import REVIEW_PREFIX, create_review_app, review_enabled

log = logging.getLogger(__name__)

ALERTS_PAGE_MAX = 1000
# Multipart parsing limits: one file, the reference field, nothing else of size.
FORM_LIMITS = {"max_files": 1, "max_fields": 4, "max_part_size": 4096}


class ApiConfigError(RuntimeError):
    """The API is configured in a way that must not be served (e.g. no API keys)."""


def _public_reason(status: str, reason: str | None) -> str | None:
    # A failure reason holds a traceback; clients get its first line only.
    if reason and status == UploadStatus.failed:
        return reason.splitlines()[0][:500]
    return reason


def _csp_for(path: str) -> str:
    if path.startswith(DOCS_PREFIXES):
        return DOCS_CSP
    if path.startswith(REVIEW_PREFIX):
        return REVIEW_CSP
    return API_CSP


class IngestApp(FastAPI):
    """FastAPI with the security headers outside everything, so that the answers FastAPI
    makes outside the user middleware (413 over the body limit, 500) carry them too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), csp_for=_csp_for)


def create_app(
    svc: Services,
    dispatcher: Dispatcher,
    *,
    allow_no_auth: bool = False,
    background: bool | None = None,
) -> FastAPI:
    """Build the ingest API over ``svc``.

    ``background``: run ``dispatcher.upload`` after the response is sent (FastAPI
    BackgroundTasks) instead of inside the request. Default: in embedded mode (no
    broker), where the dispatcher runs the whole pipeline in-process; with a broker
    the dispatch is a quick enqueue and is done in the request, so a failure to
    enqueue is reported to the client instead of being lost.
    """
    settings = svc.settings
    checker = KeyChecker(settings.api_keys)
    if not checker.configured:
        if not allow_no_auth:
            raise ApiConfigError(
                "no API keys configured: set IDWATCH_API_KEYS (comma-separated) before "
                "serving the API (allow_no_auth=True is for local experiments only)"
            )
        log.warning("ingest API running WITHOUT authentication (allow_no_auth=True)")
    inline = settings.embedded if background is None else background
    # In-process pipeline runs share one Services (models, vector store): one at a time.
    inline_lock = threading.Lock()

    app = IngestApp(
        title="identity-watch ingest API",
        summary="Submit images and videos; poll their status and the deepfake alerts they raise.",
        version="1",
        max_body_size=settings.resolved_api_max_request_bytes,
        form_limits=FORM_LIMITS,
        # FastAPI's own docs pages load Swagger UI and ReDoc from a CDN: served here
        # from local files instead (workers/api/docs.py).
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    add_docs(app)
    open_paths = frozenset({"/healthz", app.openapi_url})
    # The review pages (/review) log reviewers in themselves (workers/api/review).
    review_on = review_enabled(settings)
    app.add_middleware(
        RequireKeyMiddleware,
        checker=checker,
        open_paths=open_paths,
        open_prefixes=(*DOCS_PREFIXES, *((REVIEW_PREFIX,) if review_on else ())),
    )

    app.state.key_checker = checker
    auth = [Depends(require_key)]

    def run_inline(upload_id: int) -> None:
        with inline_lock:
            try:
                dispatcher.upload(upload_id)
            except Exception as exc:  # the response is gone; record the failure instead
                log.exception("upload %s: pipeline failed", upload_id)
                mark_failed(svc, upload_id, f"{type(exc).__name__}: {exc}")

    @app.post(
        "/uploads",
        status_code=202,
        response_model=UploadAccepted,
        dependencies=auth,
        responses={
            **ERRORS,
            413: {"description": "Request or image over the size limits."},
            415: {
                "model": ErrorOut,
                "description": "Content not accepted (a video, while video uploads are off).",
            },
        },
    )
    def post_upload(
        tasks: BackgroundTasks,
        file: Annotated[
            UploadFile,
            File(description="An image (JPEG, PNG, WebP...) or video (MP4, MOV, MKV, WebM, AVI)."),
        ],
        reference: Annotated[
            str | None,
            Form(
                max_length=REFERENCE_MAX,
                description="The platform's own id for this content (a label only).",
            ),
        ] = None,
    ) -> UploadAccepted:
        head = file.file.read(SNIFF_BYTES)
        decision = admit(head, named=True)  # content decides, not the type or the name
        if not decision.submit:
            raise HTTPException(415, f"not accepted: {decision.reason}")
        limit = max_bytes_for(settings, decision.kind)
        label = upload_label(file.filename, reference)
        if decision.kind == "video":
            try:
                sub = submit_video_stream(svc, file.file, label, "api", head)
            except Rejected as rej:
                raise HTTPException(413, f"the video is over the {limit}-byte limit") from rej
        else:
            data = head + file.file.read(limit + 1 - len(head))
            if len(data) > limit:
                raise HTTPException(413, f"the image is over the {limit}-byte limit")
            sub = submit_bytes(svc, data, label, source="api")
        if sub.created:
            if inline:
                tasks.add_task(run_inline, sub.upload_id)
            else:
                try:
                    dispatcher.upload(sub.upload_id)
                except Exception:
                    # The upload is stored with its status row; the sweeper queues it
                    # once the broker is back, so the client need not send it again.
                    log.exception("upload %s: not queued yet (broker down?)", sub.upload_id)
        return UploadAccepted(upload_id=sub.upload_id, status=sub.status, duplicate=not sub.created)

    @app.get(
        "/uploads/{upload_id}",
        response_model=UploadOut,
        dependencies=auth,
        responses={**ERRORS, 404: {"model": ErrorOut, "description": "No such upload."}},
    )
    def get_upload(
        upload_id: RowId,
        alerts_limit: Annotated[int, Query(ge=0, le=ALERTS_PAGE_MAX)] = 100,
        alerts_offset: Offset = 0,
    ) -> UploadOut:
        with svc.db.session() as s:
            up = s.get(Upload, upload_id)
            if up is None:
                raise HTTPException(404, f"upload {upload_id} does not exist")
            n_alerts = s.scalar(
                select(func.count()).select_from(Alert).where(Alert.upload_id == upload_id)
            )
            out = UploadOut(
                upload_id=up.id,
                status=up.status,
                reason=_public_reason(up.status, up.reason),
                n_faces=up.n_faces,
                original_name=up.original_name,
                media_kind=up.media_kind,
                duration_s=up.duration_s,
                segments_done=up.segments_done,
                segments_total=up.segments_total,
                created_at=up.created_at,
                updated_at=up.updated_at,
                alerts=[],
                alerts_total=n_alerts or 0,
            )
        if n_alerts and alerts_limit:  # only uploads with alerts pay for the page
            out.alerts = [
                AlertOut.model_validate(a)
                for a in list_alerts(
                    svc, upload_id=upload_id, limit=alerts_limit, offset=alerts_offset
                )
            ]
        return out

    @app.get(
        "/alerts",
        response_model=list[AlertOut],
        dependencies=auth,
        responses={
            **ERRORS,
            200: {"headers": {"X-Total-Count": {"description": "Rows before paging."}}},
        },
    )
    def get_alerts(
        response: Response,
        identity: Annotated[
            str | None, Query(max_length=200, description="Protected identity name.")
        ] = None,
        upload_id: OptionalRowId = None,
        limit: Annotated[int, Query(ge=1, le=ALERTS_PAGE_MAX)] = 100,
        offset: Offset = 0,
    ) -> list[AlertOut]:
        total = count_alerts(svc, identity, upload_id=upload_id)
        response.headers["X-Total-Count"] = str(total)
        if offset >= total:
            return []
        rows = list_alerts(svc, identity, upload_id=upload_id, limit=limit, offset=offset)
        return [AlertOut.model_validate(a) for a in rows]

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Health | JSONResponse:
        try:
            with svc.db.session() as s:
                s.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: database query failed")
            return JSONResponse({"ok": False}, status_code=503)
        return Health(ok=True)

    if review_on:
        app.mount(REVIEW_PREFIX, create_review_app(svc, dispatcher))
    return app


def run(
    svc: Services,
    dispatcher: Dispatcher,
    host: str | None = None,
    port: int | None = None,
    *,
    allow_no_auth: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the API with uvicorn (blocks). Host and port default to the settings."""
    import uvicorn

    app = create_app(svc, dispatcher, allow_no_auth=allow_no_auth)
    uvicorn.run(
        app,
        host=host or svc.settings.api_host,
        port=port or svc.settings.api_port,
        log_level=log_level,
        server_header=False,
    )
