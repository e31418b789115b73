"""cifar10-lt / cifar100-lt: torchvision's pickled CIFAR batches under the data root.

The files are read directly, in the ``pickle`` format torchvision reads, by an unpickler that
builds only what a CIFAR batch holds (dicts, lists, strings, numbers and numpy arrays): a file
that asks for any other object (which is how a pickle runs code) is refused, not loaded.
``download=True`` first lets torchvision fetch and verify them. The training set is balanced
(n_max = 5,000 / 500 per class) and is made long-tailed by :mod:`lort.data.profile`; the test
set stays balanced.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lort.data.sources import RawSplits, require_root
from lort.data.transforms import CIFAR_MEAN, CIFAR_STD, TransformSpec
from lort.errors import FileReadError, InputError

DEFAULT_RATIO = 100.0
IMAGE_SIZE = 32


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which keys hold labels and names."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    n_max: int


LAYOUTS = {
    "cifar10-lt": CifarLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        5000,
    ),
    "cifar100-lt": CifarLayout(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        500,
    ),
}


def layout_text(layout: CifarLayout, root: Path) -> str:
    """The expected files, one per line, under ``root``."""
    files = [*layout.train_files, *layout.test_files, layout.meta_file]
    return "\n".join(f"  {root / layout.folder / f}" for f in files)


# The only globals a CIFAR batch or meta file names: numpy arrays (protocol 2, as the files
# were written by numpy 1 under Python 2, and protocol 5's _frombuffer), numpy scalars and
# dtypes, and the bytes of a protocol-2 pickle written by Python 3. numpy 2 moved numpy.core
# to numpy._core; both spellings name the same function.
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what :data:`_CIFAR_GLOBALS` names."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = module
        if module == "numpy.core" or module.startswith("numpy.core."):
            canonical = "numpy._core" + module[len("numpy.core") :]
        if (canonical, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it asks to build {module}.{name}, which a CIFAR batch never holds and lort "
                "never loads (a pickle that builds objects can run code)"
            )
        try:
            return super().find_class(canonical, name)
        except ImportError:  # numpy < 1.26 has only numpy.core
            return super().find_class(canonical.replace("numpy._core", "numpy.core"), name)


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR batch or meta file as a dict with str keys."""
    try:
        with path.open("rb") as f:
            content = _CifarUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise FileReadError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # pickle raises many kinds on data that is not a pickle
        raise InputError(f"{path} is not a CIFAR pickle ({exc}); re-download it") from None
    if not isinstance(content, dict):
        raise InputError(f"{path} is not a CIFAR pickle (holds {type(content).__name__})")
    return content


def read_batches(
    folder: Path, files: tuple[str, ...], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 32 x 32 x 3 uint8) and labels (int64) of the batch files, in file order."""
    images, labels = [], []
    for name in files:
        batch = read_pickle(folder / name)
        if "data" not in batch or label_key not in batch:
            raise InputError(f"{folder / name} lacks the 'data' or {label_key!r} entry")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise InputError(f"{folder / name}: 'data' has shape {data.shape}, expected N x 3072")
        images.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def download_cifar(name: str, root: Path) -> None:
    """Let torchvision download and verify the archive into ``root``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    fetch = CIFAR10 if name == "cifar10-lt" else CIFAR100
    try:
        fetch(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise FileReadError(f"{name}: download into {root} failed: {exc}") from exc


def load_cifar_splits(name: str, data_root: str | Path | None, download: bool) -> RawSplits:
    """Read (and with ``download`` first fetch) CIFAR-10 or CIFAR-100 under ``data_root``."""
    layout = LAYOUTS[name]
    hint = (
        f"Point --data-root at the folder that holds {layout.folder}/, "
        f"or add --download to fetch {layout.title} there."
    )
    if download and data_root is not None:
        Path(data_root).expanduser().mkdir(parents=True, exist_ok=True)
    root = require_root(name, data_root, partial(layout_text, layout), hint)
    if download:
        download_cifar(name, root)
    folder = root / layout.folder
    files = [*layout.train_files, *layout.test_files, layout.meta_file]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileReadError(
            f"{name}: missing {', '.join(missing)} in {folder}. "
            f"Expected torchvision's {layout.title} layout:\n{layout_text(layout, root)}\n{hint}"
        )
    train_images, train_labels = read_batches(folder, layout.train_files, layout.label_key)
    test_images, test_labels = read_batches(folder, layout.test_files, layout.label_key)
    meta = read_pickle(folder / layout.meta_file)
    if layout.names_key not in meta:
        raise InputError(f"{folder / layout.meta_file} lacks {layout.names_key!r}")
    class_names = [str(n) for n in meta[layout.names_key]]
    for split, labels in (("training", train_labels), ("test", test_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise InputError(f"{folder}: {split} labels outside [0, {len(class_names)})")
    return RawSplits(
        class_names=class_names,
        transform_spec=TransformSpec("small", IMAGE_SIZE, CIFAR_MEAN, CIFAR_STD),
        in_channels=3,
        train_labels=train_labels,
        train_images=train_images,
        test_labels=test_labels,
        test_images=test_images,
        n_max=layout.n_max,
        default_ratio=DEFAULT_RATIO,
    )
