"""digits-lt end to end, plus what every dataset shares: manifest, tensors, pickling."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from lort.data import DATASETS, LTData, build_dataset, long_tail_counts
from lort.data.transforms import DIGITS_MEAN, DIGITS_STD
from lort.errors import InputError


@pytest.fixture(scope="module")
def digits() -> LTData:
    return build_dataset("digits-lt", seed=0)


def test_counts_test_set_and_manifest(digits: LTData) -> None:
    assert digits.num_classes == 10 and digits.class_names == [str(c) for c in range(10)]
    assert (digits.image_size, digits.in_channels) == (8, 1)
    assert np.bincount(digits.test_labels).tolist() == [30] * 10
    m = digits.manifest
    # n_max = the smallest class left after the test draw (class 8: 174 - 30), IR 10
    assert m["n_max"] == 144 and m["imbalance_ratio"] == 10.0 and m["split_rule"] == "ltwb"
    np.testing.assert_array_equal(digits.train_counts(), long_tail_counts(144, 10, 10.0))
    assert m["train_counts"] == digits.train_counts().tolist()
    assert m["train_total"] == digits.train_labels.size == sum(m["train_counts"])
    assert m["test_counts"] == [30] * 10 and m["data_root"] is None and m["warnings"] == []
    assert json.loads(json.dumps(m)) == m
    assert digits.train_labels.dtype == np.int64 and digits.test_labels.dtype == np.int64


def test_seed_determinism_and_sha(digits: LTData) -> None:
    same = build_dataset("digits-lt", seed=0)
    np.testing.assert_array_equal(same.train_labels, digits.train_labels)
    assert same.manifest == digits.manifest
    other = build_dataset("digits-lt", seed=1)
    assert other.manifest["kept_sha256"] != digits.manifest["kept_sha256"]
    assert other.manifest["train_counts"] == digits.manifest["train_counts"]
    ldam = build_dataset("digits-lt", seed=0, lt_split="ldam", imbalance_ratio=5)
    assert ldam.manifest["split_rule"] == "ldam" and ldam.manifest["imbalance_ratio"] == 5.0
    assert ldam.manifest["kept_sha256"] != digits.manifest["kept_sha256"]


def test_tensors_are_normalised_and_augment_shifts(digits: LTData) -> None:
    from sklearn.datasets import load_digits

    test = digits.dataset("test")
    image, label = test[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and isinstance(label, int)
    raw = torch.from_numpy(load_digits().images / 16.0).float()
    pixels = ((image * DIGITS_STD[0] + DIGITS_MEAN[0]).reshape(1, 64) - raw.reshape(-1, 64)).abs()
    assert pixels.max(dim=1).values.min() < 1e-5  # it is one of the digits, undistorted
    torch.manual_seed(0)
    train = digits.dataset("train", augment=True)
    plain = digits.dataset("train")[3][0]
    shifted = [train[3][0] for _ in range(20)]
    assert all(s.shape == (1, 8, 8) for s in shifted)
    assert any(not torch.equal(s, plain) for s in shifted)


def test_datasets_pickle(digits: LTData) -> None:
    ds = digits.dataset("train", augment=True)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and copy[5][1] == ds[5][1]
    assert len(pickle.loads(pickle.dumps(digits)).train_labels) == digits.train_labels.size


def test_bad_arguments() -> None:
    assert DATASETS == (
        "digits-lt",
        "cifar10-lt",
        "cifar100-lt",
        "imagefolder",
        "imagenet-lt",
        "inat2018",
        "features",
    )
    with pytest.raises(InputError, match="digits-lt, cifar10-lt"):
        build_dataset("mnist")
    with pytest.raises(InputError, match="ltwb, ldam"):
        build_dataset("digits-lt", lt_split="random")
    with pytest.raises(InputError, match="download"):
        build_dataset("digits-lt", download=True)
    with pytest.raises(InputError, match="unknown split"):
        build_dataset("digits-lt").dataset("dev")


def test_package_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'sklearn', 'PIL'): sys.modules[m] = None\n"
        "import lort.data, lort.example\n"
        "print(lort.data.long_tail_counts(100, 3, 100.0).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[100, 10, 1]"
