"""Built-in synthetic place-recognition benchmark, written in the two real on-disk formats.

Every place is a procedurally drawn street panorama: a sky gradient, a far skyline, a row of
buildings (facade colour, window grid, roof shape, door), a road with lane marks, trees,
poles and signs, and a fixed low-frequency texture. A *view* of a place is a crop of its
panorama seen from a nearby position: lateral shift and zoom (camera position), a
perspective warp and a small roll (viewpoint), brightness / contrast / colour cast / gamma
and a lighting ramp (illumination), another sky (weather), a season or light palette swap
(autumn trees, snow, dusk with lit windows), a hue turn about the grey axis and a saturation
change (palette), a cast shadow, occluders (cars, pedestrians), blur and sensor noise.
Some places are near-duplicate *confusers* of another place (same street, a few buildings and
objects changed) placed more than 25 m away.

One knob, ``difficulty`` in [0, 1], scales everything: view-change strength is
``difficulty`` for queries and training images and ``0.6 * difficulty`` for database images;
the confuser fraction is ``0.4 * difficulty``. At 0 a query is a re-encoded copy of its
database image. The palette changes (generator version 3) are what defeats raw-pixel
descriptors while leaving the buildings' shapes, which learned features can use, intact:
at strength s the hue turns by up to ``s * HUE_MAX_RAD``, and a season swap, another sky
and a cast shadow happen with probabilities ``s * SEASON_P``, ``s * WEATHER_P``,
``s * SHADOW_P``.

Written layout (``root`` = ``data.root``)::

    root/gsv/Dataframes/SynthA.csv, SynthB.csv        GSV-Cities format (tatvpr_hw.data.gsv)
    root/gsv/Images/SynthA/..., Images/SynthB/...
    root/eval/images/test/{database,queries}/@east@north@...@.jpg   (tatvpr_hw.data.vpr)
    root/synthetic.json                               generator version, config, seed, counts

Training places are split between the two cities, whose place ids both start at 0 (the loader
must keep them apart). Evaluation places are disjoint from training places (their own random
stream) and lie on a jittered 60 m grid: every database and query view of a place is within
5 m of its centre (so within 10 m of each other) and two place centres are >= 44 m apart, so
with the 25 m radius exactly the views of the same place are positives. The coordinates are
UTM-like (zone 17T numbers); the lat/lon in file names are a local linear approximation.

Deterministic: each place and each view draw from ``numpy.random.default_rng([seed, split,
place, ...])``, so the bytes written depend only on (config, seed) and the Pillow version.
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from tatvpr_hw.data.gsv import CSV_COLUMNS, gsv_image_name
from tatvpr_hw.data.vpr import vpr_image_name
from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3
# View-change mix at strength s = 1 (each scales with s): probabilities of another sky, of a
# season / light palette swap and of a cast shadow; the largest hue turn; the spread of the
# log saturation factor.
WEATHER_P = 0.5
SEASON_P = 0.6
SHADOW_P = 0.5
HUE_MAX_RAD = math.pi
SATURATION_SIGMA = 0.5
MANIFEST = "synthetic.json"
CITIES = ("SynthA", "SynthB")
EVAL_SPACING_M = 60.0
EVAL_JITTER_M = 8.0
VIEW_RADIUS_M = 5.0
UTM_ORIGIN = (585000.0, 4477000.0)          # east, north (m); zone 17T, like Pittsburgh
LATLON_ORIGIN = (40.44, -79.99)
CITY_LATLON = {"SynthA": (51.5000, -0.1200), "SynthB": (42.3600, -71.0600)}
JPEG_QUALITY = 90
_SPLIT_TRAIN, _SPLIT_EVAL = 1, 2
_PANO_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


# ----------------------------------------------------------------------------- scene model

@dataclass
class Building:
    x0: float          # left edge, fraction of panorama width
    width: float       # fraction of panorama width
    height: float      # fraction of panorama height above the horizon line
    color: tuple[int, int, int]
    window_color: tuple[int, int, int]
    rows: int
    cols: int
    roof: int          # 0 flat, 1 gable, 2 stepped
    door: bool


@dataclass
class Prop:
    kind: int          # 0 tree, 1 pole with lamp, 2 sign
    x: float           # fraction of panorama width
    size: float        # fraction of panorama height
    color: tuple[int, int, int]
    color2: tuple[int, int, int]


@dataclass
class Scene:
    sky_top: tuple[int, int, int]
    sky_horizon: tuple[int, int, int]
    horizon: float                 # y of the ground line, fraction of height
    far_color: tuple[int, int, int]
    far_heights: np.ndarray        # far skyline heights (fractions)
    road_color: tuple[int, int, int]
    walk_color: tuple[int, int, int]
    buildings: list[Building] = field(default_factory=list)
    props: list[Prop] = field(default_factory=list)
    texture: np.ndarray = field(default_factory=lambda: np.zeros((4, 8, 3), np.float32))


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _building(rng: np.random.Generator, x0: float) -> Building:
    return Building(
        x0=x0, width=float(rng.uniform(0.05, 0.16)), height=float(rng.uniform(0.18, 0.62)),
        color=_hsv(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95)),
        window_color=_hsv(rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.5), rng.uniform(0.1, 1.0)),
        rows=int(rng.integers(1, 9)), cols=int(rng.integers(1, 6)), roof=int(rng.integers(0, 3)),
        door=bool(rng.uniform() < 0.6))


def _prop(rng: np.random.Generator) -> Prop:
    return Prop(kind=int(rng.integers(0, 3)), x=float(rng.uniform(0.02, 0.98)),
                size=float(rng.uniform(0.12, 0.35)),
                color=_hsv(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.9)),
                color2=_hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.4, 1.0)))


def random_scene(rng: np.random.Generator) -> Scene:
    """A new random street scene."""
    sky_h = rng.uniform(0.05, 0.2) if rng.uniform() < 0.2 else rng.uniform(0.55, 0.65)
    sky_s = rng.uniform(0.05, 0.6)
    buildings, x = [], float(rng.uniform(-0.05, 0.0))
    while x < 1.0:
        b = _building(rng, x)
        buildings.append(b)
        x += b.width + float(rng.uniform(0.0, 0.04))
    return Scene(
        sky_top=_hsv(sky_h, sky_s, rng.uniform(0.55, 0.95)),
        sky_horizon=_hsv(sky_h + rng.uniform(-0.05, 0.05), sky_s * 0.4, rng.uniform(0.75, 1.0)),
        horizon=float(rng.uniform(0.62, 0.74)),
        far_color=_hsv(rng.uniform(0.5, 0.7), rng.uniform(0.05, 0.3), rng.uniform(0.45, 0.75)),
        far_heights=rng.uniform(0.05, 0.35, size=int(rng.integers(10, 24))).astype(np.float32),
        road_color=_hsv(0.0, 0.0, rng.uniform(0.2, 0.45)),
        walk_color=_hsv(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.5, 0.8)),
        buildings=buildings,
        props=[_prop(rng) for _ in range(int(rng.integers(2, 7)))],
        texture=rng.normal(0.0, 9.0, size=(4, 8, 3)).astype(np.float32),
    )


def confuser_scene(base: Scene, rng: np.random.Generator) -> Scene:
    """A near-duplicate of ``base``: same street, about a third of buildings and props redrawn."""
    buildings = []
    for b in base.buildings:
        if rng.uniform() < 0.35:
            nb = _building(rng, b.x0)
            buildings.append(replace(nb, width=b.width))
        else:
            buildings.append(b)
    props = [(_prop(rng) if rng.uniform() < 0.5 else p) for p in base.props]
    return replace(base, buildings=buildings, props=props,
                   texture=(base.texture + rng.normal(0.0, 6.0, size=base.texture.shape)).astype(np.float32))


def render_scene(scene: Scene, height_px: int) -> Image.Image:
    """The scene as an RGB panorama ``2 * height_px`` wide."""
    h, w = height_px, 2 * height_px
    gy = int(scene.horizon * h)
    top, hor = np.array(scene.sky_top, np.float32), np.array(scene.sky_horizon, np.float32)
    t = np.linspace(0.0, 1.0, gy, dtype=np.float32)[:, None]
    arr = np.empty((h, w, 3), np.float32)
    arr[:gy] = (top * (1 - t) + hor * t)[:, None, :]
    arr[gy:] = np.array(scene.road_color, np.float32)
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)

    # far skyline: a silhouette of blocks
    n = len(scene.far_heights)
    for i, fh in enumerate(scene.far_heights):
        x0, x1 = int(i * w / n), int((i + 1) * w / n)
        d.rectangle([x0, gy - int(fh * h * 0.8), x1, gy], fill=scene.far_color)

    # sidewalk band and lane dashes
    walk_h = max(2, int(0.06 * h))
    d.rectangle([0, gy, w, gy + walk_h], fill=scene.walk_color)
    lane_y = gy + int((h - gy) * 0.6)
    dash = max(4, w // 24)
    for x in range(0, w, 2 * dash):
        d.rectangle([x, lane_y, x + dash, lane_y + max(1, h // 80)], fill=(230, 230, 210))

    for b in scene.buildings:
        x0, x1 = int(b.x0 * w), int((b.x0 + b.width) * w)
        y0 = gy - int(b.height * h)
        d.rectangle([x0, y0, x1, gy], fill=b.color)
        bw, bh = x1 - x0, gy - y0
        if b.roof == 1:
            d.polygon([(x0, y0), (x1, y0), ((x0 + x1) // 2, y0 - int(0.25 * bw))], fill=b.color)
        elif b.roof == 2:
            d.rectangle([x0 + bw // 4, y0 - max(2, bh // 8), x1 - bw // 4, y0], fill=b.color)
        cw, rh = bw / (b.cols + 1), bh / (b.rows + 1.5)
        for r in range(b.rows):
            for c in range(b.cols):
                wx, wy = x0 + (c + 0.6) * cw, y0 + (r + 0.6) * rh
                d.rectangle([int(wx), int(wy), int(wx + 0.6 * cw), int(wy + 0.55 * rh)], fill=b.window_color)
        if b.door:
            dx = (x0 + x1) // 2
            d.rectangle([dx - max(1, bw // 10), gy - max(2, bh // 6), dx + max(1, bw // 10), gy],
                        fill=tuple(int(v * 0.4) for v in b.color))

    for p in scene.props:
        x, s = int(p.x * w), int(p.size * h)
        base_y = gy + walk_h // 2
        if p.kind == 0:      # tree
            d.rectangle([x - max(1, s // 16), base_y - s // 2, x + max(1, s // 16), base_y], fill=(90, 60, 30))
            d.ellipse([x - s // 3, base_y - s, x + s // 3, base_y - s // 3], fill=p.color)
        elif p.kind == 1:    # pole with lamp
            d.rectangle([x - max(1, s // 30), base_y - s, x + max(1, s // 30), base_y], fill=(60, 60, 60))
            d.ellipse([x - s // 10, base_y - s - s // 10, x + s // 10, base_y - s + s // 10], fill=p.color2)
        else:                # sign with stripes
            d.rectangle([x - max(1, s // 30), base_y - s, x + max(1, s // 30), base_y], fill=(70, 70, 70))
            sx0, sy0, sx1, sy1 = x - s // 4, base_y - s, x + s // 4, base_y - s + s // 3
            d.rectangle([sx0, sy0, sx1, sy1], fill=p.color)
            d.rectangle([sx0, (sy0 + sy1) // 2 - max(1, s // 20), sx1, (sy0 + sy1) // 2 + max(1, s // 20)],
                        fill=p.color2)

    tex_img = np.stack([
        np.asarray(Image.fromarray(scene.texture[..., c]).resize((w, h), Image.BICUBIC))
        for c in range(3)], axis=-1)
    out = np.asarray(img, np.float32) + tex_img
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- views

def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    a = np.zeros((8, 8))
    bvec = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(dst, src)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        bvec[2 * i], bvec[2 * i + 1] = u, v
    return np.linalg.solve(a, bvec).tolist()


def weather(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same street under another sky (overcast, dusk or clear)."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        top, hor = _hsv(0.6, 0.05, rng.uniform(0.5, 0.7)), _hsv(0.6, 0.03, rng.uniform(0.7, 0.85))
    elif kind == 1:
        top, hor = _hsv(rng.uniform(0.6, 0.75), 0.5, rng.uniform(0.3, 0.5)), _hsv(rng.uniform(0.02, 0.1), 0.6, 0.95)
    else:
        top, hor = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.4, 0.7), 0.9), _hsv(0.58, 0.2, 1.0)
    return replace(scene, sky_top=top, sky_horizon=hor)


def season(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same street in another season or light: a palette swap of everything but the
    buildings' shapes. Autumn (tree crowns orange to red), winter (snow on road, sidewalk and
    trees, overcast sky) or dusk (dark sky and skyline, facades dimmed, windows lit)."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        props = [replace(p, color=_hsv(rng.uniform(0.0, 0.12), rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.9)))
                 if p.kind == 0 else p for p in scene.props]
        return replace(scene, props=props)
    if kind == 1:
        snow = _hsv(0.6, rng.uniform(0.0, 0.08), rng.uniform(0.85, 1.0))
        props = [replace(p, color=_hsv(0.6, 0.05, rng.uniform(0.75, 0.95))) if p.kind == 0 else p
                 for p in scene.props]
        return replace(scene, road_color=snow, walk_color=snow, props=props,
                       sky_top=_hsv(0.6, 0.04, rng.uniform(0.6, 0.8)), sky_horizon=_hsv(0.6, 0.02, 0.9))
    dim = float(rng.uniform(0.25, 0.45))
    lit = _hsv(rng.uniform(0.1, 0.16), rng.uniform(0.4, 0.8), 1.0)
    dark = lambda c: tuple(int(v * dim) for v in c)      # noqa: E731
    buildings = [replace(b, color=dark(b.color), window_color=lit) for b in scene.buildings]
    props = [replace(p, color=dark(p.color)) for p in scene.props]
    return replace(scene, buildings=buildings, props=props, sky_top=_hsv(0.65, 0.6, rng.uniform(0.08, 0.2)),
                   sky_horizon=_hsv(rng.uniform(0.0, 0.1), 0.5, rng.uniform(0.3, 0.5)),
                   far_color=dark(scene.far_color), road_color=dark(scene.road_color),
                   walk_color=dark(scene.walk_color))


def hue_rotation(angle_rad: float) -> np.ndarray:
    """3x3 matrix rotating RGB about the grey axis by ``angle_rad``: hue turns, the mean of the
    three channels (the grey level) is unchanged (Rodrigues' formula, axis (1, 1, 1) / sqrt 3)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    k = np.full(3, 1.0 / math.sqrt(3.0))
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return (c * np.eye(3) + s * kx + (1.0 - c) * np.outer(k, k)).astype(np.float32)


def render_view(scene: Scene, pano: Image.Image, rng: np.random.Generator, strength: float, image_px: int,
                lateral_m: float = 0.0) -> Image.Image:
    """One camera view of ``scene`` (``pano`` is its rendering); ``strength`` in [0, 1] scales
    every change. With probability ``0.5 * strength`` the sky changes (weather)."""
    s = float(strength)
    seen = scene
    if rng.uniform() < WEATHER_P * s:
        seen = weather(seen, rng)
    if rng.uniform() < SEASON_P * s:
        seen = season(seen, rng)
    if seen is not scene:
        pano = render_scene(seen, pano.height)
    ph, pw = pano.height, pano.width
    side = ph * 0.85 * (1.0 + rng.uniform(-0.25, 0.25) * s)
    cx = pw / 2 + (lateral_m / VIEW_RADIUS_M) * 0.35 * side * s + rng.normal(0.0, 0.06) * side * s
    cy = ph * 0.5 + rng.normal(0.0, 0.04) * side * s
    ang = math.radians(rng.uniform(-4.0, 4.0) * s)
    half = side / 2
    corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    src = corners @ rot.T + [cx, cy] + rng.uniform(-1.0, 1.0, size=(4, 2)) * 0.12 * side * s
    dst = np.array([[0, 0], [image_px, 0], [image_px, image_px], [0, image_px]], dtype=np.float64)
    view = pano.transform((image_px, image_px), Image.PERSPECTIVE, _perspective_coeffs(dst, src),
                          Image.BILINEAR)

    # occluders: cars (boxes low in the frame) and pedestrians (tall ellipses)
    d = ImageDraw.Draw(view)
    for _ in range(int(rng.poisson(2.0 * s))):
        col = _hsv(rng.uniform(), rng.uniform(0.0, 0.9), rng.uniform(0.1, 0.9))
        if rng.uniform() < 0.5:
            ow, oh = rng.uniform(0.15, 0.4) * image_px, rng.uniform(0.1, 0.22) * image_px
            ox, oy = rng.uniform(-0.1, 0.9) * image_px, rng.uniform(0.6, 0.9) * image_px
            d.rectangle([ox, oy, ox + ow, oy + oh], fill=col)
        else:
            ow, oh = rng.uniform(0.05, 0.1) * image_px, rng.uniform(0.2, 0.4) * image_px
            ox, oy = rng.uniform(0.0, 0.95) * image_px, rng.uniform(0.4, 0.75) * image_px
            d.ellipse([ox, oy, ox + ow, oy + oh], fill=col)

    arr = np.asarray(view, np.float32) / 255.0
    brightness = math.exp(rng.normal(0.0, 0.4 * s))
    contrast = 1.0 + rng.uniform(-0.45, 0.45) * s
    gain = np.exp(rng.normal(0.0, 0.18 * s, size=3)).astype(np.float32)
    gamma = math.exp(rng.normal(0.0, 0.3 * s))
    ramp = 1.0 + rng.uniform(-0.6, 0.6) * s * (np.linspace(-0.5, 0.5, image_px, dtype=np.float32))
    # palette: hue turned about the grey axis, saturation scaled (grey levels unchanged)
    arr = arr @ hue_rotation(rng.uniform(-1.0, 1.0) * HUE_MAX_RAD * s).T
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * math.exp(rng.normal(0.0, SATURATION_SIGMA * s))
    mean = arr.mean()
    arr = ((arr - mean) * contrast + mean) * brightness * gain * ramp[None, :, None]
    if rng.uniform() < SHADOW_P * s:
        # a cast shadow: everything on one side of a slanted line darkened, soft edge
        yy, xx = np.mgrid[0:image_px, 0:image_px].astype(np.float32) / image_px
        edge = rng.uniform(0.15, 0.85) + rng.uniform(-0.5, 0.5) * (yy - 0.5) - xx
        inside = 1.0 / (1.0 + np.exp(-edge * (1.0 if rng.uniform() < 0.5 else -1.0) * 40.0))
        arr = arr * (1.0 - (1.0 - rng.uniform(0.35, 0.7)) * inside)[..., None]
    arr = np.clip(arr, 0.0, 1.0) ** gamma
    noise_sigma = rng.uniform(0.0, 0.04) * s
    arr = arr + rng.normal(0.0, 1.0, size=arr.shape).astype(np.float32) * noise_sigma
    view = Image.fromarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    radius = rng.uniform(0.0, 1.2) * s * image_px / 112.0
    if radius > 0.05:
        view = view.filter(ImageFilter.GaussianBlur(radius))
    return view


# ----------------------------------------------------------------------------- the benchmark

def _scenes(seed: int, split: int, n: int, confuser_fraction: float) -> list[Scene]:
    scenes: list[Scene] = []
    for i in range(n):
        rng = np.random.default_rng([seed, split, i, 0])
        if i > 0 and rng.uniform() < confuser_fraction:
            scenes.append(confuser_scene(scenes[int(rng.integers(0, i))], rng))
        else:
            scenes.append(random_scene(rng))
    return scenes


def _panoid(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_PANO_CHARS, size=22))


