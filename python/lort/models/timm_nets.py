"""Any network of timm (``--arch timm:NAME``), an optional dependency (``pip install
'lort[timm]'``).

The backbone is timm's model with its classifier removed (``num_classes=0``): it ends with the
model's own pooling, so it maps images to ``model.num_features``-d features. ``pretrained=True``
downloads the weights through timm (the Hugging Face hub and its cache); nothing else here
touches the network. The input size, resize, interpolation and normalisation come from the
model's pretrained config (timm's data config), whatever weights end up in the model.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from lort.errors import InputError

PREFIX = "timm:"
INSTALL = "pip install 'lort[timm]'"


def timm_module() -> Any:
    """The timm package, or an InputError that says how to install it."""
    try:
        import timm
    except ImportError:
        raise InputError(
            f"--arch {PREFIX}NAME needs timm, which is not installed: {INSTALL}"
        ) from None
    return timm


def check_name(name: str) -> None:
    """``name`` (optionally ``NAME.TAG``) is a model timm can build."""
    timm = timm_module()
    if not name or not timm.is_model(name):
        raise InputError(
            f"timm has no model {name!r}; list them with "
            f"`python -c \"import timm; print(timm.list_models('*vit*'))\"`"
        )


def timm_backbone(name: str, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """timm's ``name`` without its classifier; its feature width."""
    timm = timm_module()
    check_name(name)
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels)
    except (RuntimeError, OSError, ValueError) as e:  # a failed download, a missing file
        raise InputError(f"timm could not build {name!r} (pretrained={pretrained}): {e}") from None
    return net, int(net.num_features)


def timm_input(name: str) -> dict[str, Any]:
    """Input size, resize, interpolation, mean and std of ``name``'s pretrained config."""
    timm_module()
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    check_name(name)
    pretrained_cfg = get_pretrained_cfg(name)
    cfg = resolve_data_config({}, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else {})
    size = int(cfg["input_size"][-1])
    interpolation = cfg.get("interpolation", "bilinear")
    return {
        "image_size": size,
        "resize": math.floor(size / cfg.get("crop_pct", 1.0)),
        "interpolation": interpolation
        if interpolation in ("bilinear", "bicubic", "nearest")
        else "bilinear",
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
    }
