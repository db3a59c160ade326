"""Small fixture folders written in the two real on-disk layouts (GSV-Cities, VPR downloader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def solid(path: Path, rgb=(128, 64, 32), size=(20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def noise_image(path: Path, seed: int, size=(24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# Rows as a GSV-Cities dataframe holds them: (place_id, year, month, northdeg, city_id, lat, lon, panoid)
LONDON = [
    (13, 2019, 7, 90, "London", "51.5074", "-0.1278", "pano_A-1"),
    (13, 2017, 1, 0, "London", "51.5075", "-0.1279", "panoB"),
    (13, 2015, 12, 275, "London", "51.50741", "-0.12781", "panoC"),
    (13, 2021, 3, 45, "London", "51.5076", "-0.128", "panoD"),
    (7, 2018, 5, 180, "London", "51.51", "-0.13", "p7a"),
    (7, 2016, 6, 181, "London", "51.5101", "-0.1301", "p7b"),
    (7, 2014, 4, 182, "London", "51.5102", "-0.1302", "p7c"),
]
BOSTON = [
    (13, 2020, 8, 10, "Boston", "42.3601", "-71.0589", "b13a"),
    (13, 2019, 9, 11, "Boston", "42.3602", "-71.0588", "b13b"),
    (13, 2018, 10, 12, "Boston", "42.3603", "-71.0587", "b13c"),
    (2, 2020, 1, 300, "Boston", "42.35", "-71.05", "b2a"),      # only 2 images: dropped when K = 3
    (2, 2019, 1, 301, "Boston", "42.3501", "-71.0501", "b2b"),
]

# File names spelled out by hand (not through the code under test)
EXPECTED_NAMES = {
    ("London", "pano_A-1"): "London_0000013_2019_07_090_51.5074_-0.1278_pano_A-1.jpg",
    ("London", "p7c"): "London_0000007_2014_04_182_51.5102_-0.1302_p7c.jpg",
    ("Boston", "b2a"): "Boston_0000002_2020_01_300_42.35_-71.05_b2a.jpg",
    ("London", "panoD"): "London_0000013_2021_03_045_51.5076_-0.128_panoD.jpg",
}


def _name(row) -> str:
    pid, y, m, nd, city, lat, lon, pano = row
    return f"{city}_{pid:07d}_{y:04d}_{m:02d}_{nd:03d}_{float(lat)}_{float(lon)}_{pano}.jpg"


@pytest.fixture
def gsv_root(tmp_path: Path) -> Path:
    """Two cities with clashing place ids, CSVs with a pandas-style leading index column."""
    root = tmp_path / "gsv_cities"
    (root / "Dataframes").mkdir(parents=True)
    seed = 0
    for city, rows in (("London", LONDON), ("Boston", BOSTON)):
        lines = [",place_id,year,month,northdeg,city_id,lat,lon,panoid"]
        for i, r in enumerate(rows):
            lines.append(",".join([str(i), *map(str, r)]))
            noise_image(root / "Images" / city / _name(r), seed)
            seed += 1
        (root / "Dataframes" / f"{city}.csv").write_text("\n".join(lines) + "\n")
    for (city, _), name in EXPECTED_NAMES.items():
        assert (root / "Images" / city / name).is_file(), name
    return root


def vpr_name(east: float, north: float, extra: str = "17@T@040.44021@-079.99856@pano@@090@@@@@@") -> str:
    return f"@{east:010.2f}@{north:010.2f}@{extra}.jpg"


@pytest.fixture
def vpr_root(tmp_path: Path) -> Path:
    """Pitts30k-style database and MSLS-style query names around (585000, 4477000)."""
    root = tmp_path / "pitts"
    db = root / "images" / "test" / "database"
    q = root / "images" / "test" / "queries"
    e0, n0 = 585000.0, 4477000.0
    db_pos = [(e0, n0), (e0 + 24.9, n0), (e0, n0 + 25.1), (e0 + 100.0, n0 + 100.0), (e0 + 17.6, n0 + 17.6)]
    for i, (e, n) in enumerate(db_pos):
        noise_image(db / vpr_name(e, n, f"17@T@040.44021@-079.99856@db{i}@@@@@@@@"), 100 + i)
    # MSLS naming: @east@north@seq_id@frame_num@pano_id@city@timestamp@
    noise_image(q / f"@{e0:010.2f}@{n0:010.2f}@seq1@0001@q0@sf@20190101_120000@.jpg", 200)
    noise_image(q / vpr_name(e0 + 100.0, n0 + 90.0, "17@T@@@q1@@@@@@@@@"), 201)
    return root


@pytest.fixture
def gsv_names() -> dict:
    return dict(EXPECTED_NAMES)


@pytest.fixture
def make_solid():
    return solid
