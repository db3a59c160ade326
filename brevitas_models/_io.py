"""Atomic file writes of the models (checkpoints): a reader never sees a half-written file.

Private to ``brevitas_models`` (``tatvpr_hw.io`` and ``sim.atomic`` do the same for the flow
and the simulator; the models import neither).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from brevitas_models.errors import ModelInputError


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode of a new file made by ``open(path, "w")``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise :class:`ModelInputError` when ``path`` cannot become a file: it is a folder, or one
    of its parents is a file."""
    path = Path(path)
    if path.is_dir():
        raise ModelInputError(f"output {path} is an existing folder; allowed: a file path (its folder is created)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ModelInputError(f"output {path}: {parent} is a file, not a folder; "
                                      "allowed: a path under a folder")
            break
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600; the result gets the mode any new file would
            os.chmod(tmp_path, _umask_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)
