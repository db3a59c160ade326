"""Evaluation sets in the layout of the common VPR benchmark downloader.

Layout (gmberton/VPR-datasets-downloader; Pitts30k, MSLS, Tokyo 24/7, ... are all written so)::

    <root>/images/<split>/database/@<UTM_east>@<UTM_north>@<...more fields...>@.jpg
    <root>/images/<split>/queries/@<UTM_east>@<UTM_north>@<...>@.jpg

Only the first two ``@``-separated fields (UTM easting and northing in metres) are read; the
rest (zone, lat/lon, pano id, heading, timestamp; or MSLS's sequence id and city) are kept as
they are. A database image is a positive of a query when their UTM distance is at most
``positive_radius_m`` (25 m by default, as on Pitts30k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tatvpr_hw.data.transforms import IMAGE_SUFFIXES, load_image
from tatvpr_hw.errors import UserError


def format_utm(value_m: float) -> str:
    """UTM coordinate as the downloader writes it: 7 integer digits, 2 decimals ('0584344.31')."""
    return f"{float(value_m):010.2f}"


def vpr_image_name(east_m: float, north_m: float, *fields: str, suffix: str = ".jpg") -> str:
    """``@east@north@field@...@.jpg``."""
    return "@" + "@".join([format_utm(east_m), format_utm(north_m), *map(str, fields)]) + "@" + suffix


def parse_utm(path: str | Path) -> tuple[float, float]:
    """(east_m, north_m) from a ``@east@north@...`` file name; a bad name raises :class:`UserError`."""
    name = Path(path).name
    parts = name.split("@")
    try:
        if len(parts) < 4 or parts[0] != "":
            raise ValueError("not enough '@' fields")
        return float(parts[1]), float(parts[2])
    except ValueError:
        raise UserError(f"{path}: file name does not follow '@UTM_east@UTM_north@...@.jpg'") from None


def list_images(folder: Path) -> list[Path]:
    """Image files of one split folder, sorted by name; missing or empty folder is a :class:`UserError`."""
    if not folder.is_dir():
        raise UserError(f"evaluation folder not found: {folder} (expected <root>/images/<split>/"
                        f"{{database,queries}}/ as written by the VPR datasets downloader)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"empty evaluation split: no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    return files


class ImageListDataset(Dataset):
    """Images of one folder with their UTM positions; an item is (image [3,H,W], index)."""

    def __init__(self, folder: str | Path, img_size: int) -> None:
        self.folder = Path(folder)
        self.img_size = int(img_size)
        self.paths = list_images(self.folder)
        self.utm = np.asarray([parse_utm(p) for p in self.paths], dtype=np.float64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(self.paths[index], self.img_size), int(index)


class VPREvalSet:
    """Database and queries of one split, and the positives of every query.

    Args:
        root: data set root (holds ``images/``).
        img_size: side in px the images are resized to.
        positive_radius_m: a database image within this UTM distance (inclusive) is a positive.
        split: ``test`` (default), ``val`` or ``train``.
    """

    def __init__(self, root: str | Path, img_size: int, positive_radius_m: float = 25.0,
                 split: str = "test") -> None:
        self.root = Path(root)
        if positive_radius_m <= 0:
            raise UserError(f"positive_radius_m must be > 0, got {positive_radius_m}")
        self.positive_radius_m = float(positive_radius_m)
        base = self.root / "images" / split
        if not base.is_dir():
            raise UserError(f"evaluation set folder not found: {base}")
        self.database = ImageListDataset(base / "database", img_size)
        self.queries = ImageListDataset(base / "queries", img_size)
        self._positives = _radius_positives(self.queries.utm, self.database.utm, self.positive_radius_m)

    def positives(self, query_index: int) -> np.ndarray:
        """Sorted database indices within ``positive_radius_m`` of query ``query_index``."""
        return self._positives[query_index]

    @property
    def all_positives(self) -> list[np.ndarray]:
        return list(self._positives)

    def __repr__(self) -> str:
        return (f"VPREvalSet({self.root}, database={len(self.database)}, queries={len(self.queries)}, "
                f"radius={self.positive_radius_m} m)")


def _radius_positives(q_utm: np.ndarray, db_utm: np.ndarray, radius_m: float,
                      chunk: int = 256) -> list[np.ndarray]:
    """For every query, the database indices at euclidean distance <= radius_m (chunked)."""
    out: list[np.ndarray] = []
    r2 = radius_m * radius_m
    for start in range(0, len(q_utm), chunk):
        q = q_utm[start:start + chunk]
        d2 = ((q[:, None, :] - db_utm[None, :, :]) ** 2).sum(-1)
        out.extend(np.flatnonzero(row <= r2) for row in d2)
    return out


def eval_root(data_cfg) -> Path:
    """Evaluation-set root of a :class:`tatvpr_hw.config.DataConfig`."""
    if data_cfg.source == "synthetic":
        return Path(data_cfg.root) / "eval"
    return Path(data_cfg.eval_root)
