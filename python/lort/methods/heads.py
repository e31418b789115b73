"""Stage-2 heads: frozen features (B x D) -> logits (B x K).

- :class:`LinearHead`: ``W f + b``.
- :class:`CosineHead`: ``s * cos(W_j, f)``; ``s`` learnable (init 16) for the cosine
  classifier, or fixed at 1 for LDAM-DRW's normalised linear layer ("normed"), whose loss
  applies its own scale (s = 30). Both depart from the LORT paper's Table 1, which writes Vanilla
  Cosine as the bare cosine (no scale, fixed or learnable, anywhere in its text) and LDAM on the
  plain linear head ``W_j f`` minus the margin: the learnable scale is lort's choice (its 16 is
  the fixed scale of Decoupling's CosNorm classifier), the normalised layer and s = 30 are
  LDAM-DRW's code (docs/stage2-recipes.md, sections 9 and 11).
- :class:`LWSHead`: learnable weight scaling (Kang et al., 2020): the stage-1 ``W f + b``,
  frozen, times a learnable per-class scale initialised to 1 (K trainable parameters).

``make_head(..., init=stage1_init(model.head.state_dict(), prefix=""))`` starts a head from the
stage-1 classifier as an ``nn.Linear`` (LWS needs it; see :func:`lort.stage1.losses.stage1_init`);
without ``init`` the weights are freshly initialised like ``nn.Linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lort.errors import InputError
from lort.methods.base import Method


class StageTwoHead(nn.Module):
    """Maps features to logits. ``weight`` (K x D) holds one vector per class."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, feature_dim: int, num_classes: int, init: nn.Linear | None) -> None:
        super().__init__()
        if feature_dim < 1 or num_classes < 1:
            raise InputError(
                f"a head needs feature_dim >= 1 and num_classes >= 1, "
                f"got {feature_dim} and {num_classes}"
            )
        if init is not None and tuple(init.weight.shape) != (num_classes, feature_dim):
            raise InputError(
                f"the initial classifier maps {init.in_features} features to "
                f"{init.out_features} classes; the head needs {feature_dim} -> {num_classes}"
            )
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    @staticmethod
    def initial(
        feature_dim: int, num_classes: int, init: nn.Linear | None
    ) -> tuple[Tensor, Tensor]:
        """Copies of ``init``'s weight and bias, or a fresh ``nn.Linear`` initialisation."""
        source = init if init is not None else nn.Linear(feature_dim, num_classes)
        weight = source.weight.detach().clone()
        bias = (
            source.bias.detach().clone()
            if source.bias is not None
            else torch.zeros(num_classes, dtype=weight.dtype, device=weight.device)
        )
        return weight, bias


class LinearHead(StageTwoHead):
    """``W f + b`` with ``W`` and ``b`` trainable."""

    def __init__(self, feature_dim: int, num_classes: int, init: nn.Linear | None = None) -> None:
        super().__init__(feature_dim, num_classes, init)
        weight, bias = self.initial(feature_dim, num_classes, init)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(features, self.weight, self.bias)


class CosineHead(StageTwoHead):
    """``scale * <f / ||f||, W_j / ||W_j||>``; no bias, ``|logit| <= |scale|``."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        init: nn.Linear | None = None,
        *,
        scale: float = 16.0,
        learn_scale: bool = True,
    ) -> None:
        super().__init__(feature_dim, num_classes, init)
        weight, _ = self.initial(feature_dim, num_classes, init)
        self.weight = nn.Parameter(weight)
        self.bias = None
        scale_t = torch.tensor(float(scale), dtype=weight.dtype, device=weight.device)
        if learn_scale:
            self.scale = nn.Parameter(scale_t)
        else:
            self.register_buffer("scale", scale_t)

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class LWSHead(StageTwoHead):
    """``scales_j * (W_j f + b_j)`` with ``W``, ``b`` frozen buffers and ``scales`` trainable."""

    def __init__(self, feature_dim: int, num_classes: int, init: nn.Linear | None) -> None:
        super().__init__(feature_dim, num_classes, init)
        if init is None:
            raise InputError(
                "LWS re-scales the stage-1 classifier: pass init=<the stage-1 nn.Linear head>"
            )
        weight, bias = self.initial(feature_dim, num_classes, init)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.scales = nn.Parameter(
            torch.ones(num_classes, dtype=weight.dtype, device=weight.device)
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.scales * F.linear(features, self.weight, self.bias)


def make_head(
    method: Method, feature_dim: int, num_classes: int, init: nn.Linear | None = None
) -> StageTwoHead:
    """The head of ``method``, started from the stage-1 classifier ``init`` when given."""
    if method.head == "linear":
        return LinearHead(feature_dim, num_classes, init)
    if method.head == "cosine":
        return CosineHead(feature_dim, num_classes, init)
    if method.head == "normed":
        return CosineHead(feature_dim, num_classes, init, scale=1.0, learn_scale=False)
    if method.head == "lws":
        return LWSHead(feature_dim, num_classes, init)
    raise InputError(f"unknown head {method.head!r}; expected linear, cosine, normed or lws")
