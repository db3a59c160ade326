"""Atomic output files of the simulator (trace, sweep tables, reports): a reader never sees a
half-written file, and the file gets the mode a plain ``open(path, "w")`` would give it.

(``tatvpr_hw.io`` does the same for the flow; ``sim`` never imports ``tatvpr_hw``.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from sim.errors import SimInputError


def umask_mode() -> int:
    """0o666 minus the process umask: the mode of a new file made by ``open(path, "w")``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing parent of ``path`` must be a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SimInputError(f"{what} {path}: {parent} is a file, not a folder; "
                                    "allowed: a path under a folder")
            break


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise :class:`SimInputError` when ``path`` cannot become a file: it is a folder, or one of
    its parents is a file."""
    path = Path(path)
    if path.is_dir():
        raise SimInputError(f"{what} {path} is an existing folder; allowed: a file path (its folder is created)")
    _check_parents(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise :class:`SimInputError` when ``path`` cannot be (or become) a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SimInputError(f"{what} {path} is a file; allowed: a folder (created if missing)")
    _check_parents(path, what)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], what: str = "output") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = check_output_path(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
