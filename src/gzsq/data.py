"""Image datasets from disk, in the three layouts gzsq reads.

- `.npz` with `images` (uint8 N×H×W×C) and `labels` (int);
- a folder holding `labels.csv` with columns `file,label` (extra columns ignored);
- a tar of `train/<class>/*.jpg` (class index = sorted class-folder order), decoded lazily:
  only the images asked for are read.

A `Dataset` is a label array plus a loader of uint8 HWC images by index; the
model's `InputSpec` turns those into tensors (`load_eval_set`: an `EvalSet`,
the labelled images every measurement runs on). Nothing is cached on disk.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm.auto import tqdm

from . import interrupt
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


MAX_LABEL = 2**31 - 1  # class indices are stored as int64, compared with a model's class count


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _decode(raw: bytes | Path, what: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 89 and 179 megapixels, then decodes; an image that size in a
            # calibration set is a decompression bomb or a mistake, so it is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(raw if isinstance(raw, Path) else io.BytesIO(raw)) as pil:
                return np.asarray(pil.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {what}: not an image format PIL can read") from None
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"cannot decode image {what}: {_first_line(exc)}") from None


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices: a 1-D array of non-negative integers (the upper bound is the model's, see evaluate)."""
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{where}: 'labels' must be a 1-D array of integer class indices, "
                        f"got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: labels must be class indices >= 0, found {int(labels.min())}")
    return labels


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"images", "labels"} <= set(z.files):
                raise DataError(f"{path} must hold arrays 'images' (uint8 N×H×W×3) and 'labels', "
                                f"found {sorted(z.files)[:4]}")
            images, labels = z["images"], z["labels"]
    except DataError:
        raise
    except Exception as exc:  # not a zip, a pickled array, a truncated member, ...
        raise DataError(f"cannot read {path} as .npz: {_first_line(exc)}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
        raise DataError(f"{path}: 'images' must be uint8 N×H×W×3 with N, H, W >= 1, got {images.dtype} "
                        f"{images.shape}")
    labels = _check_labels(labels, str(path))
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return Dataset(str(path), labels, lambda idx: [images[i] for i in idx])


def _read_table(table: Path) -> list[dict]:
    try:
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {table}: {_first_line(exc)}") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{table} needs a header with columns 'file' and 'label' and at least one row")
    return rows


def _row_label(row: dict, line: int, table: Path) -> int:
    text = row.get("label")
    try:
        label = int(str(text).strip())
    except ValueError:
        raise DataError(f"{table} line {line}: label {text!r} is not an integer class index") from None
    if label < 0:
        raise DataError(f"{table} line {line}: label {label} is negative; labels are class indices >= 0")
    if label > MAX_LABEL:
        raise DataError(f"{table} line {line}: label {str(label)[:20]} is not a plausible class index "
                        f"(at most {MAX_LABEL})")
    return label


def _row_file(row: dict, line: int, path: Path, root: Path) -> Path:
    """The image a row names; it must stay inside the dataset folder (no '../', no absolute paths)."""
    name = row.get("file")
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise DataError(f"{path / 'labels.csv'} line {line}: empty or invalid file name {name!r}")
    file = Path(os.path.normpath(root / name))  # lexical: symlinks inside the folder stay allowed
    if not file.is_relative_to(root):
        raise DataError(f"{path / 'labels.csv'} line {line}: {name!r} points outside the dataset folder")
    return file


def _load_folder(path: Path) -> Dataset:
    table = path / "labels.csv"
    if not table.is_file():
        raise DataError(f"{path} is a folder without labels.csv (columns file,label)")
    rows = _read_table(table)
    root = Path(os.path.normpath(path.absolute()))
    labels = np.array([_row_label(r, i + 2, table) for i, r in enumerate(rows)], dtype=np.int64)  # line 1: header
    files = [_row_file(r, i + 2, path, root) for i, r in enumerate(rows)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{table} names {len(missing)} missing files, e.g. {missing[0]}")
    return Dataset(str(path), labels, lambda idx: [_decode(files[i], str(files[i])) for i in idx])


def _load_tar(path: Path) -> Dataset:
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png"))]
    except Exception as exc:  # tarfile leaks EOFError, zlib/lzma/bz2 errors, ... on damaged archives
        raise DataError(f"cannot read tar {path}: {_first_line(exc)}") from None
    members = [m for m in members if len(Path(m.name).parts) >= 2]
    if not members:
        raise DataError(f"{path} holds no <split>/<class>/<image> files")
    classes = sorted({Path(m.name).parts[-2] for m in members})
    index = {c: i for i, c in enumerate(classes)}
    members.sort(key=lambda m: m.name)
    labels = np.array([index[Path(m.name).parts[-2]] for m in members], dtype=np.int64)

    def read(t: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        try:
            return t.extractfile(member).read()
        except Exception as exc:
            raise DataError(f"cannot read {path}:{member.name}: {_first_line(exc)}") from None

    def load(idx: list[int]) -> list[np.ndarray]:
        try:
            t = tarfile.open(path)  # fresh handle: safe across processes
        except Exception as exc:
            raise DataError(f"cannot read tar {path}: {_first_line(exc)}") from None
        with t:
            return [_decode(read(t, members[i]), f"{path}:{members[i].name}") for i in idx]

    return Dataset(str(path), labels, load, class_names=classes)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except Exception:  # a damaged compressed stream can raise instead of answering False
        return False


def load_dataset(path: str | Path) -> Dataset:
    """Open a dataset in any of the supported layouts; a bad path is a one-line DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset {path} does not exist")
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    if _is_tar(path):
        return _load_tar(path)
    if path.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise DataError(f"cannot read tar {path}: not a tar archive, or a damaged one")
    raise DataError(f"{path}: unknown dataset format (expected .npz, a folder with labels.csv, or a tar of class folders)")


@dataclass
class EvalSet:
    """Labelled images ready for a model: what every accuracy is measured on."""

    path: str
    images: torch.Tensor  # N×C×H×W, normalized for the model
    labels: np.ndarray
    preprocessing: str = ""  # what was done to the images, for reports (InputSpec.describe)


def load_eval_set(model: nn.Module, path: str | Path, *, progress: bool = False,
                  labels_must_fit: bool = True) -> EvalSet:
    """`labels_must_fit=False` admits labels beyond the model's classes (FP32-vs-int8 agreement still means
    something there, e.g. a 2-class ONNX model run on ImageNet images)."""
    data = load_dataset(path)
    from .models.validate import check_input

    num_classes = check_input(model)
    if labels_must_fit:
        check_labels(data.labels, num_classes, str(path))
    elif len(data.labels) == 0:
        raise DataError(f"{path} holds no images")
    spec = model.input_spec
    chunks, as_is = [], 0
    for start in tqdm(range(0, len(data), 250), desc="load data", disable=not progress, leave=False):
        interrupt.check("load-data")
        images = data.images(range(start, min(start + 250, len(data))))
        as_is += sum(spec.has_input_size(im) for im in images)
        chunks.append(spec.to_tensor(images))
    return EvalSet(str(path), torch.cat(chunks), data.labels, spec.describe(as_is, len(data)))


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Every label must name one of the model's classes; a CIFAR set on an ImageNet model is not an accuracy."""
    if len(labels) == 0:
        raise DataError(f"{where} holds no images")
    top = int(labels.max())
    if top >= num_classes:
        raise DataError(f"{where}: label {top} is out of range for a model with {num_classes} classes "
                        f"(labels must be 0..{num_classes - 1}); is this the model's dataset?")
