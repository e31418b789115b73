"""Benchmark: ``lort export`` round trip for all twelve methods on one finished run.

For every method, a head is re-trained on the run's feature cache (as ``lort compare`` does;
LORT with the run's delta), the run's backbone and that head are exported (TorchScript, pt2 and
ONNX when onnx, onnxscript and onnxruntime are installed), the exported module is run on the run's
test images as its evaluation read them, and its logits are compared with lort's own
(``Stage2.logits``): the largest |difference| over the largest |logit|. Run (from the repository
root, in the project's venv)::

    python benches/export_roundtrip.py RUN [--formats torchscript,pt2,onnx]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from lort.deploy.export import export_module, serialise
from lort.methods import METHODS
from lort.run.finished import open_run
from lort.run.trained import open_trained


def test_batches(run: Path) -> list[torch.Tensor]:
    """The run's test images, prepared and batched as its feature cache read them."""
    problem = open_run(run).problem
    images = problem.data.tensor_images("test", torch.device("cpu"))
    if images is not None:
        return [x for x, _ in images.in_order(256)]
    loader = torch.utils.data.DataLoader(problem.data.dataset("test"), batch_size=256)
    return [x for x, _ in loader]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--formats", default="torchscript,pt2,onnx")
    args = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
    formats = args.formats.split(",")
    if "onnx" in formats and not all(
        importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")
    ):
        formats.remove("onnx")
        print("onnx, onnxscript or onnxruntime missing: TorchScript only")
    finished = open_run(args.run)
    problem, trained = finished.problem, open_trained(args.run)
    delta = (finished.fit_delta() or (0.5, ""))[0]
    batches = test_batches(args.run) if trained.backbone is not None else None
    rows = []
    for name, method in METHODS.items():
        head = problem.train(method, delta if method.target == "smooth" else 0.0)
        want = problem.logits(method, head, "test")
        module = export_module(dataclasses.replace(trained, method=method), head)
        inputs = batches or [problem.cache.tensor("test")]
        errors = []
        for fmt in formats:
            started = time.perf_counter()
            data = serialise(module, fmt, inputs[0][:2])
            if fmt == "torchscript":
                loaded = torch.jit.load(io.BytesIO(data))
                with torch.no_grad():
                    got = torch.cat([loaded(x) for x in inputs]).numpy()
            elif fmt == "pt2":
                program = torch.export.load(io.BytesIO(data)).module()
                with torch.no_grad():
                    got = torch.cat([program(x) for x in inputs]).numpy()
            else:
                import onnxruntime

                session = onnxruntime.InferenceSession(data)
                got = np.concatenate([session.run(None, {"input": x.numpy()})[0] for x in inputs])
            rel = float(np.abs(got - want).max() / np.abs(want).max())
            errors.append(f"{rel:.1e} ({time.perf_counter() - started:.1f} s)")
        rows.append([name, method.inference or "-", *errors])
    header = ["method", "inference", *(f"{f} max rel error" for f in formats)]
    print(f"{args.run}: {len(want):,} test rows, flip averaging {trained.flips}")
    print(fmt_table(rows, header))
    print(fmt_md(rows, header))


if __name__ == "__main__":
    main()
