"""A run folder: the files a ``lort fit`` run owns, the state file that says which phases
are done, and the rules for reusing a folder (``--resume``, ``--overwrite``).

Every file is written through a temp file and a rename (:mod:`lort.files`), so a kill never
leaves a half-written checkpoint, array or report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lort import files
from lort.errors import InputError

STATE = "state.json"
CONFIG = "config.yaml"
STAGE1 = "stage1.ckpt"
FEATURES = "features.npz"
REPORT = "report.json"
# The files a finished run owns besides the state file, in the order report.json lists them.
RUN_FILES = (
    CONFIG,
    "manifest.json",
    STAGE1,
    FEATURES,
    "stage2.pt",
    "logits.npy",
    "labels.npy",
    "train_counts.npy",
    REPORT,
)
# What a stage-2 re-training on a finished run reads (``lort compare`` / ``lort sweep``).
RETRAIN_NEEDS = (CONFIG, "manifest.json", STAGE1, FEATURES, REPORT)
# Options that shape stage 1 and the feature cache: a resumed run must keep them.
FROZEN = (
    "dataset",
    "data_root",
    "imbalance_ratio",
    "lt_split",
    "val_fraction",
    "seed",
    "arch",
    "stage1_loss",
    "stage1",
    "pretrained",
    "weights",
    "freeze_backbone",
    "backbone_lr_scale",
)


def resume_values(out: Path, file_values: dict[str, Any]) -> dict[str, Any]:
    """The option values a resumed run starts from: its saved config, then the config file
    given now. Flags still override both (e.g. ``--method``)."""
    from lort.config import load_yaml

    saved = out / CONFIG
    return load_yaml(saved) | file_values if saved.exists() else file_values


def check_unchanged(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed run may change stage 2 and the evaluation, not what stage 1 was trained with."""
    changed = [k for k in FROZEN if saved.get(k) != now.get(k)]
    if changed:
        what = "; ".join(f"{k}: run has {saved.get(k)!r}, asked {now.get(k)!r}" for k in changed)
        raise InputError(
            f"--resume cannot change what stage 1 was trained with ({what}); drop those "
            "options, or start a new run with another --out"
        )


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path, *, resume: bool, overwrite: bool) -> RunFolder:
        """An existing, non-empty folder is reused only with resume or overwrite."""
        if root.exists() and any(root.iterdir()):
            if resume:
                if not (root / STATE).exists():
                    raise InputError(f"{root} is not a lort run folder (no {STATE}); cannot resume")
            elif overwrite:
                for p in root.iterdir():
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
            else:
                raise InputError(
                    f"run folder {root} already exists; pass --resume to continue it, "
                    "--overwrite to start again, or choose another --out"
                )
        elif resume:
            raise InputError(f"nothing to resume: {root} does not exist or is empty")
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root)
        if not (root / STATE).exists():
            folder.write_json(STATE, {"done": []})
        return folder

    def path(self, name: str) -> Path:
        return self.root / name

    # -- state ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        p = self.path(STATE)
        return json.loads(p.read_text()) if p.exists() else {"done": []}

    def done(self, phase: str) -> bool:
        return phase in self.state()["done"]

    def mark_done(self, phase: str, **info: Any) -> None:
        st = self.state()
        if phase not in st["done"]:
            st["done"].append(phase)
        st.setdefault("info", {})[phase] = info
        self.write_json(STATE, st)

    # -- files ---------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        files.write_json(self.path(name), data)

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())

    def write_yaml(self, name: str, data: Any) -> None:
        files.write_yaml(self.path(name), data)

    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        files.write_csv(self.path(name), header, rows)

    def write_npy(self, name: str, array: np.ndarray) -> None:
        files.write_npy(self.path(name), array)

    def write_npz(self, name: str, **arrays: np.ndarray) -> None:
        files.write_npz(self.path(name), **arrays)

    def save_torch(self, name: str, obj: Any) -> None:
        files.save_torch(self.path(name), obj)

    def load_torch(self, name: str) -> Any:
        import torch

        return torch.load(self.path(name), map_location="cpu", weights_only=False)
