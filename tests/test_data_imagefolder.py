"""imagefolder on the shared CIFAR-10 JPEG set and on small fake folders."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cifar_archive
from lort.data import build_dataset, long_tail_counts
from lort.data.transforms import CIFAR_MEAN, IMAGENET_MEAN
from lort.errors import FileReadError, InputError

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture(scope="session")
def cifar10_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive_file = cifar_archive()
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    if shutil.which("tar"):  # about 3 s, against about 20 s for the tarfile module
        subprocess.run(["tar", "xzf", str(archive_file), "-C", str(root)], check=True)
    else:
        with tarfile.open(archive_file) as archive:
            archive.extractall(root, filter="data")
    return root


def write_folder(root: Path, counts: dict[str, tuple[int, int]], size: int = 32) -> Path:
    """root/train/<class>/k.png and root/test/<class>/k.png, counts (train, test) per class."""
    for label, (name, split_counts) in enumerate(counts.items()):
        for split, n in zip(("train", "test"), split_counts, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.new("RGB", (size, size), (label * 50, k, 0)).save(folder / f"{k:03d}.png")
    return root


def test_real_cifar10_jpeg(cifar10_jpeg: Path) -> None:
    natural = build_dataset("imagefolder", data_root=cifar10_jpeg)
    assert natural.class_names == CIFAR10_CLASSES
    assert natural.train_counts().tolist() == [5000] * 10
    assert np.bincount(natural.test_labels).tolist() == [1000] * 10
    assert natural.manifest["split_rule"] == "natural"
    data = build_dataset("imagefolder", data_root=cifar10_jpeg, imbalance_ratio=100)
    assert data.train_labels.size == 12_406 == data.manifest["train_total"]
    np.testing.assert_array_equal(data.train_counts(), long_tail_counts(5000, 10, 100.0))
    assert data.manifest["n_max"] == 5000 and data.manifest["split_rule"] == "ltwb"
    # ltwb keeps the first n_i files of each class in sorted filename order
    paths = data.sources["train"].paths
    assert paths[0] == "train/airplane/0000.jpg" and paths[-1] == "train/truck/0049.jpg"
    assert data.image_size == 32 and data.transform_spec.mean == CIFAR_MEAN
    image, label = data.dataset("train", augment=True)[12_405]
    assert image.shape == (3, 32, 32) and label == 9


def test_small_fake_folder_and_validation(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"b": (8, 2), "a": (12, 3), "c": (4, 0)}, size=16)
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    data = build_dataset("imagefolder", data_root=root, imbalance_ratio=4, val_fraction=0.25)
    assert data.class_names == ["a", "b", "c"] and data.image_size == 16
    kept = long_tail_counts(12, 3, 4.0)  # [12, 6, 3]
    assert data.val_labels is not None
    assert (data.train_counts() + np.bincount(data.val_labels, minlength=3)).tolist() == list(kept)
    assert data.manifest["test_counts"] == [3, 2, 0]
    assert data.dataset("val")[0][0].shape == (3, 16, 16)


def test_large_images_use_the_224_pipeline(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"x": (2, 1), "y": (1, 1)}, size=80)
    data = build_dataset("imagefolder", data_root=root)
    assert data.image_size == 224 and data.transform_spec.mean == IMAGENET_MEAN
    assert not data.transform_spec.color_jitter
    assert data.dataset("test")[0][0].shape == (3, 224, 224)
    assert data.dataset("train", augment=True)[2][0].shape == (3, 224, 224)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileReadError) as err:
        build_dataset("imagefolder", data_root=tmp_path / "none")
    assert "train/<class>/<image>" in str(err.value) and "--data-root" in str(err.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(FileReadError, match="test is missing"):
        build_dataset("imagefolder", data_root=tmp_path)
    (tmp_path / "test").mkdir()
    with pytest.raises(InputError, match="no class sub-folders"):
        build_dataset("imagefolder", data_root=tmp_path)
    write_folder(tmp_path, {"a": (2, 1)})
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        build_dataset("imagefolder", data_root=tmp_path)
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "test" / "extra").mkdir()
    with pytest.raises(InputError, match="extra"):
        build_dataset("imagefolder", data_root=tmp_path)
