"""Reviewers: names and password hashes, from the settings or from the database.

Hashes are argon2id (argon2-cffi's ``PasswordHasher`` defaults, RFC 9106 low-memory
profile). PBKDF2 hashes written as ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``
(hashlib, e.g. from a system that cannot install argon2) are accepted too. Passwords
are never stored or logged.

``IDWATCH_REVIEW_USERS``: ``name:hash`` entries separated by whitespace or ``;`` (an
argon2 hash holds commas and ``$``: quote it in a shell). A name in the settings wins
over the same name in the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from core.services import Services
from core.settings import Settings
from core.storage.inserts import insert_missing
from core.storage.models import ReviewUser

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10


class UserError(ValueError):
    pass


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against when the name is unknown, so a wrong name costs the same time
    # as a wrong password (no way to probe which names exist).
    return _hasher().hash("idwatch-no-such-user")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher().hash(password)


def verify_password(stored: str, password: str) -> bool:
    if stored.startswith("pbkdf2_sha256$"):
        try:
            _, iterations, salt, digest = stored.split("$")
            got = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), base64.b64decode(salt), int(iterations)
            )
            return hmac.compare_digest(got, base64.b64decode(digest))
        except ValueError:
            return False
    try:
        return _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def settings_users(settings: Settings) -> dict[str, str]:
    raw = settings.review_users.get_secret_value() if settings.review_users else ""
    users = {}
    for entry in re.split(r"[\s;]+", raw.strip()):
        if not entry:
            continue
        name, sep, hashed = entry.partition(":")
        if not sep or not NAME_RE.match(name) or not hashed:
            raise UserError(
                "IDWATCH_REVIEW_USERS: each entry is name:hash (separated by spaces or ';')"
            )
        users[name] = hashed
    return users


def _stored_hash(svc: Services, name: str) -> str | None:
    configured = settings_users(svc.settings)
    if name in configured:
        return configured[name]
    with svc.db.session() as s:
        return s.scalar(select(ReviewUser.password_hash).where(ReviewUser.name == name))


def authenticate(svc: Services, name: str, password: str) -> bool:
    """True when ``name`` is a reviewer and ``password`` is theirs (constant work)."""
    stored = _stored_hash(svc, name) if NAME_RE.match(name or "") else None
    ok = verify_password(stored or _dummy_hash(), password or "")
    return ok and stored is not None


def user_exists(svc: Services, name: str) -> bool:
    """Checked on every request of a session: a removed reviewer is logged out."""
    return _stored_hash(svc, name) is not None if NAME_RE.match(name or "") else False


def any_users(svc: Services) -> bool:
    if settings_users(svc.settings):
        return True
    with svc.db.session() as s:
        return s.scalar(select(ReviewUser.id).limit(1)) is not None


def add_user(svc: Services, name: str, password: str, replace: bool = False) -> bool:
    """Store a reviewer in the database; True if new. ``replace``: set a new password."""
    if not NAME_RE.match(name):
        raise UserError("a reviewer name is 1-64 letters, digits, '.', '_', '@' or '-'")
    hashed = hash_password(password)
    with svc.db.session() as s:
        # The unique name decides, not a look-up first: two adds at once, one wins.
        if insert_missing(s, ReviewUser, name=name, password_hash=hashed) is not None:
            return True
        if not replace:
            raise UserError(f"reviewer {name!r} exists (use --replace to set a new password)")
        s.execute(update(ReviewUser).where(ReviewUser.name == name).values(password_hash=hashed))
        return False


def remove_user(svc: Services, name: str) -> bool:
    with svc.db.session() as s:
        row = s.scalar(select(ReviewUser).where(ReviewUser.name == name))
        if row is None:
            return False
        s.delete(row)
        return True


def list_users(svc: Services) -> list[dict]:
    with svc.db.session() as s:
        rows = [
            {"name": u.name, "source": "database", "created_at": u.created_at.isoformat()}
            for u in s.scalars(select(ReviewUser).order_by(ReviewUser.name))
        ]
    configured = settings_users(svc.settings)
    rows = [r for r in rows if r["name"] not in configured]
    rows += [{"name": n, "source": "settings", "created_at": None} for n in sorted(configured)]
    return rows
