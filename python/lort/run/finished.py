"""A finished run folder opened for re-training: its saved config and report, the stage-2 problem
on its cached features, and an identity of what its results depend on (``lort compare`` and
``lort sweep``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lort.config import FitConfig, run_values
from lort.data.ltdata import LTData
from lort.data.transforms import TransformSpec
from lort.errors import DamagedFileError, FileReadError, InputError
from lort.methods import Method
from lort.run.feature_cache import open_cache
from lort.run.folder import (
    FROZEN,
    RETRAIN_NEEDS,
    SPLIT_LABELS,
    Note,
    RunFolder,
    SavedRun,
    locked,
    open_saved,
    require_finished,
    split_changed,
)
from lort.stage1.features import FeatureCache
from lort.stage1.losses import stage1_init
from lort.stage2.problem import Stage2, load_data

# The config keys that shape the delta ``lort fit`` picks on the validation split: its report's
# choice stands for the run while these are unchanged.
SELECTION_KEYS = (*FROZEN, "smooth", "smooth_grid", "stage2", "stage2_stop", "flip_tta")


@dataclass(frozen=True)
class SmoothPlan:
    """``select``: pick delta on the validation split over ``grid`` (as ``--smooth auto``);
    ``fixed``: use ``delta``; ``unused``: one-hot targets."""

    mode: Literal["select", "fixed", "unused"]
    delta: float = 0.0
    grid: tuple[float, ...] = ()
    source: str = ""

    def fingerprint(self) -> dict[str, Any]:
        if self.mode == "select":
            return {"mode": "select-on-val", "grid": list(self.grid)}
        if self.mode == "fixed":
            return {"mode": "fixed", "delta": self.delta}
        return {"mode": "unused"}


@dataclass
class FinishedRun:
    """A finished ``lort fit`` run: its folder, saved config and report, the stage-2 problem
    on its features, and an identity of what its results depend on."""

    root: Path
    folder: RunFolder
    raw_config: dict[str, Any]
    report: dict[str, Any]
    problem: Stage2
    identity: dict[str, Any]

    @property
    def cfg(self) -> FitConfig:
        return self.problem.cfg

    @property
    def has_val(self) -> bool:
        return self.problem.has_val

    def fit_delta(self) -> tuple[float, str] | None:
        """A fixed delta the run itself gives: its config's, or the one ``lort fit`` chose on
        the validation split (when its report is of a smooth-target method and current)."""
        if self.cfg.smooth != "auto":
            return float(self.cfg.smooth), "fixed in the run's config"
        sel = self.report.get("smooth") or {}
        saved = run_values(self.report.get("config") or {})
        current = all(saved.get(k) == self.raw_config.get(k) for k in SELECTION_KEYS)
        if sel.get("mode") == "auto" and current:
            return float(sel["delta"]), "the delta `lort fit` chose on the validation split"
        return None

    def smooth_plan(self, method: Method, select_on: str) -> SmoothPlan:
        """What ``lort fit`` would do for ``method``, or with ``select_on="none"`` a fixed
        delta."""
        if method.target != "smooth":
            return SmoothPlan("unused")
        if self.cfg.smooth != "auto":
            return SmoothPlan("fixed", float(self.cfg.smooth), source="fixed in the run's config")
        if select_on == "val":
            if not self.has_val:
                raise InputError(
                    f"{self.root} has no validation split to pick delta on; use --select-on none"
                )
            return SmoothPlan("select", grid=tuple(self.cfg.smooth_grid), source="validation split")
        fixed = self.fit_delta()
        if fixed is None:
            instead = (
                "use --select-on val, or" if self.has_val else "the run has no validation split;"
            )
            raise InputError(
                f"{method.name} needs a delta: the run's smooth is 'auto' and its report holds "
                f"no chosen delta; {instead} fix one with "
                f"`lort fit --resume --out {self.root} --smooth DELTA`"
            )
        return SmoothPlan("fixed", fixed[0], source=fixed[1])


@contextmanager
def open_run_locked(root: Path, note: Note) -> Iterator[FinishedRun]:
    """:func:`open_run` with the run folder locked for the block (a command that writes
    into it), after removing what interrupted writes left behind."""
    require_finished(Path(root), RETRAIN_NEEDS)
    with locked(Path(root), note):
        run = open_run(root, note)
        run.folder.remove_leftovers(note)
        run.folder.settle()
        yield run


def _data(saved: SavedRun, cache: FeatureCache, note: Note | None) -> LTData:
    """The run's dataset rebuilt from its config; where its images are gone, the labels fit
    saved beside the feature cache (all that re-training on the cache reads of the data)."""
    try:
        return load_data(saved.cfg)
    except FileReadError as gone:
        if not saved.folder.path(SPLIT_LABELS).is_file():  # a run of an earlier lort
            raise
        if note is not None:
            where = str(gone).splitlines()[0]
            note(
                f"{where}; re-training on the run's feature cache and the labels saved beside "
                "it (only `lort fit --resume` and live stage 2 need the images)"
            )
    labels = saved.folder.load_npz(SPLIT_LABELS)
    names = list(saved.manifest["class_names"])
    counts = saved.folder.load_npy("train_counts.npy")
    if not {"train", "test"} <= set(labels) or not np.array_equal(
        np.bincount(labels["train"], minlength=len(names)), counts
    ):
        raise DamagedFileError(
            f"{saved.folder.path(SPLIT_LABELS)} does not match the run's train_counts.npy; "
            "re-point the run at its data (config.yaml's data_root) and run `lort fit --resume`",
            SPLIT_LABELS,
        )
    spec = TransformSpec("features", 0, (), (), mirror=cache.get("train", flipped=True) is not None)
    return LTData(
        name=saved.cfg.dataset,
        num_classes=len(names),
        class_names=names,
        image_size=0,
        in_channels=0,
        train_labels=labels["train"],
        val_labels=labels.get("val"),
        test_labels=labels["test"],
        manifest=saved.manifest,
        transform_spec=spec,
        sources={},
    )


def open_run(root: Path, note: Note | None = None) -> FinishedRun:
    """The finished run in ``root``; InputError saying what to do when it is not one. Where the
    run's images are gone it opens on its feature cache alone, with ``note`` told so."""
    saved = open_saved(root, RETRAIN_NEEDS)
    root, folder, raw, cfg = saved.root, saved.folder, saved.raw_config, saved.cfg
    report, manifest = saved.report, saved.manifest
    stage1 = saved.stage1()
    cache = open_cache(folder)
    data = _data(saved, cache, note)
    changed = split_changed(manifest, data.manifest)
    if changed:
        raise InputError(
            f"{root}: the dataset rebuilt from the run's config differs from the one it was "
            f"trained on ({changed} changed); its cached features no longer match the labels"
        )
    init = stage1_init(stage1["state"]["model"])
    for split, labels in (
        ("train", data.train_labels),
        ("val", data.val_labels),
        ("test", data.test_labels),
    ):
        rows = cache.get(split)
        want = 0 if labels is None else len(labels)
        if (0 if rows is None else len(rows)) != want:
            raise InputError(
                f"{root}: the feature cache holds {0 if rows is None else len(rows)} {split} rows "
                f"but the data has {want}; re-run `lort fit` for this folder"
            )
    digest = hashlib.sha256()
    for t in (init.weight, init.bias):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    identity = {
        "stage1_head_sha256": digest.hexdigest(),
        "kept_sha256": manifest.get("kept_sha256"),
        "val_sha256": manifest.get("val_sha256"),
        "cache": {k: list(v.shape) for k, v in sorted(cache.arrays.items())},
    }
    problem = Stage2(cfg, data, cache, init, data.train_counts())
    return FinishedRun(root, folder, raw, report, problem, identity)
