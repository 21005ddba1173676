"""The HTML report in a real headless Chromium: it loads without console errors and the plots are drawn."""
import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from ck_plugins import readpoints, report

from fixtures import build as fixtures

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it with "
                                "apt-get when run as root; otherwise: apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def pixels_vary(png: bytes) -> float:
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    return float(np.asarray(image)[..., :3].std())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report of a synthetic sweep (tests/fixtures/build.py): two models, 12 libs, three batch sizes."""
    repos = fixtures.build(tmp_path_factory.mktemp("fixtures"))
    return report.build(readpoints.load([repos["sweep"]]), tmp_path_factory.mktemp("report"), title="H200 sweep")


def test_report_loads_in_chromium_without_console_errors_and_the_screenshot_is_not_blank(built, tmp_path):
    shot = tmp_path / "shot.png"
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                           f"--screenshot={shot}", built.html_path.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.exists(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == []  # a self-contained page: nothing to fail, nothing logged
    assert pixels_vary(shot.read_bytes()) > 0.05  # text, tables and plots, not a blank page


def test_every_plot_in_the_page_is_an_image_with_content(built, tmp_path):
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          built.html_path.resolve().as_uri()], capture_output=True, text=True, timeout=180).stdout
    images = re.findall(r"src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", dom)
    models = {(m["platform"], m["model"]) for m in built.summary["models"]}
    assert len(images) >= 2 * len(models) + 1  # per-model bars and curves, per-layer bars, the ideal solution
    assert all(pixels_vary(base64.b64decode(data)) > 0.02 for data in images)
    assert "Ideal adaptive solution" in dom and "At a glance" in dom



COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "results" / "nvidia-h200" / "report" / "report.html"
MEASURE = ("<script>document.querySelectorAll('tr').forEach(row => row.setAttribute('data-bottom', "
           "Math.round(row.getBoundingClientRect().bottom)));</script></body>")


def test_the_first_screen_of_the_committed_h200_report_answers_for_resnet50(tmp_path):
    """In a 1280x1000 window the first screen shows ResNet-50's fastest configuration and why fp16 is (not) faster
    than fp32, and no hex id; the screenshot is kept beside the test's files."""
    page = tmp_path / "report.html"
    page.write_text(COMMITTED.read_text().replace("</body>", MEASURE, 1))
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000",
              "--virtual-time-budget=3000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180).stdout
    rows = re.findall(r"<tr data-bottom=\"(\d+)\">(.*?)</tr>", dom, re.S)
    first_screen = [re.sub(r"<[^>]+>", " ", body) for bottom, body in rows if int(bottom) <= 1000]
    resnet = next((text for text in first_screen if re.search(r"\bresnet50\b", text)), None)
    assert resnet is not None, "ResNet-50's row is not on the first screen"
    assert "img/s" in resnet and "at batch" in resnet and "fp16, channels_last" in resnet
    assert "launch-bound" in resnet  # the measured reason, in the console's words
    assert not re.search(r"\b[0-9a-f]{16}\b", " ".join(first_screen)), "a hex id on the first screen"
    shot = tmp_path / "first-screen.png"
    subprocess.run([*common, f"--screenshot={shot}", COMMITTED.as_uri()], capture_output=True, timeout=180)
    assert shot.exists() and pixels_vary(shot.read_bytes()) > 0.05
