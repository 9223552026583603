"""Atomic file output: a reader never sees a half-written file, and a crash leaves the old file intact.

Every writer goes to a temporary file in the destination directory (same file system), which is
then moved over the destination with ``os.replace`` (atomic on POSIX and Windows).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = atomic_write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_save_npy", "atomic_save_torch", "atomic_write", "atomic_write_text", "git_revision"]


def atomic_write(path: str | os.PathLike, writer_fn: Callable[[Path], Any]) -> Path:
    """Call ``writer_fn(tmp_path)`` on a temporary path next to ``path``, then move it onto ``path``.

    The temporary name keeps ``path``'s suffix, so writers that infer the format from the
    extension (``np.save``, ``matplotlib.savefig``, ``h5py``) behave as for ``path``. The parent
    directory must exist. On any error the temporary file is removed and ``path`` is untouched.
    Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist (cannot write {path.name})")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer_fn(tmp_path)
        if not tmp_path.exists():
            raise RuntimeError(f"writer for {path} did not create its temporary file {tmp_path}")
        # mkstemp creates 0600: give the file the mode a plain open() would (or the old file's).
        os.chmod(tmp_path, _target_mode(path))
        with open(tmp_path, "rb") as f:  # durable before it becomes visible
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _target_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding=encoding))


def atomic_save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (load it back with ``torch.load(path, weights_only=True)``)."""
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def atomic_save_npy(array: Any, path: str | os.PathLike) -> Path:
    """``numpy.save(path, array)`` atomically; ``path`` should end in ``.npy``."""
    import numpy as np

    def _write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.save then never appends its own ".npy"
            np.save(f, np.asarray(array))

    return atomic_write(path, _write)


def git_revision(*, mark_dirty: bool = False) -> str | None:
    """The repository's ``HEAD`` commit (with ``+dirty`` for uncommitted changes to tracked files when
    ``mark_dirty``), for provenance records; ``None`` outside a git checkout or without git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        rev = out.stdout.strip() if out.returncode == 0 else ""
        if not rev:
            return None
        if mark_dirty:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                rev += "+dirty"
        return rev
    except (OSError, subprocess.SubprocessError):
        return None
