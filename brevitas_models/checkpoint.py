"""Checkpoints: ours (safetensors + JSON metadata) and foreign ones (DINOv2 hub, timm, BoQ).

Our format, written by :func:`save_checkpoint` and read by :func:`load_checkpoint`::

    <name>.safetensors   every tensor of ``model.state_dict()`` (no pickle)
    <name>.json          {"format": "tatvpr-checkpoint", "format_version": 1,
                          "safetensors": {"file", "bytes", "sha256", "num_tensors"},
                          "meta": {"config", "role", "stage", "step", "seed", "rng",
                                   "teacher_checkpoint", ...}}

Both files are written atomically (temporary file + rename); the JSON is written last and
records the size and SHA-256 of the tensor file, so a reader detects a missing, truncated,
corrupt or mismatched pair and says which.

Foreign checkpoints are brought to our names by pure ``state_dict -> state_dict`` adapters,
one per family, then loaded with :func:`load_into`, which reports every missing key,
unexpected key and shape mismatch by name in one :class:`ModelInputError`:

- official DINOv2 hub (``cls_token``, ``pos_embed``, ``mask_token``, ``register_tokens``,
  ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``,
  ``norm``) -> timm names (:func:`dinov2_to_timm`);
- timm ``vit_*_patch14_dinov2`` names: unchanged;
- the BoQ release (``backbone.dino.*`` + ``aggregator.*``) and SALAD's
  (``backbone.model.*`` + ``aggregator.*``; also a MixVPR head trained that way) ->
  ``backbone.*`` + ``head.*``;
- ``_orig_mod.`` (a ``torch.compile``'d module or submodule, e.g. from BoQ's trainer) and a
  ``module.`` prefix on every key (DDP) are removed first.

Foreign ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors and plain
containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from brevitas_models.errors import ModelInputError
from brevitas_models._io import atomic_path, write_json

log = logging.getLogger(__name__)

FORMAT = "tatvpr-checkpoint"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
STAGES = ("teacher", "distill", "finetune", "init")
META_KEYS = ("config", "role", "stage", "step", "seed", "rng", "teacher_checkpoint")
StateDict = dict[str, torch.Tensor]

# --------------------------------------------------------------------------- our format


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(``<name>.safetensors``, ``<name>.json``) for ``path`` given with or without a suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain_tensors(state_dict: Mapping[str, Any]) -> StateDict:
    """Detached, contiguous CPU tensors; storage shared between keys is copied apart."""
    out: StateDict = {}
    seen: set[tuple[int, int]] = set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ModelInputError(f"state dict entry '{k}' is a {type(v).__name__}, not a tensor")
        t = v.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        elif t.numel():
            seen.add(key)
        out[k] = t
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ModelInputError(f"checkpoint metadata lacks {', '.join(missing)} (required: {', '.join(META_KEYS)})")
    if meta["role"] not in ROLES:
        raise ModelInputError(f"checkpoint role {meta['role']!r}: allowed are {', '.join(ROLES)}")
    if meta["stage"] not in STAGES:
        raise ModelInputError(f"checkpoint stage {meta['stage']!r}: allowed are {', '.join(STAGES)}")
    try:
        return json.loads(json.dumps(dict(meta), default=_json_default))
    except (TypeError, ValueError) as err:
        raise ModelInputError(f"checkpoint metadata is not JSON-serialisable: {err}") from None


def save_checkpoint(path: str | Path, model: nn.Module | Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically; return the .safetensors path.

    Args:
        path: checkpoint name, with or without ``.safetensors`` / ``.json``.
        model: the module (its ``state_dict()`` is saved) or a state dict.
        meta: metadata with at least the keys in :data:`META_KEYS`; ``role`` in :data:`ROLES`,
            ``stage`` in :data:`STAGES`; ``config`` may be a pydantic config object.
    """
    from safetensors.torch import save_file

    st_path, json_path = checkpoint_paths(path)
    meta = _check_meta(meta)
    sd = _plain_tensors(model.state_dict() if isinstance(model, nn.Module) else model)
    with atomic_path(st_path) as tmp:
        save_file(sd, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        info = {"file": st_path.name, "bytes": tmp.stat().st_size, "sha256": _sha256(tmp),
                "num_tensors": len(sd)}
    write_json(json_path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                           "safetensors": info, "meta": meta})
    log.info("saved checkpoint %s (%d tensors, %.1f MB)", st_path, len(sd), info["bytes"] / 1e6)
    return st_path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of one of our checkpoints, checked against its tensor file's size."""
    st_path, json_path = checkpoint_paths(path)
    return _read_json(st_path, json_path)["meta"]


