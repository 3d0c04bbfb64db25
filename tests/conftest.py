"""Shared fixtures: an embedded system in a temp dir, the demo set, a PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES_DEV = ROOT.parent / "shared" / "data" / "faces-dev"
PG_HOST = os.environ.get("IDWATCH_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("IDWATCH_TEST_PG_USER", "postgres")

needs_faces_dev = pytest.mark.skipif(
    not (FACES_DEV / "manifest.csv").exists(), reason="../shared/data/faces-dev is absent"
)


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """The built-in demo set (made once per test session)."""
    from core.demo.dataset import build_demo_set

    out = tmp_path_factory.mktemp("demo-set")
    build_demo_set(out)
    return out


@pytest.fixture(scope="session")
def dlib_backend():
    """dlib's face backend, loaded once per test session (its models ship with pip)."""
    from core.faces.dlib_backend import DlibFaceBackend

    backend = DlibFaceBackend()
    backend.load()
    return backend


@pytest.fixture
def make_services(tmp_path):
    """Factory for embedded Services in a fresh data dir; closed at teardown."""
    from core.services import Services
    from core.settings import Settings

    made = []

    def _make(**overrides):
        overrides.setdefault("data_dir", tmp_path / f"data{len(made)}")
        overrides.setdefault("notifier", "memory")
        svc = Services(Settings(**overrides))
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        svc.close()


@pytest.fixture
def svc(make_services):
    return make_services()


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", PG_HOST, "-U", PG_USER, "-d", "postgres", "-qc", sql],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    name = f"idwatch_test_{uuid.uuid4().hex[:10]}"
    try:
        _psql(f"CREATE DATABASE {name}")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}/{name}"
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
