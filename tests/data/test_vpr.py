"""VPR evaluation-set loader (VPR-datasets-downloader layout) and the positives rule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tatvpr_hw.data.vpr import VPREvalSet, parse_utm, vpr_image_name
from tatvpr_hw.errors import UserError


def test_name_format_and_parse():
    name = vpr_image_name(584344.314, 4477105.17, "17", "T", "040.44021", "-079.99856", "pano")
    assert name == "@0584344.31@4477105.17@17@T@040.44021@-079.99856@pano@.jpg"
    assert parse_utm(name) == (584344.31, 4477105.17)
    assert parse_utm("@0585000.00@4477000.00@seq1@0001@q0@sf@20190101_120000@.jpg") == (585000.0, 4477000.0)


@pytest.mark.parametrize("bad", ["img_001.jpg", "@abc@4477000.00@@.jpg", "@0585000.00@.jpg"])
def test_bad_name(bad):
    with pytest.raises(UserError, match="@UTM_east@UTM_north"):
        parse_utm(bad)


def test_positives_at_25_m(vpr_root):
    ev = VPREvalSet(vpr_root, img_size=14)
    assert len(ev.database) == 5 and len(ev.queries) == 2
    names = [p.name for p in ev.database.paths]
    q0 = [i for i, p in enumerate(ev.queries.paths) if "@q0@" in p.name][0]
    pos = {names[i].split("@")[7] for i in ev.positives(q0)}
    assert pos == {"db0", "db1", "db4"}        # 0 m, 24.9 m, 24.89 m in; 25.1 m and 141 m out
    q1 = 1 - q0
    assert {names[i].split("@")[7] for i in ev.positives(q1)} == {"db3"}


def test_radius_is_configurable(vpr_root):
    ev = VPREvalSet(vpr_root, img_size=14, positive_radius_m=10.0)
    names = [p.name.split("@")[7] for p in ev.database.paths]
    per_query = {p.name: {names[i] for i in ev.positives(j)} for j, p in enumerate(ev.queries.paths)}
    assert sorted(map(sorted, per_query.values())) == [["db0"], ["db3"]]   # 10 m exactly is inside


def test_items(vpr_root):
    ev = VPREvalSet(vpr_root, img_size=28)
    x, i = ev.queries[1]
    assert x.shape == (3, 28, 28) and i == 1
    assert ev.database.utm.shape == (5, 2)
    assert np.isfinite(ev.database.utm).all()


def test_missing_split_folder(vpr_root):
    shutil.rmtree(vpr_root / "images" / "test" / "queries")
    with pytest.raises(UserError, match=r"evaluation folder not found: .*queries"):
        VPREvalSet(vpr_root, 14)


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match=r"images[/\\]test"):
        VPREvalSet(tmp_path / "absent", 14)


def test_empty_split(vpr_root):
    for p in (vpr_root / "images" / "test" / "database").iterdir():
        p.unlink()
    with pytest.raises(UserError, match=r"empty evaluation split: .*database"):
        VPREvalSet(vpr_root, 14)


def test_corrupt_image_is_named(vpr_root):
    q = sorted((vpr_root / "images" / "test" / "queries").iterdir())[0]
    q.write_bytes(b"garbage")
    ev = VPREvalSet(vpr_root, 14)
    with pytest.raises(UserError, match=f"corrupt or unreadable image .*{q.name}"):
        ev.queries[0]