def eval_place_centres(n: int, seed: int) -> np.ndarray:
    """UTM (east, north) of ``n`` evaluation places on a jittered 60 m grid."""
    rng = np.random.default_rng([seed, _SPLIT_EVAL, 10**6])
    cols = int(math.ceil(math.sqrt(n)))
    idx = np.arange(n)
    grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float64) * EVAL_SPACING_M
    return grid + rng.uniform(-EVAL_JITTER_M, EVAL_JITTER_M, size=(n, 2)) + np.array(UTM_ORIGIN)


def _utm_to_latlon(east: float, north: float) -> tuple[float, float]:
    lat = LATLON_ORIGIN[0] + (north - UTM_ORIGIN[1]) / 111_320.0
    lon = LATLON_ORIGIN[1] + (east - UTM_ORIGIN[0]) / (111_320.0 * math.cos(math.radians(LATLON_ORIGIN[0])))
    return lat, lon


def _offset(rng: np.random.Generator) -> tuple[float, float]:
    r, a = VIEW_RADIUS_M * math.sqrt(rng.uniform()), rng.uniform(0.0, 2 * math.pi)
    return r * math.cos(a), r * math.sin(a)


def _save_jpeg(img: Image.Image, path: Path) -> None:
    img.save(path, format="JPEG", quality=JPEG_QUALITY)


