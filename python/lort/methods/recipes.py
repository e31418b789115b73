"""Each re-training method's stage-2 recipe as its authors ran it, with the source of every value.

A :class:`Recipe` says where a method's classifier starts (the stage-1 head, or freshly
initialised), how long and with which optimiser settings it is trained (none for a post-hoc rule
applied to the stage-1 classifier), the authors' values of its own hyperparameters, and the
values ``lort compare --protocol tuned`` searches. A value of ``None`` takes the run's stage-2
setting, which is LORT's own recipe (bilibili/LOS, matched exactly on CIFAR): the methods whose
authors published no stage-2 recipe are run with it, and say so.

Sources are cited as ``repository path:lines``, read from the snapshots listed in
docs/stage2-recipes.md (which has the full tables): LOS = bilibili/LOS, DEC =
facebookresearch/classifier-balancing, LTWB = ShadeAlsha/LTR-weight-balancing, BALMS =
jiawei-ren/BalancedMetaSoftmax-Classification, CB = richardaecn/class-balanced-loss, LDAM =
kaidic/LDAM-DRW, LA = google-research/google-research logit_adjustment.

Stage-2 samplers, losses and inference rules are parts of the :class:`~lort.methods.Method`
itself (LWS samples class-balanced, MaxNorm trains with LTWB's class-balanced loss); a recipe
holds what is not part of the formula. Where lort departs from the authors' code, the
``departs`` line says how.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lort.errors import InputError
from lort.methods.base import get_method
from lort.optim import StageConfig

Init = Literal["stage1", "fresh"]

# The tuned protocol's learning rates: the recipe's times these (two orders of magnitude either
# way: with one, several methods' choices sat at the edge on digits and CIFAR-10-LT), and its
# weight decays: none and the recipe's (5e-4, Decoupling's and BALMS's value, when the recipe
# has none).
LR_FACTORS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
WD_WHEN_NONE = 5e-4
# tau of tau-norm and logit adjustment where nothing chooses it: Menon et al.'s flag default
# (LA main.py) and the unit-norm weights of Decoupling's tau-norm.
AUTHORS_TAU = 1.0


@dataclass(frozen=True)
class Recipe:
    """How a method's authors re-trained the classifier (see the module docstring)."""

    init: Init = "stage1"
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None  # 0: no re-training, a post-hoc rule on the stage-1 classifier
    iterations: int | None = None  # a step count instead of epochs (BALMS)
    hyper: Mapping[str, float] = field(default_factory=dict)  # the authors' values
    search: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # tuned protocol
    source: str = ""
    departs: str = ""

    @property
    def retrains(self) -> bool:
        return self.epochs != 0

    def stage(self, run: StageConfig, n_train: int) -> StageConfig | None:
        """The concrete stage-2 settings on a run whose own are ``run`` and whose training set
        has ``n_train`` images; None for a post-hoc rule."""
        if not self.retrains:
            return None
        batch = self.batch_size or run.batch_size
        epochs = self.epochs or run.epochs
        if self.iterations is not None:
            epochs = max(1, math.ceil(self.iterations / math.ceil(n_train / batch)))
        return StageConfig(
            epochs=epochs,
            lr=run.lr if self.lr is None else self.lr,
            weight_decay=run.weight_decay if self.weight_decay is None else self.weight_decay,
            batch_size=batch,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "init": self.init,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "iterations": self.iterations,
            "hyper": dict(self.hyper),
            "search": {k: list(v) for k, v in self.search.items()},
            "source": self.source,
            "departs": self.departs,
        }


_LOS = (
    "LOS main_stage2.py:35-38 (SGD momentum 0.9, cosine), utils/config.py:18,28-31 (batch 64, "
    "20 epochs, lr 5e-4, wd 0): the run's stage-2 settings"
)
_NO_STAGE2 = "its authors published no stage-2 recipe: LORT's (LOS) recipe, the run's settings"
_TAU = tuple(round(0.1 * i, 1) for i in range(21))  # DEC tau_norm.py:110: np.linspace(0, 2, 21)
_CB_BETA = (0.9, 0.99, 0.999, 0.9999)  # CB's paper grid; 0.9999 in cifar_im_trainval_cb.sh:7

