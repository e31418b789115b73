"""A run folder: every file written through a temp file and a rename, so a kill
never leaves a half-written checkpoint, array or report; and a small state file
that says which phases are done, for ``--resume``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lort.atomic import atomic_write
from lort.errors import InputError

STATE = "state.json"


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
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
        atomic_write(self.path(name), lambda f: f.write(text.encode()))

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())

    def write_yaml(self, name: str, data: Any) -> None:
        text = yaml.safe_dump(data, sort_keys=False)
        atomic_write(self.path(name), lambda f: f.write(text.encode()))

    def write_npy(self, name: str, array: np.ndarray) -> None:
        atomic_write(self.path(name), lambda f: np.save(f, array))

    def write_npz(self, name: str, **arrays: np.ndarray) -> None:
        atomic_write(self.path(name), lambda f: np.savez(f, **arrays))

    def save_torch(self, name: str, obj: Any) -> None:
        atomic_write(self.path(name), lambda f: torch.save(obj, f))

    def load_torch(self, name: str) -> Any:
        return torch.load(self.path(name), map_location="cpu", weights_only=False)
