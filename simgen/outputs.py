"""One policy for every command that writes: create, replace only our own outputs, atomically.

Every ``--out`` of the three CLIs goes through :func:`check_output` (before any expensive work)
and is written through :func:`staged_output` (directories) or :func:`atomic_path` /
:func:`write_text_atomic` (files):

- an output that does not exist is created (missing parent folders too);
- an existing output *of this project* is replaced only with ``overwrite``, and atomically: the
  new one is written beside it (a hidden temporary sibling) and swapped in only once complete;
  the old one is removed after the swap;
- an existing path that is not one of our outputs (a folder holding other files, ``.``, ``/``,
  the home folder, a plain file where a folder is expected) is never deleted or written into:
  :class:`OutputError` (a ``ValueError``) names the parameter and says why.

Our outputs are recognised by their content: a Zarr store by its root attributes
(``schema_version`` and ``dataset``), every other folder by the marker file :data:`MARKER_NAME`
written into it (a training run also by its ``config.json``), a results file by its first JSON
record. Files are created with the usual permissions (``0666`` less the umask), not the ``0600``
of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MARKER_NAME",
    "OUTPUT_KINDS",
    "OutputError",
    "check_output",
    "is_our_output",
    "staged_output",
    "atomic_path",
    "write_text_atomic",
    "write_marker",
]

logger = logging.getLogger(__name__)

#: File that marks a folder as written by this project (kind and command inside, JSON).
MARKER_NAME = ".aet-output.json"

#: What each kind of output is: a folder replaced whole, a folder resumed, or a file.
OUTPUT_KINDS = {
    "store": "a Zarr store written by simgen",
    "run": "a training run directory written by pann train",
    "predictions": "a folder of predictions written by this project",
    "report": "a leaderboard folder written by aet-bench leaderboard",
    "sweep": "a sweep folder written by aet-bench sweep",
    "demo": "a demo folder written by python -m benchmark.demo",
    "file": "a file",
    "results": "a results file written by aet-bench run",
}
_DIR_KINDS = ("store", "run", "predictions", "report", "sweep", "demo")
_LOCK_NAME = ".generate.lock"  # simgen.engine's lock: a folder holding only it is still empty


class OutputError(FileExistsError, ValueError):
    """An output path that must not be written (a one-line message naming the parameter).

    A ``ValueError`` (bad input) and a ``FileExistsError`` (what callers caught before).
    """


def _is_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
    return isinstance(attrs, dict) and "schema_version" in attrs and "dataset" in attrs


def _marker_kind(path: Path) -> str | None:
    try:
        marker = json.loads((path / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("kind") if isinstance(marker, dict) else None


def _is_run(path: Path) -> bool:
    if _marker_kind(path) == "run":
        return True
    try:  # runs written before the marker existed: our config.json (PannConfig.to_dict)
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"stage1_steps", "sampling", "elements"} <= set(config)


def _is_results(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
        record = json.loads(first) if first.strip() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and (not record or {"method", "index"} <= set(record))


def is_our_output(path: str | Path, kind: str) -> bool:
    """True if ``path`` is an existing output of ``kind`` written by this project."""
    path = Path(path)
    if kind in _DIR_KINDS and not path.is_dir():
        return False
    if kind == "store":
        return _is_store(path)
    if kind == "run":
        return _is_run(path)
    if kind in ("predictions", "report", "sweep", "demo"):
        return _marker_kind(path) == kind
    if kind == "results":
        return path.is_file() and _is_results(path)
    if kind == "file":
        return path.is_file()
    raise ValueError(f"kind={kind!r}: expected one of {sorted(OUTPUT_KINDS)}")


def _protected(path: Path) -> str | None:
    """Why ``path`` can never be an output folder (None if it can)."""
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        return "is the root folder"
    if resolved == Path.home().resolve():
        return "is the home folder"
    if resolved == Path.cwd().resolve():
        return "is the current folder"
    return None


def _check_writable_parent(path: Path, param: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{param}={str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{param}={str(path)!r}: folder {str(parent)!r} is not writable")


def check_output(
    path: str | Path,
    kind: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    param: str = "--out",
) -> str:
    """Check that ``path`` may be written as an output of ``kind``; raise :class:`OutputError` if not.

    Call it before the expensive work. Nothing is created or removed.

    Parameters
    ----------
    path
        The output path.
    kind
        One of :data:`OUTPUT_KINDS`.
    overwrite
        Allow replacing an existing output of this project of the same kind.
    resume
        An existing output of this project of the same kind is continued, not replaced (stores
        of ``simgen generate``, training runs, sweeps); ``overwrite`` is then not needed.
    param
        The parameter named in error messages.

    Returns
    -------
    str
        ``"new"`` (missing or an empty folder), ``"replace"`` or ``"resume"``.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(OUTPUT_KINDS)}")
    path = Path(path)
    text = f"{param}={str(path)!r}"
    if str(path).strip() == "":
        raise OutputError(f"{param}={str(path)!r}: expected a path")
    _check_writable_parent(path, param)
    if not path.exists() and not path.is_symlink():
        return "new"
    is_dir = path.is_dir() and not path.is_symlink()
    if kind in _DIR_KINDS:
        if not is_dir:
            raise OutputError(f"{text}: exists and is not a folder (expected {OUTPUT_KINDS[kind]})")
        reason = _protected(path)
        if reason:
            raise OutputError(
                f"{text}: {reason}; nothing was written or removed (give a new folder)"
            )
        if not any(p.name != _LOCK_NAME for p in path.iterdir()):
            return "new"
        if not is_our_output(path, kind):
            raise OutputError(
                f"{text}: is a folder with other files, not {OUTPUT_KINDS[kind]}; "
                "nothing was written or removed (give a new or empty folder)"
            )
    else:
        if is_dir or not path.is_file():
            raise OutputError(f"{text}: is a folder, expected a file name")
        if not is_our_output(path, kind):
            raise OutputError(
                f"{text}: exists and is not {OUTPUT_KINDS[kind]}; nothing was written (give a new file name)"
            )
    if resume:
        return "resume"
    if not overwrite:
        raise OutputError(f"{text}: already exists (use --overwrite to replace it)")
    if not os.access(path.parent.resolve(), os.W_OK | os.X_OK):
        raise OutputError(f"{text}: folder {str(path.parent)!r} is not writable")
    return "replace"


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def write_marker(folder: str | Path, kind: str, command: str = "") -> None:
    """Mark ``folder`` as an output of ``kind`` written by this project."""
    write_text_atomic(
        Path(folder) / MARKER_NAME,
        json.dumps({"kind": kind, "command": command, "tool": "aet-suite"}) + "\n",
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_output(
    path: str | Path,
    kind: str,
    *,
    overwrite: bool = False,
    param: str = "--out",
    command: str = "",
) -> Iterator[Path]:
    """Write a folder output beside ``path`` and swap it in only when complete.

    Yields the temporary folder to write into. On success an existing output (checked again with
    :func:`check_output`) is moved aside, the new one renamed into place, and the old one removed;
    on any error the temporary folder is removed and ``path`` is untouched. Non-store kinds get the
    marker file :data:`MARKER_NAME`.
    """
    path = Path(path)
    check_output(path, kind, overwrite=overwrite, param=param)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        if kind != "store":
            write_marker(tmp, kind, command)
        state = check_output(path, kind, overwrite=overwrite, param=param)
        old = None
        if state != "new" or path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _create_file(path: Path) -> None:
    """Create an empty file with mode 0666 less the umask (unlike mkstemp's 0600)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffix); rename it onto ``path`` on success.

    The temporary file already exists (empty, normal permissions), so writers that open it for
    writing (``savefig``, ``ase.io.write``, ``torch.save``) keep those permissions.
    """
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
    _create_file(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
