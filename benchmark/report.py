"""Results pages generated from results files: ``aet-bench report RESULTS... --out docs/results``.

The results files of ``aet-bench run`` (``RESULTS.jsonl``) given become one leaderboard page
(``leaderboard.md``: the methods side by side), each folder of ``aet-bench sweep`` a dose-sweep page
(the sweep table, the paired table and the claim check the sweep wrote, and its plot). Every page
is stamped with the command that made it, the git commit of the code, the aet-suite version and
the sha256 of every dataset its records were scored on, so a number on a page can be traced to
the data and code that printed it. ``index.md`` lists the pages.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["write_report", "git_commit"]

logger = logging.getLogger(__name__)


def git_commit(cwd=None) -> str:
    """The commit of the checkout at ``cwd`` (``+dirty`` with uncommitted changes), or ``"unknown"``."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if status else "")


def _slug(path: Path) -> str:
    name = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "results"


def _stamp(command: str, records, version: str, commit: str) -> list[str]:
    digests = sorted(
        {(str(r.get("dataset", "")), str(r.get("dataset_sha256") or "")) for r in records}
    )
    lines = [
        "```text",
        f"command:  {command}",
        f"commit:   {commit}",
        f"version:  aet-suite {version}",
    ]
    for name, digest in digests:
        lines.append(f"dataset:  {name or '?'} sha256 {digest or 'not recorded'}")
    lines += ["```", ""]
    return lines


def _csv_table(path: Path) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header, body = rows[0], rows[1:]

    def cell(text):
        try:
            value = float(text)
        except ValueError:
            return text
        return f"{value:.4g}"

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return out + [""]


def _demote(markdown: str) -> str:
    """Headings one level down (the page has its own title)."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def _leaderboard_page(records, figures: Path, slug: str, title: str) -> list[str]:
    from benchmark.leaderboard import write_leaderboard

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_leaderboard(records, Path(tmp) / "lb", title=title)
        md = Path(paths["md"]).read_text()
        shutil.copy(paths["png"], figures / f"{slug}.png")
    body = _demote(md).splitlines()
    if body and body[0].startswith("## "):
        body = body[1:]  # the page's title replaces the leaderboard's
    return [*body, "", f"![{title}](figures/{slug}.png)", ""]


def _sweep_page(folder: Path, figures: Path, slug: str) -> list[str]:
    lines = ["## Metrics against dose", "", "Mean and standard deviation over particles.", ""]
    lines += _csv_table(folder / "sweep.csv")
    if (folder / "sweep.png").exists():
        shutil.copy(folder / "sweep.png", figures / f"{slug}.png")
        lines += [f"![dose sweep](figures/{slug}.png)", ""]
    for name, heading in (("paired.md", "Paired comparison"), ("claim.md", "Claim check")):
        if (folder / name).exists():
            lines += [f"## {heading}", "", _demote(_demote((folder / name).read_text())), ""]
    if (folder / "sweep_paired.png").exists():
        shutil.copy(folder / "sweep_paired.png", figures / f"{slug}-paired.png")
        lines += [f"![paired comparison](figures/{slug}-paired.png)", ""]
    return lines


def write_report(
    inputs, out_dir, *, command: str = "aet-bench report", overwrite: bool = False,
    param: str = "out_dir",
) -> list[Path]:
    """Write the results pages into ``out_dir`` (plus ``index.md`` and ``figures/``).

    Parameters
    ----------
    inputs
        ``aet-bench run`` results files (``.jsonl``; all on one leaderboard page) and
        ``aet-bench sweep`` folders (one page each).
    out_dir
        A new or empty folder, or one written by this function before (replaced only with
        ``overwrite``); written beside and swapped in complete.
    command
        The command line stamped on every page.

    Returns
    -------
    list of Path
        The pages written (``index.md`` first).
    """
    from benchmark import __version__
    from benchmark.runner import read_results
    from simgen.tools.outputs import check_output, staged_output

    check_output(out_dir, "report", overwrite=overwrite, param=param)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("RESULTS: expected one or more results files or sweep folders")
    loaded = []
    files = [p for p in inputs if not p.is_dir()]
    if files:  # every results file on one leaderboard: the methods side by side
        records = read_results(files)  # a one-line error for a missing or bad file
        if not records:
            raise ValueError(f"RESULTS={', '.join(map(str, files))!r}: no records")
        loaded.append((files, "leaderboard", records, "leaderboard"))
    slugs = {"leaderboard", "index"}
    for path in (p for p in inputs if p.is_dir()):
        if not (path / "sweep.csv").exists():
            raise ValueError(
                f"RESULTS={str(path)!r}: a folder without sweep.csv; expected a results file "
                "of aet-bench run or a folder of aet-bench sweep"
            )
        records = read_results(sorted(path.glob("results_*.jsonl")))
        slug = _slug(path)
        while slug in slugs:
            slug += "-2"
        slugs.add(slug)
        loaded.append(([path], "sweep", records, slug))
    commit = git_commit()
    final = Path(out_dir)
    with staged_output(final, "report", overwrite=overwrite, param=param,
                       command="aet-bench report") as tmp:
        figures = tmp / "figures"
        figures.mkdir()
        index = ["# Results", "", "Generated by `aet-bench report`; do not edit by hand.", ""]
        index += ["```{toctree}", ":maxdepth: 1", ""]
        for paths, kind, records, slug in loaded:
            datasets = ", ".join(sorted({str(r.get("dataset", "?")) for r in records}))
            title = f"{'Dose sweep' if kind == 'sweep' else 'Leaderboard'}: {datasets}"
            page = [f"# {title}", ""]
            page += _stamp(command, records, __version__, commit)
            names = ", ".join(f"`{p.name}`" for p in paths)
            page += [f"Source: {names} ({len(records)} records).", ""]
            if kind == "sweep":
                page += _sweep_page(paths[0], figures, slug)
            else:
                page += _leaderboard_page(records, figures, slug, title)
            (tmp / f"{slug}.md").write_text("\n".join(page).rstrip() + "\n")
            index.append(slug)
        index += ["```", ""]
        (tmp / "index.md").write_text("\n".join(index))
    return [final / "index.md", *(final / f"{slug}.md" for *_, slug in loaded)]
