"""Dataset readers: .npz, folder + labels.csv, tar of class folders; bad input is one line."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from gzsq.data import load_dataset
from gzsq.errors import DataError

from .conftest import CIFAR_TRAIN, needs


def _jpeg(color):
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buf, format="PNG")
    return buf.getvalue()


def test_npz(tmp_path):
    images = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1, 2]))
    ds = load_dataset(tmp_path / "a.npz")
    assert len(ds) == 3 and ds.images([2])[0].shape == (4, 4, 3)


def test_folder_with_labels_csv(tmp_path):
    for i, color in enumerate(["red", "blue"]):
        (tmp_path / f"{i}.png").write_bytes(_jpeg(color))
    (tmp_path / "labels.csv").write_text("file,label,extra\n0.png,3,x\n1.png,5,y\n")
    ds = load_dataset(tmp_path)
    assert list(ds.labels) == [3, 5]
    assert tuple(ds.images([1])[0][0, 0]) == (0, 0, 255)


def test_tar_of_class_folders(tmp_path):
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        for name, color in [("train/b/0.jpg", "blue"), ("train/a/0.jpg", "red"), ("train/a/1.jpg", "red")]:
            data = _jpeg(color)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = load_dataset(path)
    assert ds.class_names == ["a", "b"] and list(ds.labels) == [0, 0, 1]


def test_shared_cifar_train_tar_reads_lazily():
    ds = load_dataset(needs(CIFAR_TRAIN))
    assert len(ds) == 50000 and ds.images([0, 49999])[1].shape == (32, 32, 3)


@pytest.mark.parametrize("make", ["missing", "bad_npz", "no_csv", "text"])
def test_bad_datasets_one_line_error(tmp_path, make):
    path = tmp_path / "x"
    if make == "bad_npz":
        path = tmp_path / "x.npz"
        np.savez(path, pictures=np.zeros(3))
    elif make == "no_csv":
        path.mkdir()
    elif make == "text":
        path.write_text("hello")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert "\n" not in str(err.value)
