"""Every tutorial runs: the shell blocks of docs/tutorials/*.md, executed as written.

Each page's ```bash blocks run in order, in one shell (variables carry over), with ``set -euo
pipefail``, in a fresh folder that holds links to the checkout's ``docs/``, ``datasets.yaml`` and
``examples/`` — as a reader runs them from the root of a clone. A block right after a
``<!-- not-run: why -->`` comment is skipped (the comment says where that path is tested). A
renamed flag or a changed output file name fails here, not for the reader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("[0-9][0-9]-*.md"))
_BLOCK = re.compile(r"(<!--\s*not-run:.*?-->\s*\n)?```bash\n(.*?)```", re.S)


def shell_blocks(page: Path) -> list[str]:
    """The ```bash blocks of ``page`` that are meant to run (not after a not-run comment)."""
    return [m.group(2) for m in _BLOCK.finditer(page.read_text()) if not m.group(1)]


def test_every_tutorial_has_commands_and_the_index_lists_it():
    index = (REPO / "docs" / "tutorials" / "index.md").read_text()
    assert len(TUTORIALS) == 5
    for page in TUTORIALS:
        assert page.stem in index
        assert shell_blocks(page), f"{page.name}: no bash block to run"


def test_not_run_blocks_say_why():
    for page in TUTORIALS:
        for match in re.finditer(r"<!--\s*not-run:(.*?)-->", page.read_text(), re.S):
            assert "test" in match.group(1), f"{page.name}: a not-run block must say where it is tested"


def _run_page(page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    for name in ("docs", "datasets.yaml", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    script = "set -euo pipefail\n" + "\n".join(shell_blocks(page))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AET_PROGRESS": "0",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )


@pytest.mark.slow  # generation, Dask clusters, PANN inference and training at tiny sizes
@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(page, tmp_path):
    result = _run_page(page, tmp_path)
    assert result.returncode == 0, (
        f"{page.name} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    # What the page tells the reader to expect.
    out = result.stdout
    if page.stem.startswith("01"):
        assert "samples: 6" in out
        digests = re.findall(r"dataset sha256: ([0-9a-f]{64})", out)
        assert len(set(digests)) == 1 and len(digests) >= 3  # slice, cluster and local agree
    if page.stem.startswith("02"):
        assert "my-method" in (tmp_path / "leaderboard" / "leaderboard.md").read_text()
        assert "schema 1 ok: my-method" in out
    if page.stem.startswith("03"):
        assert (tmp_path / "sweep" / "sweep.png").exists()
        rows = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[1:]
        doses = {line.split(",")[1] for line in rows}
        assert len(doses) == 3  # --limit 1 per dose covers every dose
        assert "sha256" in (tmp_path / "report" / "sweep-mine.md").read_text()
    if page.stem.startswith("04"):
        assert list((tmp_path / "my-atoms").glob("*.xyz"))
        assert (tmp_path / "my_volume_atoms.xyz").exists()
    if page.stem.startswith("05"):
        assert (tmp_path / "my-run" / "pann.pt").exists()


def test_a_renamed_flag_fails_the_runner(tmp_path):
    """The runner really runs the commands: a block with a flag that does not exist fails."""
    page = tmp_path / "99-broken.md"
    page.write_text("```bash\naet-bench run --methd classical --data x --out y\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    result = _run_page(page, work)
    assert result.returncode == 2 and "--method" in result.stderr


_PARSERS = {"simgen": "simgen.cli", "pann": "models.cli", "aet-bench": "benchmark.cli"}


def _commands(text: str) -> list[list[str]]:
    """The simgen/pann/aet-bench command lines of the ```bash blocks of ``text``."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|;|\|", line):
                if part.split()[:1] and part.split()[0] in _PARSERS:
                    commands.append(shlex.split(part))
    return commands


@pytest.mark.parametrize(
    "page", ["README.md", "docs/cli.md", "docs/install.md", *[str(p.relative_to(REPO)) for p in TUTORIALS]]
)
def test_every_documented_command_parses(page, capsys):
    """Commands shown but not run (README tour, not-run blocks) still parse with today's flags."""
    import importlib

    commands = _commands((REPO / page).read_text())
    if page == "README.md":
        assert len(commands) >= 15
    for words in commands:
        parser = importlib.import_module(_PARSERS[words[0]])._build_parser()
        argv = [w for w in words[1:] if w != "--debug"]
        # "--tilt -60:60:13": a negative value joined to its flag, as the CLIs do before parsing.
        for k in range(len(argv) - 1, 0, -1):
            if re.match(r"-\d", argv[k]) and argv[k - 1].startswith("--"):
                argv[k - 1 : k + 1] = [f"{argv[k - 1]}={argv[k]}"]
        if argv in (["--version"], []):
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            message = capsys.readouterr().err.strip().splitlines()[-1:]
            assert exc.code == 0, f"{page}: {' '.join(words)}: {message}"
