"""GSV-Cities loader on a fixture folder in the released layout."""

from __future__ import annotations

import torch
import pytest
from PIL import Image

from tatvpr_hw.config import DataConfig
from tatvpr_hw.data.gsv import GSVCitiesDataset, PlaceSampler, gsv_image_name, make_train_loader
from tatvpr_hw.data.transforms import IMAGENET_MEAN, IMAGENET_STD, load_image
from tatvpr_hw.errors import UserError



def test_image_name_matches_release_naming(gsv_names):
    assert gsv_image_name("London", 13, 2019, 7, 90, "51.5074", "-0.1278", "pano_A-1") == \
        gsv_names[("London", "pano_A-1")]
    assert gsv_image_name("Boston", 2, 2020, 1, 300, 42.35, -71.05, "b2a") == gsv_names[("Boston", "b2a")]


def test_cities_merge_without_place_id_clash(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London", "Boston"], img_size=28, images_per_place=3)
    # London 13, London 7, Boston 13; Boston 2 has 2 < K images and is dropped
    assert len(ds) == 3
    assert sorted(ds.place_keys) == [("Boston", 13), ("London", 7), ("London", 13)]
    labels = set()
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 3, 28, 28) and x.dtype == torch.float32
        assert y.shape == (3,) and len(set(y.tolist())) == 1
        labels.add(int(y[0]))
    assert len(labels) == 3              # London 13 and Boston 13 are different places


def test_all_cities_by_default_and_k2_keeps_small_place(gsv_root):
    ds = GSVCitiesDataset(gsv_root, [], img_size=14, images_per_place=2)
    assert ds.cities == ["Boston", "London"] and len(ds) == 4


def test_eval_mode_takes_most_recent_images(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London"], img_size=14, images_per_place=2, train=False)
    i = ds.place_keys.index(("London", 13))
    x, _ = ds[i]
    newest = [ds.places[i][0], ds.places[i][1]]
    assert [(r.year, r.month) for r in newest] == [(2021, 3), (2019, 7)]
    assert torch.equal(x[0], load_image(ds.image_path(newest[0]), 14))


def test_seeded_sampling(gsv_root):
    ds = GSVCitiesDataset(gsv_root, ["London"], img_size=14, images_per_place=2)
    i = ds.place_keys.index(("London", 13))  # 4 images, 6 possible pairs
    a = [ds[(i, s)][0] for s in range(8)]
    b = [ds[(i, s)][0] for s in range(8)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert len({tuple(t[:, 0, 0, 0].tolist()) for t in a}) > 1     # different seeds, different pairs


def test_sampler_depends_on_seed_and_epoch_only():
    s1, s2 = PlaceSampler(50, seed=3), PlaceSampler(50, seed=3)
    assert list(s1) == list(s2)
    e0 = list(s1)
    s1.set_epoch(1)
    assert list(s1) != e0 and sorted(i for i, _ in s1) == list(range(50))
    s2.set_epoch(1)
    assert list(s1) == list(s2)


def test_train_loader_p_by_k_batches(gsv_root):
    cfg = DataConfig(source="local", gsv_root=gsv_root, eval_root=gsv_root, places_per_batch=2,
                     images_per_place=3)
    loader = make_train_loader(cfg, img_size=14, seed=5)
    batches = list(loader)
    assert len(batches) == 1            # 3 places, P = 2, last partial batch dropped
    x, y = batches[0]
    assert x.shape == (6, 3, 14, 14) and y.shape == (6,)
    assert y.view(2, 3).unique(dim=1).shape[1] == 1 and y[0] != y[3]
    again = list(make_train_loader(cfg, img_size=14, seed=5))
    assert torch.equal(again[0][0], x) and torch.equal(again[0][1], y)


def test_preprocessing_is_imagenet_normalised(tmp_path, make_solid):
    p = make_solid(tmp_path / "a.png", rgb=(255, 0, 128), size=(40, 30))
    x = load_image(p, 28)
    assert x.shape == (3, 28, 28)
    want = [(v / 255.0 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(want), atol=1e-5)


def test_missing_dataframes_folder(tmp_path):
    with pytest.raises(UserError, match="Dataframes"):
        GSVCitiesDataset(tmp_path / "nope", None, 14)


def test_unknown_city(gsv_root):
    with pytest.raises(UserError, match="Paris.*available"):
        GSVCitiesDataset(gsv_root, ["Paris"], 14)


def test_missing_image_folder(gsv_root):
    import shutil
    shutil.rmtree(gsv_root / "Images" / "Boston")
    with pytest.raises(UserError, match=r"image folder not found: .*Images[/\\]Boston"):
        GSVCitiesDataset(gsv_root, ["Boston"], 14)


def test_missing_image_file_is_named(gsv_root, gsv_names):
    (gsv_root / "Images" / "London" / gsv_names[("London", "p7c")]).unlink()
    with pytest.raises(UserError, match="London_0000007_2014_04_182_51.5102_-0.1302_p7c.jpg"):
        GSVCitiesDataset(gsv_root, ["London"], 14)


def test_missing_column_is_named(gsv_root):
    path = gsv_root / "Dataframes" / "London.csv"
    path.write_text(path.read_text().replace("panoid", "pano"))
    with pytest.raises(UserError, match="missing column.*panoid"):
        GSVCitiesDataset(gsv_root, ["London"], 14)


def test_empty_dataframe(gsv_root):
    (gsv_root / "Dataframes" / "London.csv").write_text("place_id,year,month,northdeg,city_id,lat,lon,panoid\n")
    with pytest.raises(UserError, match="empty GSV-Cities dataframe"):
        GSVCitiesDataset(gsv_root, ["London"], 14)


def test_corrupt_image_is_named(gsv_root, gsv_names):
    bad = gsv_root / "Images" / "London" / gsv_names[("London", "p7c")]
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    ds = GSVCitiesDataset(gsv_root, ["London"], 14, images_per_place=3)
    i = ds.place_keys.index(("London", 7))
    with pytest.raises(UserError, match="corrupt or unreadable image .*p7c.jpg"):
        ds[i]


def test_truncated_image_is_named(gsv_root, gsv_names):
    path = gsv_root / "Images" / "London" / gsv_names[("London", "panoD")]
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:200])
    ds = GSVCitiesDataset(gsv_root, ["London"], 14, images_per_place=4, train=False)
    i = ds.place_keys.index(("London", 13))
    with pytest.raises(UserError, match="panoD.jpg"):
        ds[i]
