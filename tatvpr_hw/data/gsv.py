"""GSV-Cities training data in its released layout, and the P x K place batches.

Layout (as released by the GSV-Cities authors)::

    <root>/Dataframes/<City>.csv     columns: place_id, year, month, northdeg, city_id, lat, lon, panoid
    <root>/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

``lat`` and ``lon`` in the file name are the CSV numbers written back as Python floats
(``str(float(x))``), which is how the reference loader rebuilds the name; the name is never
parsed (pano ids may contain ``_``). Extra CSV columns (such as a saved index) are ignored.

Several cities are merged by giving every (city, place_id) pair its own dense label, so place
13 of London and place 13 of Boston never collide. A place with fewer than K images is
dropped, as in the reference (``min_img_per_place = K``).

One item of :class:`GSVCitiesDataset` is one place: K of its images ``[K, 3, H, W]`` and the
place label repeated ``[K]``. :class:`PlaceSampler` shuffles places and hands each item its own
seed, so the K images drawn for a place depend only on (seed, epoch, position in the epoch):
the same seed gives the same batches, with any number of workers and after a resume.
:func:`make_train_loader` collates P places into ``[P*K, 3, H, W]`` and ``[P*K]``.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tatvpr_hw.data.transforms import load_image
from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")


def gsv_image_name(city_id: str, place_id: int, year: int, month: int, northdeg: int | str,
                   lat: float | str, lon: float | str, panoid: str) -> str:
    """File name of one GSV-Cities image (the released naming)."""
    return (f"{city_id}_{int(place_id):07d}_{int(year):04d}_{int(month):02d}_{str(northdeg).zfill(3)}_"
            f"{float(lat)!s}_{float(lon)!s}_{panoid}.jpg")


@dataclass(frozen=True)
class GSVImage:
    city_id: str
    place_id: int
    year: int
    month: int
    northdeg: str
    lat: float
    lon: float
    panoid: str

    @property
    def name(self) -> str:
        return gsv_image_name(self.city_id, self.place_id, self.year, self.month, self.northdeg,
                              self.lat, self.lon, self.panoid)


def _int_text(value: str) -> str:
    """'90' -> '90', '90.0' -> '90' (pandas writes integer columns either way)."""
    f = float(value)
    return str(int(f)) if f.is_integer() else str(f)


def read_city_csv(path: Path) -> list[GSVImage]:
    """Rows of one ``Dataframes/<City>.csv``; a missing column or bad value names the file and row."""
    if not path.is_file():
        raise UserError(f"GSV-Cities dataframe not found: {path}")
    rows: list[GSVImage] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing}; a GSV-Cities dataframe needs "
                            f"{list(CSV_COLUMNS)}, found {header}")
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(GSVImage(
                    city_id=row["city_id"].strip(), place_id=int(_int_text(row["place_id"])),
                    year=int(_int_text(row["year"])), month=int(_int_text(row["month"])),
                    northdeg=_int_text(row["northdeg"]), lat=float(row["lat"]), lon=float(row["lon"]),
                    panoid=row["panoid"].strip()))
            except (TypeError, ValueError) as err:
                raise UserError(f"{path}:{line}: bad value in row {row}: {err}") from None
    return rows


def list_cities(root: Path) -> list[str]:
    """City names with a dataframe under ``root/Dataframes``, sorted."""
    frames = Path(root) / "Dataframes"
    if not frames.is_dir():
        raise UserError(f"GSV-Cities folder not found: {frames} (expected <root>/Dataframes/<City>.csv "
                        f"and <root>/Images/<City>/)")
    return sorted(p.stem for p in frames.glob("*.csv"))


class GSVCitiesDataset(Dataset):
    """Places of one or more GSV-Cities cities; an item is K images of one place.

    Args:
        root: folder holding ``Dataframes/`` and ``Images/``.
        cities: city names (CSV stems); empty or None = every city found.
        img_size: side in px the images are resized to.
        images_per_place: K, images returned per place; places with fewer are dropped.
        train: True draws K images at random (seeded, see :class:`PlaceSampler`);
            False always returns the K most recent images (year, month) of the place.
        seed: seed used when an item is fetched by a plain integer index.
    """

    def __init__(self, root: str | Path, cities: Sequence[str] | None, img_size: int,
                 images_per_place: int = 4, train: bool = True, seed: int = 0) -> None:
        self.root = Path(root)
        self.img_size = int(img_size)
        self.images_per_place = int(images_per_place)
        self.train = train
        self.seed = int(seed)
        if self.images_per_place < 1:
            raise UserError(f"images_per_place must be >= 1, got {images_per_place}")
        found = list_cities(self.root)
        self.cities = list(cities) if cities else found
        if not self.cities:
            raise UserError(f"no city dataframes (*.csv) in {self.root / 'Dataframes'}")
        unknown = [c for c in self.cities if c not in found]
        if unknown:
            raise UserError(f"GSV-Cities city {unknown} not found in {self.root / 'Dataframes'}; "
                            f"available: {found}")

        self.places: list[list[GSVImage]] = []   # dense label -> images of that place
        self.place_keys: list[tuple[str, int]] = []
        dropped = 0
        for city in self.cities:
            rows = read_city_csv(self.root / "Dataframes" / f"{city}.csv")
            if not rows:
                raise UserError(f"empty GSV-Cities dataframe: {self.root / 'Dataframes' / f'{city}.csv'}")
            self._check_images(city, rows)
            by_place: dict[int, list[GSVImage]] = {}
            for r in rows:
                by_place.setdefault(r.place_id, []).append(r)
            for pid in sorted(by_place):
                imgs = sorted(by_place[pid], key=lambda r: (r.year, r.month, r.name), reverse=True)
                if len(imgs) < self.images_per_place:
                    dropped += 1
                    continue
                self.places.append(imgs)
                self.place_keys.append((city, pid))
        if not self.places:
            raise UserError(f"no place in {self.root} ({', '.join(self.cities)}) has at least "
                            f"images_per_place = {self.images_per_place} images")
        if dropped:
            log.info("GSV-Cities: dropped %d place(s) with fewer than %d images", dropped,
                     self.images_per_place)
        self.num_images = sum(len(p) for p in self.places)

    def _check_images(self, city: str, rows: list[GSVImage]) -> None:
        for city_id in sorted({r.city_id for r in rows}):
            folder = self.root / "Images" / city_id
            if not folder.is_dir():
                raise UserError(f"GSV-Cities image folder not found: {folder} (named by the city_id "
                                f"column of {self.root / 'Dataframes' / f'{city}.csv'})")
            present = set(os.listdir(folder))
            missing = [r.name for r in rows if r.city_id == city_id and r.name not in present]
            if missing:
                raise UserError(f"{len(missing)} image(s) listed in Dataframes/{city}.csv are missing "
                                f"from {folder}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.places)

    def image_path(self, img: GSVImage) -> Path:
        return self.root / "Images" / img.city_id / img.name

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(item, tuple):
            index, item_seed = item
        else:
            index, item_seed = item, None
        index = int(index)
        imgs = self.places[index]
        k = self.images_per_place
        if self.train:
            if item_seed is None:
                item_seed = np.random.SeedSequence([self.seed, index]).generate_state(1)[0]
            rng = np.random.default_rng(int(item_seed))
            chosen = [imgs[i] for i in sorted(rng.choice(len(imgs), size=k, replace=False))]
        else:
            chosen = imgs[:k]
        x = torch.stack([load_image(self.image_path(r), self.img_size) for r in chosen])
        return x, torch.full((k,), index, dtype=torch.long)


class PlaceSampler(Sampler):
    """Shuffles places each epoch and gives every item its own seed: yields (index, item_seed).

    The order and the seeds depend only on (seed, epoch); Lightning calls :meth:`set_epoch`
    at the start of every epoch (also through its distributed wrapper).
    """

    def __init__(self, num_places: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_places = int(num_places)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_places

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_places) if self.shuffle else np.arange(self.num_places)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_places)
        return iter([(int(i), int(s)) for i, s in zip(order, seeds)])


def collate_places(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(K,3,H,W), (K,)] x P -> ([P*K,3,H,W], [P*K])."""
    images = torch.cat([b[0] for b in batch], dim=0)
    labels = torch.cat([b[1] for b in batch], dim=0)
    return images, labels


