"""Print every head preset's descriptor size and parameter count.

    python -m brevitas_models.heads            # paper presets at D=768, 16x16 grid (224 px); tiny at D=192, 7x7;
                                               # resnet50_* at D=1024, 20x20
"""

from __future__ import annotations

import torch

from brevitas_models.heads import PRESETS, create_head


def preset_rows() -> list[dict]:
    """One row per (head, preset): the D and grid it is sized for, descriptor_dim, parameters."""
    rows = []
    for name, presets in PRESETS.items():
        for preset in presets:
            d, grid = (192, (7, 7)) if preset == "tiny" else (768, (16, 16))
            if preset.startswith("resnet50"):
                d, grid = 1024, (20, 20)  # ResNet-50 layer3 at 320 px
            with torch.device("meta"):
                head = create_head(name, preset, in_dim=d, grid_hw=grid)
            rows.append({"head": name, "preset": preset, "in_dim": d, "grid": f"{grid[0]}x{grid[1]}",
                         "descriptor_dim": head.descriptor_dim,
                         "params": sum(p.numel() for p in head.parameters())})
    return rows


def main() -> None:
    print(f"{'head':8} {'preset':14} {'D':>5} {'grid':>6} {'dim':>7} {'params':>10}")
    for r in preset_rows():
        print(f"{r['head']:8} {r['preset']:14} {r['in_dim']:>5} {r['grid']:>6} "
              f"{r['descriptor_dim']:>7} {r['params']:>10,}")


if __name__ == "__main__":
    main()
