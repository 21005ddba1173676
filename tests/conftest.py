import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
