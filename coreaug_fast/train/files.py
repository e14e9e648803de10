"""The files a run and a comparison write, and the rules that keep a user's results safe.

* **Atomic writes.** Every file other than the append-only ``epochs.jsonl`` is written to a
  temporary file in the same folder and moved over the old one with ``os.replace``, so a kill
  (or a full disk) leaves the old file or the new one, never half of one.
* **Run folders.** ``train`` and ``compare`` refuse a folder that already holds files unless
  told what to do with them: ``--resume`` continues (or reuses) the run there, ``--overwrite``
  deletes the old run's files first. ``--overwrite`` deletes only files this package writes;
  a folder holding anything else is refused, so a mistyped ``--out ~`` cannot empty a home
  folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List

from .config import UsageError

#: What one run writes into its folder (``ranks/`` holds one log per data-parallel rank).
RUN_FILES = ("checkpoint.pt", "epochs.jsonl", "summary.json", "ranks")
#: What a comparison writes beside its run folders (one per run, named by ``run_name``).
COMPARE_FILES = ("compare.md", "compare.json", "compare.png")

# Temporary names: ".<final name>.<random>.tmp" (atomic writes) and the write probe; a kill
# can leave either behind, so both count as ours.
_TMP = re.compile(r"^\..+\.tmp$")
PROBE_PREFIX = ".coreaug-write-test-"
_RANK_LOG = re.compile(r"^rank\d+\.jsonl$")


def _ours(entry: Path, names: Iterable[str]) -> bool:
    if entry.name.startswith(PROBE_PREFIX) or _TMP.match(entry.name):
        return True
    if entry.name == "ranks" and entry.is_dir():
        return all(_RANK_LOG.match(p.name) or _TMP.match(p.name) for p in entry.iterdir())
    return entry.name in names and not entry.is_dir()


def _is_run_folder(entry: Path) -> bool:
    return entry.is_dir() and not entry.is_symlink() and all(_ours(p, RUN_FILES) for p in entry.iterdir())


def contents(folder: Path) -> List[Path]:
    """The entries of ``folder`` other than write probes (another rank's may be there for a
    moment); empty when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(PROBE_PREFIX))


def _listing(entries: List[Path], limit: int = 4) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_folder(folder: Path, *, resume: bool, overwrite: bool, compare: bool = False) -> None:
    """Refuse (UsageError) to start in a folder that holds files, unless ``resume`` or
    ``overwrite``; with ``overwrite``, refuse a folder holding anything this package does not
    write. Reads only: safe on every rank before any of them writes."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other (continue the run there, or replace it)")
    entries = contents(folder)
    if not entries or resume:
        return
    what = "comparison" if compare else "run"
    if not overwrite:
        raise UsageError(f"--out {folder} is not empty ({_listing(entries)}): continue the {what} there with "
                         f"--resume, replace it with --overwrite, or choose another folder")
    foreign = [p for p in entries if not _replaceable(p, compare)]
    if foreign:
        raise UsageError(f"--overwrite: --out {folder} holds files coreaug-train did not write "
                         f"({_listing(foreign)}); refusing to delete them: choose another folder")


def _replaceable(entry: Path, compare: bool) -> bool:
    if compare:
        return _ours(entry, COMPARE_FILES) or _is_run_folder(entry)
    return _ours(entry, RUN_FILES)


def clear_folder(folder: Path, *, compare: bool = False) -> None:
    """Delete the files of an old run (or comparison) in ``folder``: only entries that
    :func:`check_folder` accepted for ``--overwrite``; anything else is left alone."""
    for p in contents(folder):
        if not _replaceable(p, compare):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def check_writable(folder: Path, keep: bool = True) -> None:
    """Create ``folder`` and write and delete a probe in it (UsageError naming ``--out`` when
    that fails). The folders it had to create are removed again when the probe fails, and
    also when it succeeds unless ``keep``: a refused run leaves no trace. The probe's name is
    unique, so data-parallel ranks probing one folder at once never delete each other's."""
    folder, created = Path(folder), []
    p = folder
    while not p.exists() and p != p.parent:
        created.append(p)  # innermost first
        p = p.parent
    ok = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
        ok = True
    except OSError as e:
        raise UsageError(f"--out {folder}: cannot write there ({e.strerror or e})") from None
    finally:
        if not (ok and keep):
            for d in created:
                try:
                    d.rmdir()
                except OSError:
                    pass


def replace_atomically(path: Path, write) -> None:
    """Call ``write(f)`` on a fresh temporary file beside ``path`` (binary mode), flush it to
    disk and move it over ``path``; on any error the temporary file is removed and ``path``
    is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp's files are private (0600): give the result the mode open() would
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    try:  # Linux states it; setting it to read it would race with other threads' files
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o22)
        os.umask(mask)
        return mask


def write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")