# fmt: off
RECIPES: dict[str, Recipe] = {
    "lort": Recipe(
        source=_LOS + "; delta: LOS readme (0.98 on CIFAR100-LT), searched on the run's "
        "smooth_grid",
        departs="LOS keeps BN in train mode and crops; lort's cached stage 2 flips only",
    ),
    "ce": Recipe(source=_LOS + " with label_smooth 0 (LOS utils/config.py:31)"),
    "cosine": Recipe(
        source=_NO_STAGE2,
        departs="lort's cosine head learns its scale (init 16) from the stage-1 weights; "
        "DEC's CosNorm_Classifier (models/CosNormClassifier.py:22-40) fixes it at 16",
    ),
    "lws": Recipe(
        lr=0.2, weight_decay=5e-4, batch_size=512, epochs=5,
        source="DEC config/ImageNet_LT/cls_lws.yaml:15,27,34,37 (class-aware sampling, lr 0.2, "
        "wd 5e-4, batch 512, 5 epochs, cosine); scales start at 1 on the stage-1 classifier "
        "(models/TauNormClassifier.py:21-29)",
        departs="class-balanced draws with replacement, not DEC's ClassAwareSampler (4 per "
        "class pick)",
    ),
    "ldam": Recipe(
        hyper={"ldam_max_margin": 0.5, "ldam_scale": 30.0},
        search={"ldam_max_margin": (0.25, 0.5, 1.0)},
        source=_NO_STAGE2 + "; max_m 0.5, s 30: LDAM cifar_train.py:213, losses.py:25",
        departs="LDAM-DRW is single-stage; its normed layer starts here from the normalised "
        "stage-1 weights",
    ),
    "balanced-softmax": Recipe(
        init="fresh", lr=0.1, weight_decay=5e-4, batch_size=512, iterations=2000,
        source="BALMS config/CIFAR10_LT/decouple_balanced_softmax_imba200.yaml:11-34 "
        "(classifier re-initialised, lr 0.1, wd 5e-4, batch 512, 2,000 iterations, no sampler, "
        "cosine)",
        departs="BALMS trains with AutoAugment and Cutout; lort's cached stage 2 flips only",
    ),
    "cb-resample": Recipe(
        init="fresh", lr=0.2, weight_decay=5e-4, batch_size=512, epochs=10,
        source="DEC config/ImageNet_LT/cls_crt.yaml:15,27,34,37 (cRT: classifier "
        "re-initialised, class-aware sampling, lr 0.2, wd 5e-4, batch 512, 10 epochs, cosine); "
        "run_networks.py:678-684 skips loading the DotProductClassifier",
        departs="class-balanced draws with replacement, not DEC's ClassAwareSampler",
    ),
    "focal": Recipe(
        hyper={"focal_gamma": 1.0}, search={"focal_gamma": (0.5, 1.0, 2.0)},
        source=_NO_STAGE2 + "; gamma 1: LDAM cifar_train.py:214-215 (softmax focal), CB "
        "cifar_im_trainval_cb.sh:16",
    ),
    "cb-loss": Recipe(
        hyper={"cb_beta": 0.9999}, search={"cb_beta": _CB_BETA},
        source=_NO_STAGE2 + "; sigmoid (BCE) form and beta 0.9999: CB src/cifar_main.py:336-340, "
        "cifar_im_trainval_cb.sh:7",
        departs="CB initialises the sigmoid bias to -log(K-1) for a fresh layer; here the "
        "stage-1 head is continued",
    ),
    "maxnorm": Recipe(
        lr=0.01, weight_decay=0.1, batch_size=64, epochs=10,
        hyper={"threshold": 0.1, "cb_beta": 0.9999},
        search={"threshold": (0.0, 0.1, 0.2, 0.5)},
        source="LTWB demo2_second-stage-training.py:316-347 (from the stage-1 model, CB "
        "'softmax' loss beta 0.9999, SGD lr 0.01, wd 0.1, 10 epochs, cosine, relative "
        "threshold 0.1), utils/regularizers.py:16-50, utils/trainval.py:140-142 (projection "
        "once per epoch)",
    ),
    "tau-norm": Recipe(
        epochs=0, hyper={"tau": AUTHORS_TAU}, search={"tau": _TAU},
        source="DEC tau_norm.py:54-114 (the stage-1 classifier, no re-training, bias dropped, "
        "tau swept over linspace(0, 2, 21))",
        departs="DEC prints every tau and chooses none; lort's authors protocol uses tau 1",
    ),
    "logit-adjust": Recipe(
        epochs=0, hyper={"tau": AUTHORS_TAU}, search={"tau": tuple(0.25 * i for i in range(9))},
        source="LA main.py (--mode=posthoc on the CE-trained model, flag tau 1.0)",
    ),
    "cb-loss-softmax": Recipe(
        hyper={"cb_beta": 0.9999}, search={"cb_beta": _CB_BETA},
        source=_NO_STAGE2 + "; softmax form mean(w_y l), beta 0.9999: CB src/cifar_main.py:"
        "332-335 (TF SUM_BY_NONZERO_WEIGHTS), cifar_im_trainval_cb.sh:7",
    ),
}
# fmt: on


def recipe_for(name: str) -> Recipe:
    """The recipe of a registered method or a composition ``a+b``: the recipe of its first part
    that re-trains (of its first part when none does), with every part's authors' values and
    searched values of its own hyperparameters."""
    method = get_method(name)
    parts = name.split("+") if "+" in name else [name]
    missing = [p for p in parts if p not in RECIPES]
    if missing:  # every registered method has a recipe; this guards the registry
        raise InputError(f"no stage-2 recipe for {', '.join(missing)}")
    if len(parts) == 1:
        return RECIPES[name]
    recipes = [RECIPES[p] for p in parts]
    base = next((r for r in recipes if r.retrains), recipes[0])
    hyper: dict[str, float] = {}
    search: dict[str, tuple[float, ...]] = {}
    for r in recipes:
        hyper |= {k: v for k, v in r.hyper.items() if k in method.hyper}
        search |= {k: v for k, v in r.search.items() if k in method.hyper}
    return Recipe(
        init=base.init,
        lr=base.lr,
        weight_decay=base.weight_decay,
        batch_size=base.batch_size,
        epochs=base.epochs,
        iterations=base.iterations,
        hyper=hyper,
        search=search,
        source=f"the recipe of {parts[recipes.index(base)]}: {base.source}",
        departs=base.departs,
    )
