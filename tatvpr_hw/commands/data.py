"""CLI commands: ``tatvpr data synth`` (write the built-in benchmark), ``tatvpr data baseline``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_CONFIG = "tiny"  # configs/tiny.yaml of the repository, found from any folder


def _load(config: Optional[Path]):
    from tatvpr_hw.config import Config, load_config

    if config is not None:
        return load_config(config)
    from tatvpr_hw.config import CONFIG_DIR

    if (CONFIG_DIR / f"{DEFAULT_CONFIG}.yaml").is_file():
        return load_config(DEFAULT_CONFIG)
    return Config()


def _require_data(path: Path, cfg, what: str, given: bool) -> None:
    """A missing data folder is a UserError that says how to write the built-in benchmark."""
    from tatvpr_hw.errors import UserError

    if Path(path).exists():
        return
    if given:
        sub = "eval" if what == "evaluation set" else "gsv"
        hint = f"`tatvpr data synth --out DIR` writes the synthetic benchmark (its {what} is DIR/{sub})"
    elif cfg.data.source == "synthetic":
        hint = f"write the synthetic benchmark first: `tatvpr data synth --out {cfg.data.root}`"
    else:
        hint = ("download the data set there, or use the synthetic benchmark "
                "(data.source: synthetic, then `tatvpr data synth --out <data.root>`)")
    raise UserError(f"{what} not found: {path}; {hint}")


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""
    data_app = typer.Typer(help="Data sets: the built-in synthetic benchmark and loader checks.",
                           no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("synth")
    def synth(
        out: Path = typer.Option(..., "--out", help="folder to write (gsv/ and eval/ inside)"),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, help="benchmark seed (default data.synthetic.seed)"),
        config: Optional[Path] = typer.Option(None, "--config", help="run config YAML or a built-in name (default: tiny)"),
        difficulty: Optional[float] = typer.Option(None, "--difficulty",
                                                   help="override data.synthetic.difficulty (0 easy .. 1 hard)"),
    ) -> None:
        """Write the synthetic place-recognition benchmark in GSV-Cities and VPR-downloader layouts."""
        from tatvpr_hw.data.synthetic import write_benchmark
        from tatvpr_hw.errors import UserError

        cfg = _load(config)
        syn = cfg.data.synthetic.model_copy()
        if difficulty is not None:
            if not 0.0 <= difficulty <= 1.0:
                raise UserError(f"--difficulty must be in [0, 1], got {difficulty}")
            syn.difficulty = difficulty
        root = write_benchmark(out, syn, syn.seed if seed is None else seed)
        typer.echo(f"wrote {syn.places} training places ({root / 'gsv'}) and {syn.eval_places} evaluation "
                   f"places ({root / 'eval'}), difficulty {syn.difficulty:g}")

    @data_app.command("info")
    def info(
        config: Optional[Path] = typer.Option(None, "--config", help="run config YAML or a built-in name (default: tiny)"),
    ) -> None:
        """Check the config's training and evaluation sets load; print their sizes."""
        from tatvpr_hw.data.gsv import GSVCitiesDataset, gsv_root
        from tatvpr_hw.data.vpr import VPREvalSet, eval_root

        cfg = _load(config)
        d = cfg.data
        _require_data(gsv_root(d), cfg, "training set", False)
        _require_data(eval_root(d), cfg, "evaluation set", False)
        gsv = GSVCitiesDataset(gsv_root(d), d.gsv_cities, cfg.model.student_img_size,
                               images_per_place=d.images_per_place)
        typer.echo(f"training  {gsv.root}: {len(gsv)} places with >= {d.images_per_place} images, "
                   f"{gsv.num_images} images, cities {', '.join(gsv.cities)}")
        ev = VPREvalSet(eval_root(d), cfg.model.student_img_size, d.positive_radius_m)
        no_pos = sum(len(p) == 0 for p in ev.all_positives)
        typer.echo(f"evaluation {ev.root}: {len(ev.database)} database, {len(ev.queries)} queries, "
                   f"{no_pos} queries without a positive within {d.positive_radius_m:g} m")

    @data_app.command("baseline")
    def baseline(
        root: Optional[Path] = typer.Option(None, "--root", help="evaluation set root (images/test/...); "
                                            "default: the config's evaluation set"),
        config: Optional[Path] = typer.Option(None, "--config", help="run config YAML or a built-in name (default: tiny)"),
        side_px: int = typer.Option(16, "--side-px", min=2, max=256, help="pixel descriptor side"),
    ) -> None:
        """Sanity baseline: Recall@N of raw downsampled-pixel descriptors on an evaluation set."""
        from tatvpr_hw.data.vpr import VPREvalSet, eval_root
        from tatvpr_hw.evaluation import chance_recall_at_1, pixel_baseline

        cfg = _load(config)
        ev_root = root if root is not None else eval_root(cfg.data)
        _require_data(ev_root, cfg, "evaluation set", root is not None)
        ev = VPREvalSet(ev_root, side_px, cfg.data.positive_radius_m)
        rec = pixel_baseline(ev, cfg.eval.recall_at, side_px)
        chance = chance_recall_at_1(ev.all_positives, len(ev.database))
        typer.echo(f"{len(ev.queries)} queries, {len(ev.database)} database images; chance R@1 {chance:.2f} %")
        typer.echo("pixels " + "  ".join(f"R@{n} {v:.2f} %" for n, v in rec.items()))