def gsv_root(data_cfg) -> Path:
    """Training-set root of a :class:`tatvpr_hw.config.DataConfig`."""
    if data_cfg.source == "synthetic":
        return Path(data_cfg.root) / "gsv"
    if data_cfg.gsv_root is None:
        raise UserError("data.source = 'local' needs data.gsv_root (the GSV-Cities folder) for training")
    return Path(data_cfg.gsv_root)


def make_train_loader(data_cfg, img_size: int, seed: int, *, shuffle: bool = True,
                      drop_last: bool | None = None) -> DataLoader:
    """P x K training batches from ``data_cfg`` (P = places_per_batch, K = images_per_place).

    ``drop_last`` defaults to True when there are at least P places (constant batch shape).
    """
    ds = GSVCitiesDataset(gsv_root(data_cfg), data_cfg.gsv_cities, img_size,
                          images_per_place=data_cfg.images_per_place, train=True, seed=seed)
    p = data_cfg.places_per_batch
    if drop_last is None:
        drop_last = len(ds) >= p
    if drop_last and len(ds) < p:
        raise UserError(f"{gsv_root(data_cfg)} has {len(ds)} places, fewer than data.places_per_batch = {p}")
    return DataLoader(ds, batch_size=p, sampler=PlaceSampler(len(ds), seed=seed, shuffle=shuffle),
                      collate_fn=collate_places, num_workers=data_cfg.num_workers, drop_last=drop_last,
                      persistent_workers=data_cfg.num_workers > 0)
