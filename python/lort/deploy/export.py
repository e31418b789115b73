"""``lort export``: a finished run's classifier as one self-contained module, for use without
lort: TorchScript (``torch.jit.load``), a ``torch.export`` program (``pt2``,
``torch.export.load``) or ONNX (any ONNX runtime; needs ``pip install 'lort[onnx]'`` to write,
which brings onnxruntime for the check).

The module maps a batch of images, N x C x H x W floats prepared as the JSON beside it says
(resize, centre crop, scale to [0, 1], normalise), to the logits lort evaluates: the run's
backbone, then its re-trained head with the method's inference rule folded in
(:func:`lort.methods.fold_inference`), averaged with the logits of the mirrored batch where the
run used flip averaging. For a ``features`` run it maps N x D feature vectors to logits. The
JSON beside it (``FILE.json``: ``model.onnx.json`` beside ``model.onnx``, so that two formats
exported to one stem keep their own) holds the class names, how to prepare an image of any size,
whether the module averages the mirrored view inside, the rule and the temperature folded in.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lort import __version__
from lort.data.transforms import LARGE_RESIZE, TransformSpec
from lort.errors import InputError
from lort.files import atomic_write, write_json
from lort.methods import FoldedHead, fold_inference
from lort.run.folder import check_output
from lort.run.trained import TrainedRun, open_trained

FORMATS: tuple[str, ...] = ("torchscript", "pt2", "onnx")
# How each format is read back, as the JSON beside the module says.
LOADERS: dict[str, str] = {
    "torchscript": "torch.jit.load(file)",
    "pt2": "torch.export.load(file).module() (it unpickles: load only files you trust)",
    "onnx": "onnxruntime.InferenceSession(file), or any ONNX runtime",
}
# The exported module must reproduce the eager one on a sample batch to this relative error.
TOLERANCE = 1e-4


class Exported(nn.Module):
    """``head(backbone(x))``, averaged with the mirrored batch when ``flip``."""

    def __init__(self, backbone: nn.Module, head: FoldedHead, flip: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.backbone(x))
        if self.flip:
            z = (z + self.head(self.backbone(torch.flip(x, dims=[3])))) / 2
        return z


def export_module(run: TrainedRun, head: nn.Module | None = None) -> Exported:
    """The run's classifier (or ``head``, another head re-trained on the run's features, with
    the run's method) as one eval-mode module on the CPU."""
    folded = fold_inference(run.method, run.head if head is None else head, run.counts, tau=run.tau)
    if run.temperature is not None:  # calibrated logits: their softmax is what predict gives
        folded.weight /= run.temperature
        if folded.bias is not None:
            folded.bias /= run.temperature
    backbone = nn.Identity() if run.backbone is None else run.backbone
    return Exported(backbone, folded, run.flips and run.backbone is not None).eval()


def input_shape(run: TrainedRun) -> tuple[int, ...]:
    """One input's shape: C x H x W, or D for a features run."""
    if run.backbone is None:
        return (run.feature_dim,)
    return (len(run.spec.mean), run.spec.image_size, run.spec.image_size)


def describe(run: TrainedRun, fmt: str, out: Path) -> dict[str, Any]:
    """What the JSON beside the exported file says."""
    spec, m = run.spec, run.method
    info: dict[str, Any] = {
        "file": out.name,
        "format": fmt,
        "load": LOADERS[fmt],
        "lort": __version__,
        "run": str(run.root),
        "method": m.name,
        "inference": m.inference or "none",
        "tau": run.tau if m.inference else None,
        "temperature": run.temperature,
        "outputs": f"logits divided by the temperature {run.temperature:.6g}, folded into the "
        "last layer's weights and bias (do not divide again): their softmax is the calibrated "
        "probabilities lort predict gives"
        if run.temperature is not None
        else "the inference logits; not calibrated (the run fitted no temperature)",
        "input_name": "input",
        "output_name": "logits",
        "input_shape": ["N", *input_shape(run)],
        "class_names": run.class_names,
    }
    if run.backbone is None:
        info["input"] = {"kind": "features", "feature_dim": run.feature_dim}
        info["flip_averaging"] = False
        if run.flips:
            info["note"] = (
                "the run averaged the logits of each input's plain and mirrored features: "
                "average this module's outputs on both views to match it"
            )
            info["mirrored_view"] = info["note"]
        else:
            info["mirrored_view"] = "none: the run evaluated each input as it is"
        return info
    info["input"] = preparation(spec)
    info["flip_averaging"] = run.flips
    info["mirrored_view"] = (
        "averaged inside the module: feed each image once, as prepared (not mirrored); the "
        "module also runs it flipped left to right and returns the mean of the two logits"
        if run.flips
        else "none: the run evaluated each image as it is, and so does the module"
    )
    return info


