"""Save and load a distilled calibration set (.npz with its settings), and a preview grid.

Files are written atomically (`gzsq.atomic`) and byte-for-byte reproducibly:
the same images and settings give the same bytes. That is why the
.npz is zipped here with fixed member timestamps instead of by np.savez (which
stamps the current time), and why wall-clock timings are not stored in it
(they go to stdout; `Calibration.seconds` of a loaded set is 0.0).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open, atomic_path
from ..errors import DataError
from .registry import Calibration

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can record: a constant, not "now"


def write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format (np.load reads it), but deterministic: no timestamps, fixed order."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the host: same bytes everywhere
            z.writestr(info, buf.getvalue())


def calibration_info(calib: Calibration, meta: dict | None = None) -> dict:
    """What the .npz records besides the images: source, seed, the source's log and `meta`, no timings."""
    log = {k: v for k, v in calib.log.items() if k != "seconds"}
    return {"source": calib.source, "seed": calib.seed, "log": _jsonable(log), "meta": _jsonable(meta or {})}


def save_calibration(path: str | Path, calib: Calibration, meta: dict | None = None) -> None:
    """images (float32 N×C×H×W, normalized) + a JSON string of source, seed, log, meta; atomic and reproducible."""
    info = calibration_info(calib, meta)
    images = calib.images.detach().cpu().numpy().astype(np.float32)
    with atomic_open(path, "wb") as f:
        write_npz(f, {"images": images, "info": np.array(json.dumps(info))})


def load_calibration(path: str | Path) -> Calibration:
    """Read a set written by `save_calibration`; anything else is a one-line DataError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"images", "info"} <= set(z.files):
                raise DataError(f"{path} lacks the arrays 'images' and 'info'; not a set written by gzsq distill")
            images, info = z["images"], json.loads(str(z["info"]))
    except DataError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read calibration set {path}: {first}") from None
    if not isinstance(info, dict) or not {"source", "seed"} <= set(info):
        raise DataError(f"{path}: 'info' lacks source and seed; not a set written by gzsq distill")
    if images.dtype != np.float32 or images.ndim != 4 or len(images) == 0:
        raise DataError(f"{path}: 'images' must be float32 N×C×H×W with N ≥ 1, got {images.dtype} {images.shape}")
    if not np.isfinite(images).all():
        raise DataError(f"{path}: 'images' hold NaN/Inf")
    log = info.get("log") if isinstance(info.get("log"), dict) else {}
    seconds = info.get("seconds", 0.0)
    return Calibration(torch.from_numpy(images), str(info["source"]), info["seed"],
                       float(seconds) if isinstance(seconds, (int, float)) else 0.0,
                       {**log, "meta": info.get("meta", {})})


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
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")


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


def load_calibration_for(model, path: str | Path) -> Calibration:
    """A saved calibration set, checked against the model's input shape."""
    calibration = load_calibration(path)
    if tuple(calibration.images.shape[1:]) != tuple(model.input_spec.shape):
        raise DataError(f"{path} holds {tuple(calibration.images.shape[1:])} images but the model takes "
                        f"{tuple(model.input_spec.shape)}: distill the set from this model")
    return calibration
