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

Our outputs are recognised by what this project recorded when it wrote them, never by a file
name or suffix: a Zarr store by its root attributes (``schema_version`` and ``dataset``), every
other folder by the marker file :data:`MARKER_NAME` written into it (a training run also by its
``config.json``), a results file by its first JSON record, and any other file by its entry in the
folder's provenance record :data:`PROVENANCE_NAME` (name and sha256 of every file written through
:func:`atomic_path`): a file the user made, or changed after we wrote it, is not ours. Replacing a
folder output checks its contents too: a file a user put inside (one the store layout, the
folder's marker or the provenance record does not account for) makes the command refuse, naming
it. A store that a live ``simgen generate`` holds (its lock file) is never replaced. Files are
created with the usual permissions (``0666`` less the umask), not the ``0600`` of
:func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MARKER_NAME",
    "PROVENANCE_NAME",
    "OUTPUT_KINDS",
    "OutputError",
    "check_output",
    "is_our_output",
    "staged_output",
    "atomic_path",
    "write_text_atomic",
    "write_marker",
    "record_file",
    "foreign_files",
    "lock_holder",
    "hold_lock",
]

logger = logging.getLogger(__name__)

#: File that marks a folder as written by this project (kind and command inside, JSON).
MARKER_NAME = ".aet-output.json"

#: File in a folder that records the files this project wrote there (name -> sha256, command).
PROVENANCE_NAME = ".aet-outputs.json"

#: What each kind of output is: a folder replaced whole, a folder resumed, or a file.
OUTPUT_KINDS = {
    "store": "a Zarr store written by simgen",
    "run": "a training run directory written by pann train",
    "predictions": "a folder of predictions written by this project",
    "report": "a leaderboard folder written by aet-bench leaderboard",
    "sweep": "a sweep folder written by aet-bench sweep",
    "demo": "a demo folder written by python -m benchmark.demo",
    "file": "a file written by this project",
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_provenance(folder: Path) -> dict:
    try:
        record = json.loads((folder / PROVENANCE_NAME).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    files = record.get("files") if isinstance(record, dict) else None
    return files if isinstance(files, dict) else {}


def _recorded(path: Path) -> bool:
    """True if ``path`` is recorded in its folder's provenance with its current content."""
    entry = _read_provenance(path.parent).get(path.name)
    if not isinstance(entry, dict):
        return False
    try:
        return entry.get("sha256") == _sha256_file(path)
    except OSError:
        return False


def record_file(path: str | Path, command: str = "") -> None:
    """Record ``path`` (written by this project) in its folder's :data:`PROVENANCE_NAME`.

    The record is read, updated and rewritten under an exclusive ``flock``, so writers in
    several processes do not lose each other's entries. Best effort: a folder where the record
    cannot be written leaves the file unrecorded (it is then treated as the user's, the safe
    side: ``--overwrite`` refuses it).
    """
    path = Path(path)
    record_path = path.parent / PROVENANCE_NAME
    try:
        entry = {"sha256": _sha256_file(path), "command": command, "tool": "aet-suite"}
        fd = os.open(record_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        logger.debug("%s: provenance not recorded (%s)", path, exc)
        return
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network filesystems)
            pass
        try:
            record = json.loads(handle.read() or "{}")
        except ValueError:
            record = {}
        files = record.get("files") if isinstance(record, dict) else None
        files = files if isinstance(files, dict) else {}
        files[path.name] = entry
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"tool": "aet-suite", "files": files}, indent=0) + "\n")
        handle.flush()