def _write_gsv(out: Path, cfg, seed: int, difficulty: float, progress: tqdm) -> dict[str, int]:
    scenes = _scenes(seed, _SPLIT_TRAIN, cfg.places, 0.4 * difficulty)
    render_px = 2 * cfg.image_px
    counts = {}
    per_city = [list(range(len(scenes)))[c::len(CITIES)] for c in range(len(CITIES))]
    (out / "Dataframes").mkdir(parents=True)
    for city, place_indices in zip(CITIES, per_city):
        img_dir = out / "Images" / city
        img_dir.mkdir(parents=True)
        lat0, lon0 = CITY_LATLON[city]
        rows = []
        for place_id, gi in enumerate(place_indices):
            pano = render_scene(scenes[gi], render_px)
            col, row = place_id % 10, place_id // 10
            plat, plon = lat0 + row * 0.0006, lon0 + col * 0.0008
            for v in range(cfg.train_images_per_place):
                rng = np.random.default_rng([seed, _SPLIT_TRAIN, gi, 1 + v])
                dx, dy = _offset(rng)
                year, month = int(rng.integers(2007, 2022)), int(rng.integers(1, 13))
                northdeg = int(rng.integers(0, 360))
                lat, lon = round(plat + dy / 111_320.0, 6), round(plon + dx / 75_000.0, 6)
                panoid = _panoid(rng)
                img = render_view(scenes[gi], pano, rng, difficulty, cfg.image_px, lateral_m=dx)
                _save_jpeg(img, img_dir / gsv_image_name(city, place_id, year, month, northdeg, lat, lon, panoid))
                rows.append((place_id, year, month, northdeg, city, lat, lon, panoid))
            progress.update(1)
        lines = [",".join(CSV_COLUMNS)] + [",".join(map(str, r)) for r in rows]
        (out / "Dataframes" / f"{city}.csv").write_text("\n".join(lines) + "\n")
        counts[city] = len(place_indices)
    return counts