def _read_json(st_path: Path, json_path: Path) -> dict[str, Any]:
    if not st_path.is_file():
        raise ModelInputError(f"checkpoint not found: {st_path} (a checkpoint is <name>.safetensors + <name>.json)")
    if not json_path.is_file():
        raise ModelInputError(f"checkpoint metadata missing: {json_path} should sit beside {st_path.name} "
                        f"(written by save_checkpoint)")
    try:
        doc = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelInputError(f"checkpoint metadata {json_path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelInputError(f"{json_path} is not a {FORMAT} metadata file (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelInputError(f"{json_path}: format_version {doc.get('format_version')!r} is not supported "
                        f"(this version reads {FORMAT_VERSION})")
    info = doc.get("safetensors")
    if not isinstance(info, dict) or not {"bytes", "sha256", "num_tensors"} <= info.keys() \
            or not isinstance(doc.get("meta"), dict):
        raise ModelInputError(f"{json_path}: metadata lacks its 'safetensors' record or 'meta'")
    size = st_path.stat().st_size
    if size != info["bytes"]:
        raise ModelInputError(f"checkpoint {st_path} is {size} bytes but its metadata says {info['bytes']}: "
                        f"truncated, or the two files do not belong together")
    return doc


def load_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """Read one of our checkpoints: (state dict, meta). Every inconsistency is a ModelInputError."""
    from safetensors.torch import load_file

    st_path, json_path = checkpoint_paths(path)
    doc = _read_json(st_path, json_path)
    info = doc["safetensors"]
    if _sha256(st_path) != info["sha256"]:
        raise ModelInputError(f"checkpoint {st_path} does not match its metadata {json_path.name} "
                        f"(SHA-256 differs): corrupt, or the two files do not belong together")
    try:
        sd = load_file(str(st_path))
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ModelInputError(f"checkpoint {st_path} is not a readable safetensors file: {err}") from None
    if len(sd) != info["num_tensors"]:
        raise ModelInputError(f"checkpoint {st_path} holds {len(sd)} tensors, metadata says {info['num_tensors']}")
    return sd, doc["meta"]


# --------------------------------------------------------------------------- RNG state


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def rng_state() -> dict[str, Any]:
    """JSON-able state of Python's, NumPy's and torch's (CPU, CUDA) random generators."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state` (CUDA only when present on both sides)."""
    try:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        n = state["numpy"]
        np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                             n["has_gauss"], n["gauss"]))
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelInputError(f"checkpoint RNG state is malformed: {err}") from None


