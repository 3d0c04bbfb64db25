"""Routes of the review pages (see the package docstring)."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from core.review.actions import AlertNotFound, set_review
from core.review.evidence import EvidenceError, evidence_zip
from core.review.media import REFERENCE_BOX, face_jpeg, marked_jpeg, png_bytes
from core.review.queue import (
    SORTS,
    QueueFilter,
    alert_detail,
    identities_with_alerts,
    neighbours,
    queue,
    state_counts,
)
from core.review.states import LABELS, ReviewState
from core.review.users import any_users, authenticate
from core.services import Services
from core.storage.models import Alert, Face, ReferencePhoto, Upload
from workers.api.params import RowId
from workers.api.review.guard import CSRF_FIELD, ReviewGuard, csrf_token, new_token, safe_next

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REVIEW_PREFIX = "/review"  # where the API app mounts the pages
SESSION_COOKIE = "idwatch_review"
# Login attempts: at most this many failures per (client, name) in the window.
LOGIN_FAILURES_MAX = 5
LOGIN_WINDOW_S = 300.0
# Buttons of the review form: state, label, keyboard shortcut.
ACTIONS = (
    (ReviewState.confirmed, "Confirm fake", "c"),
    (ReviewState.dismissed, "Dismiss: real photo", "d"),
    (ReviewState.wrong_person, "Wrong person", "w"),
    (ReviewState.new, "Reopen", "r"),
)


class LoginThrottle:
    """Failed logins per (client address, name), in this process: slows down guessing
    (argon2 makes each guess cost ~50 ms of CPU as well)."""

    def __init__(self) -> None:
        self._fails: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            q = self._fails[key]
            while q and q[0] < now - LOGIN_WINDOW_S:
                q.popleft()
            return len(q) >= LOGIN_FAILURES_MAX

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._fails[key].append(time.monotonic())

    def clear(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._fails.pop(key, None)


def _short_time(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso[:16]


def create_review_app(svc: Services, dispatcher, mount_path: str = REVIEW_PREFIX) -> FastAPI:
    """The review pages over ``svc``, to be mounted at ``mount_path`` (the session
    cookie is sent there only); review events go to ``dispatcher``'s notify stage."""
    settings = svc.settings
    secret = settings.review_secret.get_secret_value() if settings.review_secret else ""
    if not secret.strip():
        raise ValueError("the review pages need IDWATCH_REVIEW_SECRET (signs the session)")
    if not any_users(svc):
        log.warning(
            "review pages: no reviewer yet; add one with `idwatch review user add NAME` "
            "or IDWATCH_REVIEW_USERS"
        )
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    # Added first = inside: the guard sees the session the session middleware loaded.
    app.add_middleware(ReviewGuard, svc=svc)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=settings.review_session_max_age_s,
        path=mount_path,
        same_site="strict",
        https_only=settings.review_cookie_secure,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["short_time"] = _short_time
    throttle = LoginThrottle()

    def render(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        ctx.setdefault("user", request.session.get("user"))
        ctx["csrf"] = csrf_token(request.session)
        ctx["csrf_field"] = CSRF_FIELD
        ctx["root"] = request.scope.get("root_path", "")
        ctx["labels"] = LABELS
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def root_of(request: Request) -> str:
        return request.scope.get("root_path", "")

    # ------------------------------------------------------------------ login

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str | None = None) -> HTMLResponse:
        return render(request, "login.html", next=safe_next(next, root_of(request)) or "")

    @app.post("/login")
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=200)] = "",
        password: Annotated[str, Form(max_length=1000)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        client = request.client.host if request.client else "?"
        key = (client, username)
        target = safe_next(next, root_of(request)) or f"{root_of(request)}/"
        if throttle.blocked(key):
            return render(
                request,
                "login.html",
                status=429,
                error="Too many failed attempts; wait a few minutes.",
                next=target,
            )
        if not authenticate(svc, username, password):
            throttle.failed(key)
            log.warning("review login failed for %r from %s", username, client)
            return render(
                request, "login.html", status=401, error="Wrong name or password.", next=target
            )
        throttle.clear(key)
        # A new session on login: nothing from before it (or planted in it) survives.
        request.session.clear()
        request.session.update({"user": username, "csrf": new_token(), "at": int(time.time())})
        log.info("reviewer %s logged in from %s", username, client)
        return RedirectResponse(target, status_code=303)

    @app.post("/logout")
    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(f"{root_of(request)}/login", status_code=303)

    # ------------------------------------------------------------------ queue

    @app.get("/", response_class=HTMLResponse)
    def queue_page(
        request: Request,
        state: str | None = None,
        identity: str | None = None,
        sort: str | None = None,
        page: str | None = None,
        per_page: str | None = None,
    ) -> HTMLResponse:
        f = QueueFilter.from_query(state, identity, sort, page, per_page)
        pg = queue(svc, f)
        return render(
            request,
            "queue.html",
            pg=pg,
            f=pg.filter,
            counts=state_counts(svc, f.identity),
            identities=identities_with_alerts(svc),
            sorts=SORTS,
            states=[s.value for s in ReviewState],
            actions=ACTIONS[:3],
            here=f"{root_of(request)}/?{pg.filter.query()}",
        )

    # ------------------------------------------------------------------ one alert

    @app.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert_page(
        request: Request,
        alert_id: RowId,
        state: str | None = None,
        identity: str | None = None,
        sort: str | None = None,
        page: str | None = None,
        per_page: str | None = None,
    ) -> HTMLResponse:
        d = alert_detail(svc, alert_id)
        if d is None:
            return render(request, "error.html", status=404, message=f"No alert {alert_id}.")
        f = QueueFilter.from_query(state, identity, sort, page, per_page)
        prev_id, next_id = neighbours(svc, f, alert_id)
        root = root_of(request)
        q = f.query(page=1)
        return render(
            request,
            "alert.html",
            a=d,
            f=f,
            q=q,
            prev_url=f"{root}/alerts/{prev_id}?{q}" if prev_id else None,
            next_url=f"{root}/alerts/{next_id}?{q}" if next_id else None,
            # After a decision: the next alert of the queue, else the queue.
            after=f"{root}/alerts/{next_id}?{q}" if next_id else f"{root}/?{q}",
            queue_url=f"{root}/?{f.query()}",
            actions=ACTIONS,
            match_threshold=svc.match_threshold,
        )

    @app.post("/alerts/{alert_id}/review")
    def review(
        request: Request,
        alert_id: RowId,
        state: Annotated[str, Form(max_length=20)],
        note: Annotated[str, Form(max_length=4000)] = "",
        after: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        try:
            chosen = ReviewState(state)
        except ValueError:
            raise HTTPException(400, f"unknown review state {state!r}") from None
        try:
            res = set_review(svc, alert_id, chosen, request.session["user"], note or None)
        except AlertNotFound:
            raise HTTPException(404, f"no alert {alert_id}") from None
        root = root_of(request)
        target = safe_next(after, root) or f"{root}/alerts/{alert_id}"
        # Review events go to the notify stage after the answer (in-process they are
        # delivered here, and a slow receiver must not hold the reviewer's page).
        task = (
            BackgroundTask(_dispatch, dispatcher, res.notifications) if res.notifications else None
        )
        return RedirectResponse(target, status_code=303, background=task)

    @app.get("/alerts/{alert_id}/upload.jpg")
    def upload_image(alert_id: RowId) -> Response:
        with svc.db.session() as s:
            row = s.execute(
                select(Upload.path, Face.box)
                .join(Alert, Alert.upload_id == Upload.id)
                .join(Face, Face.id == Alert.face_id)
                .where(Alert.id == alert_id)
            ).first()
        if row is None:
            raise HTTPException(404)
        return Response(
            marked_jpeg(svc.files.abs(row.path), list(row.box)), media_type="image/jpeg"
        )

    @app.get("/alerts/{alert_id}/face.png")
    def face_image(alert_id: RowId) -> Response:
        with svc.db.session() as s:
            rel = s.scalar(
                select(Face.crop_path)
                .join(Alert, Alert.face_id == Face.id)
                .where(Alert.id == alert_id)
            )
        if rel is None:
            raise HTTPException(404)
        return Response(png_bytes(svc.files.abs(rel)), media_type="image/png")

    @app.get("/references/{ref_id}.jpg")
    def reference_image(ref_id: RowId, face: bool = False) -> Response:
        """The reference photo with its face box, or (``face=1``) its face alone."""
        with svc.db.session() as s:
            ref = s.get(ReferencePhoto, ref_id)
            path, box = (ref.path, list(ref.box)) if ref is not None else (None, None)
        if path is None:
            raise HTTPException(404)
        src = svc.files.abs(path)
        jpeg = face_jpeg(src, box) if face else marked_jpeg(src, box, REFERENCE_BOX, side=1024)
        return Response(jpeg, media_type="image/jpeg")

    @app.get("/alerts/{alert_id}/evidence.zip")
    def evidence(request: Request, alert_id: RowId) -> Response:
        try:
            data = evidence_zip(svc, alert_id, exported_by=f"review:{request.session['user']}")
        except EvidenceError as exc:
            return render(request, "error.html", status=503, message=str(exc))
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="alert-{alert_id}.zip"'},
        )

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", status=exc.status_code, message=str(exc.detail))

    return app


def _dispatch(dispatcher, notification_ids: list[int]) -> None:
    for nid in notification_ids:
        try:
            dispatcher.notify(nid)
        except Exception:  # broker down: the row stays pending, the sweeper sends it
            log.exception("review event %s not queued yet", nid)
