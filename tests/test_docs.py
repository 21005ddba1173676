"""Figures in the docs come from the committed summaries: `python -m ck_plugins docs` writes them between marked
lines, and a committed document that differs from what it writes fails here."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ck_plugins import docfigures

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_figure_in_the_docs_is_what_the_summaries_give():
    rendered = docfigures.render(ROOT)
    assert rendered, "no figures block found in README.md or docs/"
    differ = [str(p.relative_to(ROOT)) for p, text in rendered.items() if p.read_text() != text]
    assert not differ, f"{differ} differ from the committed summaries: run `python -m ck_plugins docs`"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copy(ROOT / "README.md", root / "README.md")
    return root


def test_a_figure_typed_over_is_found_and_written_back(tmp_path):
    root = _copy(tmp_path)
    doc = root / "docs" / "analysis.md"
    doc.write_text(doc.read_text().replace("| fastest lib | nvidia-cudnn |", "| fastest lib | cpu |", 1))
    assert docfigures.run(root, check=True) == [doc]
    assert docfigures.run(root, check=False) == [doc] and docfigures.run(root, check=True) == []
    assert "| fastest lib | nvidia-cudnn |" in doc.read_text()


def test_an_unknown_block_is_refused_by_name(tmp_path):
    root = _copy(tmp_path)
    (root / "docs" / "extra.md").write_text("<!-- figures: no-such-block -->\n<!-- /figures: no-such-block -->\n")
    with pytest.raises(ValueError, match="'no-such-block'; expected one of gtx1080-headline"):
        docfigures.render(root)


def test_the_docs_command_checks_the_checkout():
    done = subprocess.run([sys.executable, "-m", "ck_plugins", "docs", "--check"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "up to date" in done.stdout, done.stdout + done.stderr