def _write_eval(out: Path, cfg, seed: int, difficulty: float, progress: tqdm) -> dict[str, int]:
    scenes = _scenes(seed, _SPLIT_EVAL, cfg.eval_places, 0.4 * difficulty)
    centres = eval_place_centres(cfg.eval_places, seed)
    render_px = 2 * cfg.image_px
    db_dir, q_dir = out / "images" / "test" / "database", out / "images" / "test" / "queries"
    db_dir.mkdir(parents=True)
    q_dir.mkdir(parents=True)
    for i, scene in enumerate(scenes):
        pano = render_scene(scene, render_px)
        views = [("database", db_dir, v, 0.6 * difficulty) for v in range(cfg.db_per_place)] + \
                [("queries", q_dir, v, difficulty) for v in range(cfg.queries_per_place)]
        for kind, folder, v, strength in views:
            rng = np.random.default_rng([seed, _SPLIT_EVAL, i, 1 + v, 0 if kind == "database" else 1])
            dx, dy = _offset(rng)
            east, north = centres[i, 0] + dx, centres[i, 1] + dy
            lat, lon = _utm_to_latlon(east, north)
            heading = int(rng.integers(0, 360))
            name = vpr_image_name(east, north, "17", "T", f"{lat:09.5f}", f"{lon:010.5f}",
                                  f"synth{i:05d}{kind[0]}{v:02d}", "", f"{heading:03d}", "", "", "", "",
                                  "synthetic")
            _save_jpeg(render_view(scene, pano, rng, strength, cfg.image_px, lateral_m=dx), folder / name)
        progress.update(1)
    return {"places": cfg.eval_places, "database": cfg.eval_places * cfg.db_per_place,
            "queries": cfg.eval_places * cfg.queries_per_place}


