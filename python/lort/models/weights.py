"""``--weights FILE``: a local state_dict or checkpoint loaded into a backbone.

Read formats: a file of ``torch.save`` (loaded with ``weights_only=True``: tensors and plain
containers only, no code) holding a state_dict, or a checkpoint dict that nests one under
``state_dict``, ``model``, ``state_dict_ema`` or ``module`` (a lort ``stage1.ckpt`` too); and
``.safetensors`` files (needs the safetensors package). A ``module.`` prefix (DistributedData-
Parallel) is dropped. The keys may be the bare network's (``conv1.weight``, as timm and
torchvision save them) or a lort classifier's (``backbone.conv1.weight``); keys of the network's
own classifier (no part of the backbone) are ignored and reported. Every backbone tensor must be
in the file with its shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lort.errors import InputError
from lort.files import NotPlainData, regular_file, torch_data

NESTED = ("state_dict", "model", "state_dict_ema", "module")


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise InputError(
                f"reading {path} needs the safetensors package: pip install safetensors"
            ) from None
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise InputError(f"cannot read {path} as safetensors: {e}") from None
    try:
        return torch_data(path)
    except NotPlainData as e:
        raise InputError(f"--weights {path}: {e}") from None
    except Exception as e:  # the file is no torch file: torch raises several kinds
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot read {path} as a torch state_dict or checkpoint: {why}") from None


def _tensors(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict in ``obj``: itself, or nested under one of :data:`NESTED`."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if "state" in obj and isinstance(obj["state"], Mapping):  # lort's stage1.ckpt
            return _tensors(obj["state"].get("model"))
        for key in NESTED:
            found = _tensors(obj.get(key))
            if found is not None:
                return found
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, keys without a ``module.`` prefix."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"--weights {p}: no such file")
    regular_file(p, "--weights")
    state = _tensors(_read(p))
    if state is None:
        raise InputError(
            f"--weights {p} holds no state_dict (a dict of tensors, or one under "
            f"{', '.join(NESTED)})"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load ``path`` into ``backbone``; returns the file's keys that were ignored."""
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):  # a lort classifier's
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise InputError(
            f"--weights {path} does not fit this backbone: {len(missing)} of its {len(own)} "
            f"tensors are not in the file ({shown}); is it a checkpoint of another --arch?"
        )
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise InputError(
            f"--weights {path}: {k} has shape {tuple(state[k].shape)}, the backbone needs "
            f"{tuple(own[k].shape)} ({len(wrong)} tensors differ); is it another --arch?"
        )
    backbone.load_state_dict({k: state[k] for k in own})
    return sorted(k for k in state if k not in own)