def preparation(spec: TransformSpec) -> dict[str, Any]:
    """How to turn one image file of any size into the module's input, exactly as the run's
    evaluation read its images (:func:`lort.data.transforms.build_transform`, eval)."""
    size, mode = spec.image_size, "L" if len(spec.mean) == 1 else "RGB"
    resize: int | None = None
    interpolation: str | None = None
    if spec.kind in ("small", "digits"):
        geometry = (
            f"none: the run read {size}x{size} images as they are and lort predict refuses "
            "any other size (resizing one is a choice the network never saw)"
        )
    else:
        resize = (spec.resize or size) if spec.kind == "resized" else LARGE_RESIZE
        interpolation = spec.interpolation if spec.kind == "resized" else "bilinear"
        geometry = (
            f"scale the image (PIL, {interpolation}) so that its shorter side is {resize}: a "
            f"W x H image with W <= H becomes {resize} x int({resize} * H / W) (and the other "
            f"way round); then crop the centre {size} x {size}, its left edge at "
            f"round((width - {size}) / 2) and its top at round((height - {size}) / 2) (Python's "
            "round, halves to even)"
        )
    return {
        "kind": "image",
        "image_size": size,
        "mode": mode,
        "resize": resize,
        "interpolation": interpolation,
        "crop": size if resize else None,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "geometry": geometry,
        "prepare": f"decode as 8-bit {mode}; {geometry}; divide by 255; then (x - mean) / std "
        "per channel; stack as N x C x H x W float32",
    }


def _example(run: TrainedRun) -> torch.Tensor:
    return torch.randn(2, *input_shape(run), generator=torch.Generator().manual_seed(0))


def _torchscript(module: Exported, example: torch.Tensor) -> bytes:
    # Tracer notes on constant shapes and jit's deprecation notice are no news to the user.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _batch_dim() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch")},)


def _pt2(module: Exported, example: torch.Tensor) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=_batch_dim())
    except Exception as e:  # a backbone torch.export cannot trace: one line, nothing written
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"torch.export could not export this run's module ({first}); try --format torchscript"
        ) from None
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _onnx(module: Exported, example: torch.Tensor) -> bytes:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401  (the check before writing runs the module in it)
        import onnxscript  # noqa: F401
    except ImportError:
        raise InputError(
            "--format onnx needs the onnx, onnxscript and onnxruntime packages: pip install "
            "'lort[onnx]'"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=_batch_dim(),
            verbose=False,
        )
    if program is None:
        raise InputError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def serialise(module: Exported, fmt: str, example: torch.Tensor) -> bytes:
    """The module in ``fmt`` (one of :data:`FORMATS`) as bytes."""
    if fmt == "torchscript":
        return _torchscript(module, example)
    if fmt == "pt2":
        return _pt2(module, example)
    if fmt == "onnx":
        return _onnx(module, example)
    raise InputError(f"unknown --format {fmt!r}; choose {' or '.join(FORMATS)}")


@dataclass
class ExportResult:
    out: Path
    json: Path
    info: dict[str, Any]
    max_rel_error: float


def check_roundtrip(module: Exported, data: bytes, fmt: str, example: torch.Tensor) -> float:
    """Relative error (max |a - b| / max |a|) of the serialised module against the eager one
    on ``example``; TorchScript and pt2 are read back with torch, ONNX with onnxruntime."""
    with torch.no_grad():
        want = module(example)
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            got = torch.jit.load(io.BytesIO(data))(example)
    elif fmt == "pt2":
        with torch.no_grad():
            got = torch.export.load(io.BytesIO(data)).module()(example)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def sidecar(out: Path) -> Path:
    """The JSON beside the module ``out``: its full name with ``.json`` added."""
    return out.with_name(out.name + ".json")


def export(root: Path, fmt: str, out: Path) -> ExportResult:
    """Write the run's classifier to ``out`` in ``fmt`` and the JSON beside it; both are
    written only once the serialised module reproduces the eager one."""
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}; choose {' or '.join(FORMATS)}")
    meta = sidecar(out)
    if out.suffix.lower() == ".json":  # another export's JSON, or a name that reads as one
        raise InputError(
            f"--out {out}: name the module file (model.pt); its JSON is written beside it as "
            "model.pt.json"
        )
    check_output("--out", out)
    check_output("the JSON beside --out", meta)
    run = open_trained(root)
    module = export_module(run)
    example = _example(run)
    data = serialise(module, fmt, example)
    error = check_roundtrip(module, data, fmt, example)
    if error > TOLERANCE:
        raise InputError(
            f"the {fmt} module does not reproduce the run's logits (relative error {error:.2e}); "
            "try the other --format"
        )
    info = describe(run, fmt, out)
    atomic_write(out, lambda f: f.write(data))
    write_json(meta, info)
    return ExportResult(out, meta, info, error)
