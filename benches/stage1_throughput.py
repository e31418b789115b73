"""Benchmark: stage-1 training throughput (images/s) on whatever device is present.

Run (from the repository root, in the project's venv)::

    python benches/stage1_throughput.py [--data-root runs/data/cifar10-jpeg] [--arch resnet32]
        [--batch 64] [--images N] [--epochs 2] [--variants files,arrays,tensor,compile]
        [--device auto|cpu|cuda] [--workers 8] [--json out.json]

What it measures: ``lort.stage1.loop.train_stage1`` itself (loss, SGD step, cosine schedule,
progress read-back, per-epoch checkpoint callback), run for one warm-up epoch and then
``--epochs`` timed epochs; throughput = timed epochs x images / their wall time. The images
are CIFAR-10-LT IR=100 (12,406) cut from an imagefolder root such as the extracted shared
CIFAR-10 JPEGs, or, without ``--data-root``, random 32x32 images with the same counts.
``--images N`` keeps the first N of them (a CPU run of a full epoch takes minutes).

Variants, each with a freshly initialised network:

* ``files``: a DataLoader over the JPEG files, decoded and augmented by PIL/torchvision per
  image (``--workers`` processes): the path stage 1 took before images were held in memory,
  and the reference the ratios are taken against (with ``--data-root`` only);
* ``arrays``: the same DataLoader over already-decoded uint8 arrays (the torchvision CIFAR
  format's path);
* ``tensor``: the split decoded once into a uint8 tensor on the device, crop + flip done
  there by one gather per batch (``lort.data.tensor_images``), what ``lort fit`` uses now;
* ``compile``: ``tensor`` with the network through ``torch.compile`` (CUDA graphs on a GPU);
  its warm-up epoch includes compilation, reported separately.

On CUDA, bf16 autocast and channels_last are on in every variant, as in ``lort fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from lort.data import build_dataset, long_tail_counts
from lort.data.images import ArrayImages, FileImages
from lort.data.sources import ImageFiles
from lort.data.tensor_images import TensorImages, decode_small
from lort.data.transforms import CIFAR_MEAN, CIFAR_STD, TransformSpec, build_transform
from lort.models import build_model
from lort.optim import StageConfig
from lort.runtime import Runtime, pick_device
from lort.stage1.loop import train_stage1

VARIANTS = ("files", "arrays", "tensor", "compile")


def load_images(
    data_root: Path | None, limit: int | None
) -> tuple[ImageFiles | None, np.ndarray, np.ndarray, TransformSpec]:
    """(files or None, uint8 pixels N x 32 x 32 x 3, labels, transform spec)."""
    if data_root is not None:
        data = build_dataset("imagefolder", data_root=data_root, imbalance_ratio=100)
        files = data.sources["train"]
        assert isinstance(files, ImageFiles)
        labels = data.train_labels
        if limit is not None:
            files, labels = ImageFiles(files.root, files.paths[:limit]), labels[:limit]
        pixels = decode_small(files, data.image_size)
        if pixels is None:
            raise SystemExit(f"{data_root}: the training images are not all 32x32")
        return files, pixels, labels, data.transform_spec
    counts = long_tail_counts(5000, 10, 100.0)
    labels = np.repeat(np.arange(10), counts)
    rng = np.random.default_rng(0)
    rng.shuffle(labels)
    labels = labels[:limit]
    pixels = rng.integers(0, 256, (labels.size, 32, 32, 3), dtype=np.uint8)
    return None, pixels, labels, TransformSpec("small", 32, CIFAR_MEAN, CIFAR_STD)


def run_variant(
    variant: str,
    files: ImageFiles | None,
    pixels: np.ndarray,
    labels: np.ndarray,
    spec: TransformSpec,
    args: argparse.Namespace,
    rt: Runtime,
) -> dict[str, float]:
    augment = build_transform(spec, augment=True)
    if variant == "files":
        assert files is not None
        train_set = FileImages(files.root, files.paths, labels, augment)
    elif variant == "arrays":
        train_set = ArrayImages(pixels, labels, augment)
    else:
        train_set = TensorImages(pixels, labels, spec, rt.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 10)
    counts = np.bincount(labels, minlength=10)
    st = StageConfig(epochs=1 + args.epochs, lr=0.01, weight_decay=5e-3, batch_size=args.batch)
    marks: list[float] = []

    def checkpoint(_: object) -> None:
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    start = time.perf_counter()
    images = train_stage1(
        model,
        train_set,  # type: ignore[arg-type]
        counts,
        st,
        "ce",
        rt,
        seed=0,
        workers=args.workers if variant in ("files", "arrays") else 0,
        resume=None,
        checkpoint=checkpoint,
        progress=lambda *_: None,
        compile_model=variant == "compile",
    )
    timed = marks[-1] - marks[0]
    return {
        "warmup_s": marks[0] - start,
        "timed_s": timed,
        # --compile drops each epoch's short last batch: count what was trained on.
        "images_per_s": images * args.epochs / (1 + args.epochs) / timed,
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True)
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path)
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, help="keep the first N training images")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--variants", default="files,arrays,tensor,compile")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    variants = args.variants.split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    if args.data_root is None and "files" in variants:
        variants.remove("files")
    rt = Runtime(pick_device(args.device))
    files, pixels, labels, spec = load_images(args.data_root, args.images)

    device = torch.cuda.get_device_name() if rt.device.type == "cuda" else platform.processor()
    print(f"command: python {shlex.join(sys.argv)}  (lort at {git_commit()})")
    print(
        f"device: {rt.device} ({device or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"data: {labels.size:,} images, {args.arch}, batch {args.batch}, "
        f"1 warm-up + {args.epochs} timed epochs\n"
    )

    results: dict[str, dict[str, float]] = {}
    for v in variants:
        try:
            results[v] = run_variant(v, files, pixels, labels, spec, args, rt)
        except Exception as exc:  # e.g. torch.compile without a working compiler here
            print(f"  {v:8} failed: {exc!r}", flush=True)
            continue
        print(f"  {v:8} {results[v]['images_per_s']:10,.0f} images/s", flush=True)
    if not results:
        raise SystemExit("no variant ran")
    ref = "files" if "files" in results else next(iter(results))
    rows = [
        [
            v,
            f"{r['images_per_s']:,.0f}",
            f"{r['images_per_s'] / results[ref]['images_per_s']:.2f}x",
            f"{r['warmup_s']:.1f}",
            f"{r['timed_s']:.1f}",
        ]
        for v, r in results.items()
    ]
    header = ["variant", "images/s", f"vs {ref}", "warm-up epoch s", "timed s"]
    print()
    print(fmt_table(rows, header))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(fmt_md(rows, header))
    if args.json is not None:
        meta = {"device": str(rt.device), "name": device, "images": int(labels.size)}
        args.json.write_text(json.dumps({"meta": meta, "args": sys.argv, "results": results}))


if __name__ == "__main__":
    main()