def _store_owns(rel: Path, root: Path) -> bool:
    """True if ``rel`` (relative to a store ``root``) is part of the Zarr layout we write."""
    parts = rel.parts
    if rel.name in ("zarr.json", MARKER_NAME, PROVENANCE_NAME):
        return True
    if len(parts) == 1 and (parts[0] in ("manifest.json", _LOCK_NAME) or parts[0].startswith(".")):
        return True  # the manifest, the lock, and temporary siblings of our atomic writes
    # A chunk: below the "c" folder of an array (a folder whose zarr.json is an array's).
    for k, part in enumerate(parts[:-1]):
        if part == "c" and k > 0:
            try:
                meta = json.loads((root.joinpath(*parts[:k]) / "zarr.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("node_type") == "array":
                return True
    return False


def foreign_files(path: str | Path, kind: str, limit: int = 5) -> list[str]:
    """Files inside the folder output ``path`` that this project did not write (up to ``limit``).

    A store's files are its Zarr layout (``zarr.json``, chunks under each array's ``c/``), the
    manifest and the lock; another folder's are those its marker lists (written when the folder
    was staged) or its provenance records. A folder whose marker lists no files (written before
    the list was kept, or resumed in place) only has its provenance record to go by.
    """
    path = Path(path)
    listed = None
    if kind != "store":
        try:
            marker = json.loads((path / MARKER_NAME).read_text())
            listed = set(marker.get("files")) if isinstance(marker.get("files"), list) else None
        except (OSError, ValueError, TypeError, AttributeError):
            listed = None
        if listed is None:
            return []
    found = []
    for dirpath, _, filenames in os.walk(path):
        folder = Path(dirpath)
        recorded = None
        for name in sorted(filenames):
            rel = (folder / name).relative_to(path)
            if kind == "store":
                owned = _store_owns(rel, path)
            else:
                owned = rel.as_posix() in listed or name in (MARKER_NAME, PROVENANCE_NAME)
            if not owned:
                if recorded is None:
                    recorded = _read_provenance(folder)
                owned = name in recorded and _recorded(folder / name)
            if not owned:
                found.append(rel.as_posix())
                if len(found) >= limit:
                    return found
    return found


def lock_holder(path: str | Path) -> dict | None:
    """The live holder (pid, host) of the writer lock in folder ``path``, or None.

    The lock is ``simgen generate``'s (``STORE/.generate.lock``, :func:`hold_lock` writes the same
    format). A lock of a dead process on this host is stale (None); one from another host is
    taken as live (its process cannot be checked from here).
    """
    return _live_holder(Path(path) / _LOCK_NAME)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or not holder:
        return {"pid": None, "host": "?"}  # being written right now
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid):
        return None
    return holder


@contextlib.contextmanager
def hold_lock(lock: str | Path, what: str) -> Iterator[Path]:
    """Hold the exclusive lock file ``lock`` (pid and host inside) while the block runs.

    A stale lock (its process on this host is gone) is taken over. Raises :class:`OutputError`
    naming ``what`` (e.g. ``"--out='r.jsonl'"``) and the holder if a live process holds it.
    """
    lock = Path(lock)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for attempt in range(20):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _live_holder(lock)
            if holder is None:
                lock.unlink(missing_ok=True)
                continue
            if holder.get("pid") is None and attempt < 19:
                time.sleep(0.1)
                continue
            raise OutputError(
                f"{what}: another command is writing it (pid {holder.get('pid')} on "
                f"{holder.get('host')}, lock {str(lock)!r}); wait for it to finish"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise OutputError(f"{what}: could not take the lock {str(lock)!r}")
    try:
        yield lock
    finally:
        try:
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            pass


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
        return path.is_file() and _recorded(path)
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
        holder = lock_holder(path)
        if holder is not None and not resume:
            raise OutputError(
                f"{text}: a running simgen generate is writing it (pid {holder.get('pid')} on "
                f"{holder.get('host')}); nothing was written or removed (wait for it, or give "
                "another folder)"
            )
        if overwrite and not resume:
            foreign = foreign_files(path, kind)
            if foreign:
                raise OutputError(
                    f"{text}: holds {', '.join(repr(f) for f in foreign)}, not written by this "
                    "project; nothing was written or removed (move it out, or give another folder)"
                )
    else:
        if is_dir or not path.is_file():
            raise OutputError(f"{text}: is a folder, expected a file name")
        if not is_our_output(path, kind):
            why = (
                "exists and was not written by this project (or was changed since)"
                if kind == "file"
                else f"exists and is not {OUTPUT_KINDS[kind]}"
            )
            raise OutputError(f"{text}: {why}; nothing was written (give a new file name)")
    if resume:
        return "resume"
    if not overwrite:
        raise OutputError(f"{text}: already exists (use --overwrite to replace it)")
    if not os.access(path.parent.resolve(), os.W_OK | os.X_OK):
        raise OutputError(f"{text}: folder {str(path.parent)!r} is not writable")
    return "replace"


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def write_marker(
    folder: str | Path, kind: str, command: str = "", files: list[str] | None = None
) -> None:
    """Mark ``folder`` as an output of ``kind`` written by this project.

    ``files``: the folder's files (relative, ``/``-separated) when it is complete (staged
    outputs); replacing it later refuses if it holds any other file.
    """
    record = {"kind": kind, "command": command, "tool": "aet-suite"}
    if files is not None:
        record["files"] = sorted(files)
    write_text_atomic(Path(folder) / MARKER_NAME, json.dumps(record) + "\n")


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
    keep: Path | None = None,
) -> Iterator[Path]:
    """Write a folder output beside ``path`` and swap it in only when complete.

    Yields the temporary folder to write into. On success an existing output (checked again with
    :func:`check_output`) is moved aside, the new one renamed into place, and the old one removed;
    on any error the temporary folder is removed and ``path`` is untouched. Non-store kinds get the
    marker file :data:`MARKER_NAME`.

    With ``keep`` (a hidden folder the caller owns, beside ``path``) that folder is the staging
    folder: created if missing, reused if present, and kept on error so that a rerun can continue
    from what it holds (``aet-bench run --models`` after Ctrl-C).
    """
    path = Path(path)
    check_output(path, kind, overwrite=overwrite, param=param)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep is not None:
        tmp = Path(keep)
        tmp.mkdir(exist_ok=True)
    else:
        tmp = _sibling(path, "tmp")
        tmp.mkdir()
    try:
        yield tmp
        if kind != "store":
            files = [
                (Path(d) / f).relative_to(tmp).as_posix()
                for d, _, names in os.walk(tmp)
                for f in names
            ]
            write_marker(tmp, kind, command, files=files)
        state = check_output(path, kind, overwrite=overwrite, param=param)
        old = None
        if state != "new" or path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _create_file(path: Path) -> None:
    """Create an empty file with mode 0666 less the umask (unlike mkstemp's 0600)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, record: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffix); rename it onto ``path`` on success.

    The temporary file already exists (empty, normal permissions), so writers that open it for
    writing (``savefig``, ``ase.io.write``, ``torch.save``) keep those permissions. With
    ``record`` (every ``--out`` file of kind ``"file"``) the file is then recorded as ours
    (:func:`record_file`), so a later ``--overwrite`` may replace it, and only it.
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
    if record:
        record_file(path)


def write_text_atomic(
    path: str | Path, text: str, encoding: str = "utf-8", *, record: bool = False
) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (see :func:`atomic_path`)."""
    with atomic_path(path, record=record) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