# --------------------------------------------------------------------------- foreign files


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a checkpoint file of any supported kind (no arbitrary unpickling).

    ``.safetensors`` with a ``.json`` beside it is read as ours (checked); other
    ``.safetensors`` as plain tensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` with
    ``torch.load(weights_only=True)``, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelInputError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        if checkpoint_paths(path)[1].is_file():
            return load_checkpoint(path)[0]
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as err:
            raise ModelInputError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelInputError(f"{path} holds objects other than tensors and plain containers; refusing to "
                        f"unpickle it (weights_only=True): {str(err).splitlines()[0]}") from None
    except (EOFError, RuntimeError, OSError, ValueError) as err:
        raise ModelInputError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    for wrapper in ("state_dict", "model", "teacher"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise ModelInputError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelInputError(f"{path}: entries that are not tensors: {_name_list(bad)}")
    return dict(obj)


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def dinov2_to_timm(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Official DINOv2 hub names -> timm ``VisionTransformer`` names (pure).

    - ``mask_token`` (masked-image training only) is dropped;
    - with registers (``register_tokens``), timm's layout has no position embedding for the
      class token (``no_embed_class``): the class position is added into ``cls_token`` and
      removed from ``pos_embed``; ``register_tokens`` becomes ``reg_token``;
    - block-chunked names ``blocks.C.N.*`` become ``blocks.N.*``; SwiGLU ``mlp.w12/w3``
      become ``mlp.fc1/fc2``;
    - everything else (``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma,
      norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``) already has timm's name.
    """
    sd = dict(sd)
    sd.pop("mask_token", None)
    out: StateDict = {}
    if "register_tokens" in sd:
        pos = sd.pop("pos_embed")
        out["reg_token"] = sd.pop("register_tokens")
        out["cls_token"] = sd.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    for k, v in sd.items():
        k = _CHUNKED_BLOCK.sub(r"blocks.\1.", k)
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        out[k] = v
    return out


def _sub(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _prefixed(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def detect_family(sd: Mapping[str, torch.Tensor]) -> str:
    """'boq' | 'salad' | 'ours' | 'dinov2' | 'timm' for a state dict (after ``module.`` removal)."""
    keys = list(sd)
    if any(k.startswith("backbone.dino.") for k in keys):
        return "boq"
    if any(k.startswith("backbone.model.") for k in keys) and any(k.startswith("aggregator.") for k in keys):
        return "salad"
    if any(k.startswith("backbone.") for k in keys):
        return "ours"
    if "mask_token" in sd or "register_tokens" in sd:
        return "dinov2"
    if "cls_token" in sd or "pos_embed" in sd or any(k.startswith("blocks.") for k in keys):
        return "timm"
    raise ModelInputError(f"unrecognised checkpoint layout (first keys: {_name_list(keys[:5])}); supported: "
                    f"our checkpoints, DINOv2 hub, timm ViT, the BoQ release, SALAD")


_COMPILED = re.compile(r"(^|\.)_orig_mod\.")


def strip_compile_prefix(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Drop every ``_orig_mod.`` name component that ``torch.compile`` adds (``_orig_mod.x`` for a
    compiled model, ``a._orig_mod.x`` for a compiled submodule ``a``)."""
    out: StateDict = {}
    for k, v in sd.items():
        new = _COMPILED.sub(r"\1", k)
        if new in out:
            raise ModelInputError(f"state dict has both '{k}' and another key that is '{new}' without "
                                  f"torch.compile's _orig_mod. prefix")
        out[new] = v
    return out


def adapt_foreign_state_dict(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Any supported state dict -> our :class:`~brevitas_models.model.VPRModel` names (pure).

    Backbone weights land under ``backbone.`` (timm names), head weights under ``head.``.
    A backbone-only checkpoint yields ``backbone.*`` keys only (timm classifier weights
    ``head.weight``/``head.bias``/``fc_norm.*`` are dropped: the backbone has no classifier).
    """
    sd = strip_compile_prefix(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = _sub(sd, "module.")
    family = detect_family(sd)
    if family == "ours":
        return sd
    if family in ("boq", "salad"):
        inner = "backbone.dino." if family == "boq" else "backbone.model."
        backbone = dinov2_to_timm(_sub(sd, inner))
        other = [k for k in sd if not k.startswith((inner, "aggregator."))]
        if other:
            raise ModelInputError(f"{family} checkpoint has keys outside {inner}* and aggregator.*: {_name_list(other)}")
        return {**_prefixed(backbone, "backbone."), **_prefixed(_sub(sd, "aggregator."), "head.")}
    if family == "dinov2":
        sd = dinov2_to_timm(sd)
    dropped = [k for k in sd if k in ("head.weight", "head.bias") or k.startswith("fc_norm.")]
    if dropped:
        log.info("dropping classifier weights of the foreign backbone: %s", ", ".join(dropped))
    return _prefixed({k: v for k, v in sd.items() if k not in dropped}, "backbone.")


# --------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What :func:`load_into` / :func:`load_foreign` did."""

    loaded: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # grid-sized head tensors not copied


def _name_list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def _resample_pos_embed(model: nn.Module, key: str, value: torch.Tensor, target: torch.Tensor
                        ) -> torch.Tensor | None:
    """Resample a checkpoint ``pos_embed`` to the model's grid with the backbone's own resampler."""
    if not key.endswith("pos_embed") or value.dim() != 3 or value.shape[-1] != target.shape[-1]:
        return None
    owner = model.get_submodule(key.rpartition(".")[0]) if "." in key else model
    num_prefix = 0 if getattr(owner, "no_embed_class", False) else int(getattr(owner, "num_prefix_tokens", 1))
    from brevitas_models.vit import interpolate_pos_encoding_dinov2

    new_n = target.shape[1] - num_prefix
    side = math.isqrt(new_n)
    if value.shape[1] <= num_prefix or side * side != new_n:
        return None
    settings = {}
    if hasattr(owner, "interpolate_offset"):  # the backbone's own (register variants differ)
        settings = {"offset": owner.interpolate_offset, "antialias": owner.interpolate_antialias}
    try:
        return interpolate_pos_encoding_dinov2(value, (side, side), num_prefix, **settings)
    except ModelInputError:
        return None


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              allow_missing: tuple[str, ...] = (), source: str = "state dict") -> LoadReport:
    """Copy ``state_dict`` into ``model``; every misfit is reported by name in one ModelInputError.

    Args:
        model: target module.
        state_dict: tensors under the model's own names.
        allow_missing: key prefixes that may be absent (they keep their initial values),
            e.g. ``("head.",)`` for a backbone-only checkpoint.
        source: how to name the state dict in messages (e.g. its path).

    A ``pos_embed`` for another grid is resampled with the backbone's resampler
    (DINOv2's interpolation) when one is available; otherwise it is a shape mismatch.
    """
    own = model.state_dict()
    report = LoadReport()
    sd = dict(state_dict) if any("_orig_mod." in k for k in own) else strip_compile_prefix(state_dict)
    missing = [k for k in own if k not in sd and not k.startswith(allow_missing)]
    unexpected = [k for k in sd if k not in own]
    shapes = []
    for k, v in sd.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            resampled = _resample_pos_embed(model, k, v, own[k])
            if resampled is not None and tuple(resampled.shape) == tuple(own[k].shape):
                sd[k] = resampled
                report.resampled.append(k)
            else:
                shapes.append(f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}")
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit {type(model).__name__}:"]
        if missing:
            parts.append(f"  {len(missing)} missing: {_name_list(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} unexpected: {_name_list(unexpected)}")
        if shapes:
            parts.append(f"  {len(shapes)} shape mismatches: {_name_list(shapes)}")
        raise ModelInputError("\n".join(parts))
    result = model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; keep torch's word final
        raise ModelInputError(f"{source}: unexpected keys {_name_list(result.unexpected_keys)}")
    report.loaded = list(sd)
    report.left_at_init = [k for k in own if k not in sd]
    return report


def load_foreign(model: nn.Module, path: str | Path) -> LoadReport:
    """Load any supported checkpoint file into a :class:`VPRModel` (head optional in the file)."""
    sd = adapt_foreign_state_dict(read_state_dict(path))
    has_head = any(k.startswith("head.") for k in sd)
    report = load_into(model, sd, allow_missing=() if has_head else ("head.",), source=str(path))
    if not has_head:
        log.info("%s has no head weights: the head keeps its initial values", path)
    return report


def load_teacher(model_cfg, *, checkpoint: str | Path | None = None) -> nn.Module:
    """Build the float teacher and load ``checkpoint`` (default ``model_cfg.teacher_checkpoint``)."""
    from brevitas_models.model import build_model

    model = build_model(model_cfg, student=False)
    ck = checkpoint if checkpoint is not None else model_cfg.teacher_checkpoint
    if ck is not None:
        load_foreign(model, ck)
    return model


def load_model(path: str | Path, model_cfg=None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint file belongs to and load it: (VPRModel, meta).

    Our checkpoints carry their run config and role: the teacher or student is rebuilt from
    ``meta["config"]["model"]`` (or ``model_cfg`` when given) and loaded exactly. A foreign
    file (DINOv2 hub, timm, BoQ release) needs ``model_cfg`` and gives the teacher; its meta
    is ``{"role": "teacher", "stage": "foreign", "source": path}``.
    """
    from brevitas_models.model import build_model
    from brevitas_models.config import ModelConfig

    path = Path(path)
    st_path, json_path = checkpoint_paths(path)
    ours = path.suffix != ".pth" and json_path.is_file()
    if not ours:
        if path.suffix in ("", ".json") and not path.is_file():
            # the name of one of our checkpoints whose files are missing: say which one
            _read_json(st_path, json_path)
        if model_cfg is None:
            raise ModelInputError(f"{path} is not one of our checkpoints (no {json_path.name}); loading a foreign "
                            f"checkpoint needs the model config")
        model = build_model(model_cfg, student=False)
        load_foreign(model, path)
        return model, {"role": "teacher", "stage": "foreign", "source": str(path)}
    sd, meta = load_checkpoint(st_path)
    if model_cfg is None:
        try:
            model_cfg = ModelConfig.model_validate(meta["config"]["model"])
        except Exception as err:
            raise ModelInputError(f"{json_path}: the stored run config has no valid 'model' section: {err}") from None
    model = build_model(model_cfg, student=meta["role"] == "student")
    load_into(model, sd, source=str(st_path))
    return model, meta


# --------------------------------------------------------------------------- stage 1


def _is_quantizer_state(key: str) -> bool:
    return "_quant." in key or key.endswith("_quant")


def _grid_sized_head_prefixes(student: nn.Module, teacher: nn.Module) -> tuple[str, ...]:
    """``head.<p>`` for the head's grid-dependent prefixes when the two heads' grids differ."""
    s_head, t_head = getattr(student, "head", None), getattr(teacher, "head", None)
    if s_head is None or t_head is None or getattr(s_head, "grid_hw", None) == getattr(t_head, "grid_hw", None):
        return ()
    return tuple(f"head.{p}" for p in getattr(s_head, "grid_dependent", ()))


def init_student_from_teacher(student: nn.Module, teacher: nn.Module) -> LoadReport:
    """Stage 1: copy every float weight of ``teacher`` into ``student``.

    A teacher ``nn.Linear`` at ``P`` lands in the student's SparseTernaryLinear at
    ``P.linear.weight`` / ``P.linear.bias``; every other tensor keeps its name. Quantizer
    state of the student (activation thresholds) stays at its initial value. A teacher
    tensor with no place in the student, a student weight the teacher lacks, or a shape
    difference (other than a ``pos_embed`` the backbone can resample) is a ModelInputError naming
    each.

    Teacher and student may run at different image sizes (e.g. 322 and 224 px). A head built
    for the patch grid has tensors sized by it (MixVPR: every mixer layer ``mix.*`` and the row
    projection ``row_proj.*``, its ``grid_dependent``); when the grids differ those are not
    copied and keep the student's fresh initialisation (listed in ``report.reinitialised``);
    the rest (MixVPR's ``channel_proj``, the whole backbone) is copied.
    """
    own = student.state_dict()
    grid_sized = _grid_sized_head_prefixes(student, teacher)
    mapped: StateDict = {}
    unplaced = []
    for k, v in teacher.state_dict().items():
        if grid_sized and k.startswith(grid_sized):
            continue
        if k in own:
            mapped[k] = v
            continue
        prefix, _, leaf = k.rpartition(".")
        alt = f"{prefix}.linear.{leaf}" if prefix else f"linear.{leaf}"
        if alt in own:
            mapped[alt] = v
        else:
            unplaced.append(k)
    if unplaced:
        raise ModelInputError(f"teacher weights with no place in the student: {_name_list(unplaced)}")
    quant = tuple(k for k in own if k not in mapped and _is_quantizer_state(k))
    report = load_into(student, mapped, allow_missing=quant + grid_sized, source="teacher")
    report.reinitialised = [k for k in own if grid_sized and k.startswith(grid_sized)]
    if report.reinitialised:
        log.info("teacher and student heads are built for different patch grids (%s vs %s): %d grid-sized "
                 "head tensors keep the student's initialisation: %s", tuple(teacher.head.grid_hw),
                 tuple(student.head.grid_hw), len(report.reinitialised), _name_list(report.reinitialised))
    return report