def manifest_for(synthetic_cfg, seed: int) -> dict[str, Any]:
    cfg = synthetic_cfg.model_dump(mode="json")
    cfg.pop("seed", None)
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": cfg}


def write_benchmark(root: str | Path, synthetic_cfg, seed: int) -> Path:
    """Write the benchmark to ``root/gsv`` and ``root/eval`` (replacing an earlier benchmark there).

    Args:
        root: output folder; must be absent, empty, or an earlier benchmark (has synthetic.json).
        synthetic_cfg: :class:`tatvpr_hw.config.SyntheticConfig`.
        seed: the benchmark seed (the same seed writes the same files).
    Returns: ``root``.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / MANIFEST).is_file())):
        raise UserError(f"refusing to overwrite {root}: it exists and is not a synthetic benchmark "
                        f"(no {MANIFEST}); choose an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    difficulty = float(synthetic_cfg.difficulty)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        total = synthetic_cfg.places + synthetic_cfg.eval_places
        with tqdm(total=total, desc="synthetic places", unit="place", leave=False) as bar:
            cities = _write_gsv(tmp / "gsv", synthetic_cfg, seed, difficulty, bar)
            ev = _write_eval(tmp / "eval", synthetic_cfg, seed, difficulty, bar)
        manifest = manifest_for(synthetic_cfg, seed) | {
            "train_places_per_city": cities, "eval": ev,
            "positive_layout": {"place_spacing_m": EVAL_SPACING_M, "jitter_m": EVAL_JITTER_M,
                                "view_radius_m": VIEW_RADIUS_M}}
        write_json(tmp / MANIFEST, manifest)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic benchmark: %d training places, %d evaluation places -> %s (%.1f s)",
             synthetic_cfg.places, synthetic_cfg.eval_places, root, time.perf_counter() - t0)
    return root


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    import json
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_benchmark(cfg) -> Path:
    """For a run config with ``data.source = synthetic``: write the benchmark to ``data.root``
    unless the one there was written by the same generator, settings and seed. Returns the root."""
    root = Path(cfg.data.root)
    syn = cfg.data.synthetic
    have = read_manifest(root)
    want = manifest_for(syn, syn.seed)
    if have is not None and all(have.get(k) == v for k, v in want.items()):
        log.info("synthetic benchmark up to date in %s", root)
        return root
    return write_benchmark(root, syn, syn.seed)
