import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """What outlives a run (references, compiled graphs, cuDNN plans) goes to a folder of this run's own, set
    before the test modules are imported (some copy the environment for their subprocesses). pytest-xdist's
    workers inherit the folder from the run that started them, so they share what they compile.

    One intra-op CPU thread per process unless the caller says otherwise: `make test` runs two workers on a
    two-core machine, and torch's default (a thread per core in each) made them spin against each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config.ckpb_cache = tempfile.mkdtemp(prefix="ckpb-test-cache-")
    os.environ["XDG_CACHE_HOME"] = config.ckpb_cache


def pytest_unconfigure(config):
    if getattr(config, "ckpb_cache", None):
        shutil.rmtree(config.ckpb_cache, ignore_errors=True)


def ci_sweep_config(folder: Path, **overrides) -> Path:
    """The shipped `ci` sweep config with `overrides` (e.g. models=[...]), written as folder/sweep.json."""
    from ck_plugins.sweep.config import CONFIG_DIR

    path = Path(folder) / "sweep.json"
    path.write_text(json.dumps({**json.loads((CONFIG_DIR / "ci.json").read_text()), **overrides}))
    return path


def _ck_bin() -> str:
    found = Path(sys.executable).parent / "ck"
    return str(found) if found.exists() else (shutil.which("ck") or "ck")


@pytest.fixture(scope="session")
def ck_env(tmp_path_factory) -> dict:
    """An isolated CK installation (HOME and CK_REPOS in a temporary folder) with this repository registered."""
    root = tmp_path_factory.mktemp("ck")
    env = dict(os.environ, HOME=str(root / "home"), CK_REPOS=str(root / "CK"),
               PYTHONWARNINGS="ignore::SyntaxWarning",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    Path(env["HOME"]).mkdir()
    done = subprocess.run([_ck_bin(), "add", "repo", "--import", f"--path={REPO}", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return env


@pytest.fixture(scope="session")
def ck(ck_env):
    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([_ck_bin(), *args], env=ck_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    return run


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL server (Debian's package) on a Unix socket in a temporary folder, run as the unprivileged
    `postgres` user; yields a function that creates a fresh database and returns its SQLAlchemy URL."""
    import pwd

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("needs Debian's postgresql (`make test` installs it when run as root)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("needs psycopg (pip install 'psycopg[binary]', part of the test extras)")
    if os.getuid() != 0:
        pytest.skip("starting PostgreSQL here needs root, to run the server as the unprivileged `postgres` user")
    user = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="ckpb-postgres-"))  # pytest's own temporary folders are private to root
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    for folder in (data, sock):
        folder.mkdir()
        os.chown(folder, user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                    f"-k {sock} -c listen_addresses='' -c max_connections=200 -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=120)
    created = []

    def database() -> str:
        name = f"test{len(created)}"
        with psycopg.connect(f"host={sock} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return f"postgresql+psycopg://postgres@/{name}?host={sock}"

    yield database
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """None (SQLite in the service's data folder) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_server")()
