"""CLI: ``tatvpr export board-bundle`` -- the board runtime's bundle (``tatvpr_pynq.runtime``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add ``export board-bundle`` to the export group."""

    @export_app.command("board-bundle")
    def board_bundle(
        checkpoint: Path = typer.Option(..., "--checkpoint", help="ternary student checkpoint (.safetensors)"),
        config: Optional[Path] = typer.Option(None, "--config", help="run config (default: tiny)"),
        out: Path = typer.Option(..., "--out", help="bundle folder to write"),
        sparsity: float = typer.Option(0.4, help="top-k sparsity the integer trunk is exported for, in [0, 1)"),
        calibration: int = typer.Option(16, help="evaluation-database images that calibrate the integer scales"),
        database: Optional[int] = typer.Option(
            None, help="build database.npy from the first N evaluation-database images through the runtime "
                       "(numpy units); default all, 0 = none"),
    ) -> None:
        """Export trunk.npz + head.npz + meta.json for the board runtime and build its database."""
        import json

        import numpy as np
        import torch

        from brevitas_models.checkpoint import checkpoint_paths, load_checkpoint, load_into
        from brevitas_models.model import build_model
        from tatvpr_hw.lower.hls.bundle import export_bundle
        from tatvpr_hw.config import load_config
        from tatvpr_hw.data.transforms import load_rgb
        from tatvpr_hw.data.vpr import VPREvalSet, eval_root
        from tatvpr_hw.errors import UserError
        from tatvpr_hw.lower.hls.paths import driver_package

        if not 0.0 <= sparsity < 1.0:
            raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
        if calibration < 1:
            raise UserError(f"--calibration must be >= 1, got {calibration}")
        if database is not None and database < 0:
            raise UserError(f"--database must be >= 0, got {database}")
        if not checkpoint_paths(checkpoint)[0].is_file():
            raise UserError(f"--checkpoint: {checkpoint} not found")
        cfg = load_config(config if config is not None else "tiny")
        sd, meta = load_checkpoint(checkpoint)
        if meta.get("role") not in (None, "student"):
            raise UserError(f"--checkpoint: {checkpoint} has role {meta.get('role')!r}; the board bundle needs "
                            "the ternary student")
        student = build_model(cfg.model, student=True)
        load_into(student, sd, source=str(checkpoint))
        student.eval()
        ev = VPREvalSet(eval_root(cfg.data), cfg.model.student_img_size, cfg.data.positive_radius_m)
        n_db = len(ev.database)
        if n_db == 0:
            raise UserError(f"the evaluation database of {config or 'tiny'} is empty")
        calib = torch.stack([ev.database[i][0] for i in range(min(calibration, n_db))])
        export_bundle(student, calib, out, sparsity=sparsity, extra_meta={"checkpoint": str(checkpoint)})
        n = n_db if database is None else min(database, n_db)
        msg = f"board bundle -> {out} (trunk.npz, head_q.npz, head.npz, meta.json)"
        if n:
            driver_package()
            from tatvpr_pynq.runtime import PlaceRecognizer

            rec = PlaceRecognizer(out)
            paths = ev.database.paths[:n]
            rec.build_database(np.asarray(load_rgb(p)) for p in paths)
            rec.save_database()
            (out / "database.json").write_text(json.dumps([str(p) for p in paths], indent=1) + "\n")
            msg += f"; database.npy of {n} images ({rec.database.shape[1]}-d descriptors)"
        print(msg)
