"""Save and load a distilled calibration set (.npz with its settings), and a preview grid."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..sources.registry import Calibration


def _atomic_target(path: Path, suffix: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return tmp


def save_calibration(path: str | Path, calib: Calibration, meta: dict | None = None) -> None:
    """images (float32 N×C×H×W, normalized) + a JSON string of source, seed, seconds, log, meta."""
    path = Path(path)
    info = {"source": calib.source, "seed": calib.seed, "seconds": calib.seconds,
            "log": _jsonable(calib.log), "meta": meta or {}}
    tmp = _atomic_target(path, ".npz")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=calib.images.numpy().astype(np.float32), info=json.dumps(info))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_calibration(path: str | Path) -> Calibration:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, info = z["images"], json.loads(str(z["info"]))
    except Exception as exc:
        raise DataError(f"cannot read calibration set {path}: {exc}") from None
    return Calibration(torch.from_numpy(images), info["source"], info["seed"], info["seconds"],
                       {**info["log"], "meta": info["meta"]})


def save_preview(path: str | Path, images: torch.Tensor, spec, *, max_images: int = 64) -> None:
    """A square grid of the first images, de-normalized to pixels, as PNG."""
    from PIL import Image

    pixels = spec.to_uint8(images[:max_images])  # N,H,W,C
    n, h, w, _ = pixels.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(pixels):
        r, c = divmod(i, cols)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = im
    scale = max(1, 256 // max(h, 1) // 2)
    pil = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    tmp = _atomic_target(path, ".png")
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)
