"""cifar10-lt / cifar100-lt from fake batch files in torchvision's pickled format.

The fake sets have the real class counts (5,000 / 500 per training class, 1,000 / 100 per
test class) and otherwise black images whose first three bytes encode the image's position
in the training (or test) set and its label, so the tests can follow every image through the
cut. They are written once per session (about 300 MB) and shared by the tests here.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lort.data import build_dataset, keep_long_tail, long_tail_counts
from lort.data.transforms import CIFAR_MEAN, CIFAR_STD
from lort.errors import FileReadError, InputError


def fake_batch(num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Shuffled balanced labels and N x 3072 images tagged with (position, label)."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))
    data = np.zeros((labels.size, 3072), dtype=np.uint8)
    position = np.arange(labels.size)
    data[:, 0], data[:, 1], data[:, 2] = position // 256, position % 256, labels
    return data, labels.tolist()


def dump(path: Path, content: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(content, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_fake_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data, labels = fake_batch(10, 5000, seed=1)
    for b in range(5):
        part = slice(10_000 * b, 10_000 * (b + 1))
        dump(folder / f"data_batch_{b + 1}", {"data": data[part], "labels": labels[part]})
    test_data, test_labels = fake_batch(10, 1000, seed=2)
    dump(folder / "test_batch", {"data": test_data, "labels": test_labels})
    names = [
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
    dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10_000})


def write_fake_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per_class, seed in (("train", 500, 3), ("test", 100, 4)):
        data, labels = fake_batch(100, per_class, seed)
        coarse = [label // 5 for label in labels]
        dump(folder / name, {"data": data, "fine_labels": labels, "coarse_labels": coarse})
    names = [f"class{c:02d}" for c in range(100)]
    dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-cifar")
    write_fake_cifar10(root)
    write_fake_cifar100(root)
    return root


def tagged(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, label) read back from the first three bytes (R of pixels 0..2)."""
    flat = images.reshape(len(images), -1, 3)[:, :3, 0].astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1], flat[:, 2]


@pytest.mark.parametrize(
    ("name", "ratio", "rule", "total"),
    [
        ("cifar10-lt", None, "ltwb", 12_406),
        ("cifar100-lt", 100.0, "ldam", 10_847),
        ("cifar100-lt", 50.0, "ltwb", 12_608),
    ],
)
def test_end_to_end_cut(
    fake_cifar_root: Path, name: str, ratio: float | None, rule: str, total: int
) -> None:
    data = build_dataset(name, data_root=fake_cifar_root, imbalance_ratio=ratio, lt_split=rule)
    num_classes, n_max = (10, 5000) if name == "cifar10-lt" else (100, 500)
    counts = long_tail_counts(n_max, num_classes, ratio or 100.0)
    assert data.train_labels.size == total == data.manifest["train_total"]
    np.testing.assert_array_equal(data.train_counts(), counts)
    assert data.manifest["test_counts"] == [10_000 // num_classes] * num_classes
    assert (data.image_size, data.in_channels, data.num_classes) == (32, 3, num_classes)
    assert data.manifest["split_rule"] == rule and data.manifest["n_max"] == n_max
    assert data.manifest["imbalance_ratio"] == (ratio or 100.0)
    # every kept image carries its own label, and the kept positions follow the rule
    positions, labels = tagged(data.sources["train"])
    np.testing.assert_array_equal(labels, data.train_labels)
    all_labels = np.random.default_rng(1 if num_classes == 10 else 3).permutation(
        np.repeat(np.arange(num_classes), n_max)
    )
    np.testing.assert_array_equal(positions, keep_long_tail(all_labels, counts, rule))
    test_positions, test_labels = tagged(data.sources["test"])
    np.testing.assert_array_equal(test_positions, np.arange(10_000))
    np.testing.assert_array_equal(test_labels, data.test_labels)


def test_class_names_tensors_and_validation(fake_cifar_root: Path) -> None:
    data = build_dataset("cifar10-lt", data_root=fake_cifar_root, val_fraction=0.1, seed=5)
    assert data.class_names[0] == "airplane" and data.class_names[-1] == "truck"
    assert data.val_labels is not None and data.val_labels.size + data.train_labels.size == 12_406
    assert data.manifest["data_root"] == str(fake_cifar_root.resolve())
    val_positions, val_labels = tagged(data.sources["val"])
    np.testing.assert_array_equal(val_labels, data.val_labels)
    assert np.intersect1d(val_positions, tagged(data.sources["train"])[0]).size == 0
    image, label = data.dataset("test")[0]
    assert image.shape == (3, 32, 32) and label == data.test_labels[0]
    # a black pixel normalises to -mean/std in each channel
    black = -torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(image[:, 31, 31], black)
    torch.manual_seed(0)
    assert data.dataset("train", augment=True)[0][0].shape == (3, 32, 32)


def test_missing_files_show_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileReadError) as err:
        build_dataset("cifar100-lt", data_root=tmp_path)
    message = str(err.value)
    assert "cifar-100-python" in message and "--data-root" in message and "--download" in message
    assert str(tmp_path / "cifar-100-python" / "meta") in message
    with pytest.raises(FileReadError, match="data_batch_1"):
        build_dataset("cifar10-lt", data_root=tmp_path / "absent")
    with pytest.raises(InputError, match="--data-root"):
        build_dataset("cifar10-lt")


def test_corrupt_batch_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a CIFAR pickle"):
        build_dataset("cifar100-lt", data_root=tmp_path)
