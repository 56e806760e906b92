"""The documentation: the README's limits, no paths outside the repository, the site builds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _doc_files():
    files = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "CONTRIBUTING.md"]
    for path in (REPO / "docs").rglob("*"):
        parts = path.relative_to(REPO / "docs").parts
        if path.is_file() and path.suffix in (".md", ".py", ".yaml") and parts[0] not in ("_build", "notes"):
            files.append(path)
    return files


def test_readme_is_short_and_links_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to a missing {target}"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_no_path_outside_the_repository_in_the_docs():
    outside = re.compile(r"/work/|\.\./shared|DESIGN\.md")
    for path in _doc_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not outside.search(line), f"{path.relative_to(REPO)}:{n}: {line.strip()}"


@pytest.mark.parametrize("module", ["simgen.cli", "models.cli", "benchmark.cli"])
def test_version_flag(module):
    from benchmark import __version__

    out = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.strip().endswith(__version__)


@pytest.mark.slow  # a full Sphinx build with autodoc (imports every documented module)
def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(REPO / "docs"), str(out), "-d", str(tmp_path / "doctrees")],
        capture_output=True,
        text=True,
        env={**os.environ, "AET_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    pages = [p for p in out.rglob("*.html") if "_modules" not in p.parts]
    assert len(pages) >= 10 + 1
    assert "benchmark.results_schema.validate_record" in (out / "api.html").read_text()
    for name in ("01-regenerate", "02-leaderboard", "03-dose-sweep", "04-experimental", "05-train"):
        assert (out / "tutorials" / f"{name}.html").exists()


def test_results_records_page_lists_every_field():
    from benchmark.results_schema import FIELDS

    text = (REPO / "docs" / "concepts" / "results-records.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M)
    assert listed == list(FIELDS)
