"""A finished run's classifier, ready for inference: its backbone (``stage1.ckpt``), its
re-trained head (``stage2.pt``), the method's inference rule and the run's flip averaging.

``lort predict`` and ``lort export`` open runs through :func:`open_trained`. Unlike
:func:`lort.run.finished.open_run` it needs neither the training data nor the feature cache: only
the files a run writes for itself (the run folder can be copied to another machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lort.config import FitConfig
from lort.data.transforms import TransformSpec
from lort.methods import Method, StageTwoHead, get_method, make_head
from lort.models import build_model
from lort.run.folder import (
    INFERENCE_NEEDS,
    RunFolder,
    open_saved,
    require_finished,
)
from lort.stage1.losses import checkpoint_head, stage1_init
from lort.stage2.problem import infer, load_data, option_tau


@dataclass
class TrainedRun:
    """What inference on a run needs. ``backbone`` is None for a ``features`` run, whose
    input is a feature vector; ``spec`` says how the backbone's images are prepared."""

    root: Path
    cfg: FitConfig
    method: Method
    head: StageTwoHead
    backbone: nn.Module | None
    counts: np.ndarray
    class_names: list[str]
    spec: TransformSpec
    flips: bool
    notes: list[str]
    tau: float  # the tau the run evaluated with (tau-norm, logit adjustment)
    temperature: float | None  # fitted on validation; None: not calibrated (the raw softmax)

    @property
    def feature_dim(self) -> int:
        return int(self.head.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def logits(self, features: torch.Tensor, flipped: torch.Tensor | None) -> torch.Tensor:
        """Logits as the run's evaluation computes them (:func:`lort.stage2.problem.infer`): the
        method's inference rule, the mean over the mirrored view where the run used it."""
        return infer(
            self.method,
            self.head,
            features,
            flipped if self.flips else None,
            self.counts,
            self.tau,
        ).float()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The softmax of ``logits / T``: calibrated where the run fitted a temperature."""
        t = 1.0 if self.temperature is None else self.temperature
        return torch.softmax(logits / t, dim=1)


def _spec(report: dict[str, Any], cfg: FitConfig) -> TransformSpec:
    saved = report.get("input")
    if saved is None:  # a run from before report.json kept its input: rebuild the dataset
        return load_data(cfg).transform_spec
    return TransformSpec(**{**saved, "mean": tuple(saved["mean"]), "std": tuple(saved["std"])})


def open_trained(root: Path) -> TrainedRun:
    """The trained classifier of the finished run in ``root`` (on the CPU, in eval mode), its
    files read as one set (:meth:`lort.run.folder.RunFolder.consistent`)."""
    require_finished(Path(root), INFERENCE_NEEDS)
    with RunFolder(Path(root)).consistent(INFERENCE_NEEDS):
        return _open_trained(root)


def _open_trained(root: Path) -> TrainedRun:
    run = open_saved(root, INFERENCE_NEEDS)
    root, folder, cfg, report, manifest = run.root, run.folder, run.cfg, run.report, run.manifest
    # Each read is checked against what lort recorded writing (DamagedFileError names the file).
    saved = run.stage1()
    stage1 = saved["state"]["model"]
    stage2 = folder.load_torch("stage2.pt")
    counts = folder.load_npy("train_counts.npy")
    names = list(manifest["class_names"])
    method = get_method(stage2["method"])
    init = stage1_init(stage1)
    head = make_head(method, init.in_features, len(names), init)
    head.load_state_dict(stage2["head"])
    spec = _spec(report, cfg)
    backbone = None
    if cfg.dataset != "features":
        model = build_model(cfg.arch, len(names), len(spec.mean), head=checkpoint_head(stage1))
        model.load_state_dict(stage1)
        backbone = model.backbone.eval()
    notes = []
    temperature = stage2.get("temperature")
    if temperature is None:
        notes.append(
            "the run's classifier is not calibrated (no validation split, or a run made before "
            "lort fitted a temperature): probabilities are the raw softmax"
        )
    if cfg.stage2_mode == "live" and cfg.live_bn == "train":
        notes.append(
            "the run's stage 2 moved the backbone's BatchNorm statistics (--live-bn train), "
            "which the run does not keep: this uses the stage-1 backbone, as compare does"
        )
    return TrainedRun(
        root,
        cfg,
        method,
        head.eval(),
        backbone,
        counts,
        names,
        spec,
        bool(report.get("flip_tta", False)),
        notes,
        option_tau(cfg) if stage2.get("tau") is None else float(stage2["tau"]),
        None if temperature is None else float(temperature),
    )
