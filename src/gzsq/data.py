"""Image datasets from disk, in the three layouts gzsq reads (issue 2, item 6).

- `.npz` with `images` (uint8 N×H×W×C) and `labels` (int);
- a folder holding `labels.csv` with columns `file,label` (extra columns ignored);
- a tar of `train/<class>/*.jpg` (class index = sorted class-folder order), decoded lazily:
  only the images asked for are read.

A `Dataset` is a label array plus a loader of uint8 HWC images by index; the
model's `InputSpec` turns those into tensors. Nothing is cached on disk.
"""

from __future__ import annotations

import csv
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import DataError


@dataclass
class Dataset:
    """Labels plus a way to fetch uint8 HWC images by index."""

    path: str
    labels: np.ndarray
    _load: Callable[[list[int]], list[np.ndarray]] = field(repr=False)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices) -> list[np.ndarray]:
        indices = [int(i) for i in indices]
        return self._load(indices)


def _decode(raw: bytes | Path, what: str) -> np.ndarray:
    try:
        if isinstance(raw, Path):
            pil = Image.open(raw)
        else:
            import io

            pil = Image.open(io.BytesIO(raw))
        return np.asarray(pil.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {what}: {exc}") from None


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
    except KeyError:
        raise DataError(f"{path} must hold arrays 'images' (uint8 N×H×W×C) and 'labels'") from None
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'images' must be uint8 N×H×W×3, got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return Dataset(str(path), labels.astype(np.int64), lambda idx: [images[i] for i in idx])


def _load_folder(path: Path) -> Dataset:
    table = path / "labels.csv"
    if not table.is_file():
        raise DataError(f"{path} is a folder without labels.csv (columns file,label)")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{table} needs a header with columns 'file' and 'label'")
    files = [path / r["file"] for r in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{table} names {len(missing)} missing files, e.g. {missing[0]}")
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    return Dataset(str(path), labels, lambda idx: [_decode(files[i], str(files[i])) for i in idx])


def _load_tar(path: Path) -> Dataset:
    try:
        tar = tarfile.open(path)
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png"))]
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read tar {path}: {exc}") from None
    members = [m for m in members if len(Path(m.name).parts) >= 2]
    if not members:
        raise DataError(f"{path} holds no <split>/<class>/<image> files")
    classes = sorted({Path(m.name).parts[-2] for m in members})
    index = {c: i for i, c in enumerate(classes)}
    members.sort(key=lambda m: m.name)
    labels = np.array([index[Path(m.name).parts[-2]] for m in members], dtype=np.int64)

    def load(idx: list[int]) -> list[np.ndarray]:
        with tarfile.open(path) as t:  # fresh handle: safe across processes
            return [_decode(t.extractfile(members[i]).read(), f"{path}:{members[i].name}") for i in idx]

    return Dataset(str(path), labels, load, class_names=classes)


def load_dataset(path: str | Path) -> Dataset:
    """Open a dataset in any of the supported layouts; a bad path is a one-line DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset {path} does not exist")
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    if tarfile.is_tarfile(path):
        return _load_tar(path)
    raise DataError(f"{path}: unknown dataset format (expected .npz, a folder with labels.csv, or a tar of class folders)")
