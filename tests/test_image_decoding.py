"""The one image decoder (issue 21): a file's pixels bounded from its header, modes converted
faithfully to 8 bits, and every image of every split checked before stage 1 starts."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import one_line_error, run_cli
from lort.data.images import read_image, read_rgb
from lort.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

FIT = ("--dataset", "imagefolder", "--arch", "resnet8", "--epochs1", "1", "--epochs2", "1")


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height`` RGB, holding no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("side", [30_000, 9_000])  # above PIL's bomb error; above lort's bound
def test_a_huge_header_is_one_line_naming_the_file(tmp_path: Path, side: int) -> None:
    path = png_header(tmp_path / "huge.png", side, side)
    with pytest.raises(InputError, match=r"huge\.png") as e:
        read_rgb(path)
    assert "pixels" in str(e.value) and "\n" not in str(e.value)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    want = np.rint(values / 257).astype(np.uint8)
    rgb = np.asarray(read_rgb(tmp_path / "g16.png"))
    np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, axis=2))
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "g16.png", "L")), want)


def test_modes_convert_to_rgb_and_l(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    base = Image.fromarray(rgba[..., :3])
    palette = base.quantize(16)
    palette.info["transparency"] = 0
    images = {
        "cmyk.jpg": base.convert("CMYK"),
        "p.png": palette,
        "la.png": Image.fromarray(rgba[..., :2], mode="LA"),
        "rgba.png": Image.fromarray(rgba),
        "bw.png": base.convert("1"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as saved:
            want = (
                saved.convert("RGBA").convert("RGB") if saved.mode == "P" else saved.convert("RGB")
            )
            got = read_image(tmp_path / name, "RGB")
            assert got.mode == "RGB" and got.size == (8, 8), name
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
            assert read_image(tmp_path / name, "L").mode == "L"


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def second_of(root: Path, split: str) -> Path:
    """A path sorted after the first image of the first class of ``split``."""
    folder = sorted((root / split).iterdir())[0]
    return folder / "zzz.png"


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_image_of_another_size_fails_before_anything_is_written(
    small_cifar_folder: Path, tmp_path: Path, split: str
) -> None:
    root = copy_folder(small_cifar_folder, tmp_path / "data")
    bad = second_of(root, split)
    Image.new("RGB", (40, 40)).save(bad)
    out = tmp_path / "run"
    result = run_cli("fit", *FIT, "--data-root", root, "--out", out)
    one_line_error(result, "zzz.png", "40x40", "32x32")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["garbage", "huge"])
def test_a_broken_image_beyond_the_first_fails_before_anything_is_written(
    small_cifar_folder: Path, tmp_path: Path, kind: str
) -> None:
    root = copy_folder(small_cifar_folder, tmp_path / "data")
    bad = second_of(root, "test")
    if kind == "huge":
        png_header(bad, 30_000, 30_000)
    else:
        bad.write_bytes(b"not an image at all")
    out = tmp_path / "run"
    result = run_cli("fit", *FIT, "--data-root", root, "--out", out)
    one_line_error(result, "zzz.png")
    assert not out.exists()


def test_a_huge_first_image_is_one_line(small_cifar_folder: Path, tmp_path: Path) -> None:
    root = copy_folder(small_cifar_folder, tmp_path / "data")
    first = sorted(sorted((root / "train").iterdir())[0].iterdir())[0]
    first.unlink()
    png_header(first.with_name("0000.png"), 30_000, 30_000)
    out = tmp_path / "run"
    one_line_error(run_cli("fit", *FIT, "--data-root", root, "--out", out), "0000.png", "pixels")
    assert not out.exists()
