"""imagenet-lt / inat2018 from fake list files and a few tiny images in a temp folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lort.data import build_dataset
from lort.data.transforms import INAT_MEAN, INAT_STD
from lort.errors import FileReadError, InputError

PUBLISHED = "published list"
quiet = pytest.mark.filterwarnings(f"ignore:.*{PUBLISHED}")


def write_images(root: Path, entries: list[tuple[str, int]]) -> None:
    """A small image (alternating JPEG / PNG, odd sizes) at each listed path."""
    for i, (rel, label) in enumerate(entries):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (40 + i, 30), color=(label * 40 % 256, 100, 200))
        image.save(path)


def write_list(root: Path, name: str, entries: list[tuple[str, int]], extra: str = "") -> Path:
    path = root / name
    path.write_text("".join(f"{rel} {label}\n" for rel, label in entries) + extra)
    return path


def imagenet_entries(split: str, per_class: list[int]) -> list[tuple[str, int]]:
    wnids = ["n01440764", "n01443537", "n01484850"]
    return [
        (f"{split}/{wnids[c]}/{wnids[c]}_{k}.{'JPEG' if k % 2 else 'png'}", c)
        for c, n in enumerate(per_class)
        for k in range(n)
    ]


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    for name, split, per_class in (
        ("ImageNet_LT_train.txt", "train", [5, 3, 1]),
        ("ImageNet_LT_val.txt", "train", [0, 1, 1]),
        ("ImageNet_LT_test.txt", "val", [2, 2, 2]),
    ):
        entries = imagenet_entries(split, per_class)
        write_list(tmp_path, name, entries, extra="\n")  # a trailing blank line is fine
        write_images(tmp_path, entries)
    return tmp_path


@pytest.fixture
def inat_root(tmp_path: Path) -> Path:
    train = [(f"train_val2018/Plantae/{7477 + c}/img{k}.jpg", c) for c in range(2) for k in (4, 2)]
    test = [(f"train_val2018/Plantae/{7477 + c}/val{c}.jpg", c) for c in range(2)]
    write_list(tmp_path, "iNaturalist18_train.txt", train)
    write_list(tmp_path, "iNaturalist18_val.txt", test)
    write_images(tmp_path, train + test)
    return tmp_path


def test_imagenet_lt_lists(imagenet_root: Path) -> None:
    with pytest.warns(UserWarning, match=PUBLISHED) as caught:
        data = build_dataset("imagenet-lt", data_root=imagenet_root)
    assert len(caught) == 3 and len(data.manifest["warnings"]) == 3
    assert "ImageNet_LT_train.txt lists 9 images; the published list has 115,846" in str(
        caught[0].message
    )
    assert data.num_classes == 1000 and data.image_size == 224 and data.in_channels == 3
    assert data.class_names[:4] == ["n01440764", "n01443537", "n01484850", "3"]
    assert data.train_counts()[:3].tolist() == [5, 3, 1] and data.train_counts()[3:].sum() == 0
    assert data.val_labels is not None and data.val_labels.tolist() == [1, 2]
    m = data.manifest
    assert m["split_rule"] == "natural" and m["imbalance_ratio"] is None and m["n_max"] is None
    assert (m["train_total"], m["val_total"], m["test_total"]) == (9, 2, 6)
    assert data.transform_spec.color_jitter
    torch.manual_seed(0)
    for split, augment in (("train", True), ("val", False), ("test", False)):
        image, label = data.dataset(split, augment=augment)[1]
        assert image.shape == (3, 224, 224) and isinstance(label, int)


@quiet
def test_imagenet_lt_refuses_a_ratio_and_a_carved_val(imagenet_root: Path) -> None:
    with pytest.raises(InputError, match="imbalance ratio"):
        build_dataset("imagenet-lt", data_root=imagenet_root, imbalance_ratio=100)
    with pytest.raises(InputError, match="own validation list"):
        build_dataset("imagenet-lt", data_root=imagenet_root, val_fraction=0.1)
    with pytest.raises(InputError, match="--download"):
        build_dataset("imagenet-lt", data_root=imagenet_root, download=True)


@quiet
def test_inat_val_list_is_the_test_set(inat_root: Path) -> None:
    data = build_dataset("inat2018", data_root=inat_root, val_fraction=0.5, seed=0)
    assert data.num_classes == 8142 and data.class_names[:2] == ["7477", "7478"]
    assert data.test_labels.tolist() == [0, 1] and data.manifest["test_total"] == 2
    assert data.train_labels.size == 2 and data.val_labels is not None
    assert data.manifest["val_counts"][:2] == [1, 1] and data.manifest["val_sha256"]
    assert data.transform_spec.mean == INAT_MEAN and data.transform_spec.std == INAT_STD
    assert not data.transform_spec.color_jitter
    image, _ = data.dataset("test")[0]
    colour = torch.tensor([0, 100, 200]) / 255.0  # the uniform fake image, centre-cropped
    expected = (colour - torch.tensor(INAT_MEAN)) / torch.tensor(INAT_STD)
    torch.testing.assert_close(image[:, 112, 112], expected, atol=0.05, rtol=0)


@pytest.mark.parametrize(
    ("line", "lineno"),
    [("no_label_here", 3), ("img.jpg label", 3), ("img.jpg 8142", 3), ("img.jpg -1", 3)],
)
def test_bad_line_names_file_and_line(inat_root: Path, line: str, lineno: int) -> None:
    path = inat_root / "iNaturalist18_train.txt"
    lines = path.read_text().splitlines()
    lines.insert(lineno - 1, line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        build_dataset("inat2018", data_root=inat_root)
    assert f"{path}, line {lineno}" in str(err.value) and line in str(err.value)


def test_missing_root_and_files_show_the_layout(tmp_path: Path, inat_root: Path) -> None:
    with pytest.raises(FileReadError) as err:
        build_dataset("imagenet-lt", data_root=tmp_path / "nowhere")
    message = str(err.value)
    for name in ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"):
        assert str(tmp_path / "nowhere" / name) in message
    assert "--data-root" in message and "115,846" in message
    with pytest.raises(InputError, match="--data-root"):
        build_dataset("inat2018")
    (inat_root / "iNaturalist18_val.txt").unlink()
    with pytest.raises(FileReadError, match=r"missing iNaturalist18_val\.txt"):
        build_dataset("inat2018", data_root=inat_root)


@quiet
def test_missing_images(inat_root: Path) -> None:
    first = inat_root / "train_val2018/Plantae/7477/img4.jpg"
    first.unlink()
    with pytest.raises(FileReadError, match="relative to --data-root"):
        build_dataset("inat2018", data_root=inat_root)
    write_images(inat_root, [("train_val2018/Plantae/7477/img4.jpg", 0)])
    (inat_root / "train_val2018/Plantae/7478/img2.jpg").unlink()
    data = build_dataset("inat2018", data_root=inat_root)
    with pytest.raises(FileReadError, match=r"img2\.jpg"):
        data.dataset("train")[3]


@quiet
def test_dataloader_workers(imagenet_root: Path) -> None:
    data = build_dataset("imagenet-lt", data_root=imagenet_root)
    loader = DataLoader(data.dataset("test"), batch_size=3, num_workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 3, 224, 224)] * 2
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), data.test_labels)
