"""Image loading and the preprocessing the VPR references use.

GSV-Cities, MixVPR, BoQ and the VPR benchmark code all feed the network a resized RGB image
normalised with the ImageNet mean and standard deviation. The teacher and the student have
their own input sides (``model.teacher_img_size`` / ``model.student_img_size``), so every
loader takes ``img_size`` and resizes to ``img_size x img_size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tatvpr_hw.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a missing or corrupt file raises :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"corrupt or unreadable image {path}: {err}") from None


def preprocess(img: Image.Image, img_size: int) -> torch.Tensor:
    """Resize to ``img_size`` x ``img_size`` (bilinear), scale to [0, 1], ImageNet-normalise.

    Returns a float32 tensor [3, img_size, img_size].
    """
    if img.size != (img_size, img_size):
        img = img.resize((img_size, img_size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy((arr - _MEAN) / _STD)


def load_image(path: str | Path, img_size: int) -> torch.Tensor:
    """:func:`load_rgb` then :func:`preprocess`."""
    return preprocess(load_rgb(path), img_size)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation (for figures): [..., 3, H, W] -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)
