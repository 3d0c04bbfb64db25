"""The review pages: a reviewer logs in, works through the queue of alerts and marks
each one confirmed (a fake of this person), dismissed (a real photo) or wrong person.

Server-rendered (Jinja2 templates in ``templates/``), one small script for keyboard
shortcuts (``static/review.js``), no third-party assets. Mounted by the API app at
``/review`` when ``IDWATCH_REVIEW_SECRET`` is set (it signs the session cookie).

Routes (inside ``/review``): ``GET /`` the queue (``state``, ``identity``, ``sort``,
``page``, ``per_page``); ``GET /alerts/{id}`` one alert; ``POST /alerts/{id}/review``
(``state``, ``note``); ``GET /alerts/{id}/upload.jpg`` | ``face.png`` |
``evidence.zip``; ``GET /references/{id}.jpg``; ``GET``/``POST /login``;
``POST /logout``. Logins and CSRF are checked for every route by ``guard.ReviewGuard``.
"""

from __future__ import annotations

from core.settings import Settings
from workers.api.review.pages import REVIEW_PREFIX, create_review_app

__all__ = ["REVIEW_PREFIX", "create_review_app", "review_enabled"]


def review_enabled(settings: Settings) -> bool:
    secret = settings.review_secret
    return secret is not None and bool(secret.get_secret_value().strip())
