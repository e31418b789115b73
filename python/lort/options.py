"""Every option of ``lort fit``, declared once: its config key, the type a config file gives it,
its choices, its lower bound, its command-line spelling and help. The command line
(:mod:`lort.cli.commands`) builds its flags from :data:`FIT_OPTIONS`, the config loader
(:mod:`lort.config`) checks a config file's types and choices against it, and an error about an
option names it by the caller's spelling (:class:`lort.errors.OptionError`): the flag on the
command line, the parameter in Python. Plain data: importing this loads neither torch nor the
core. Defaults live in :class:`lort.config.FitConfig` and the per-dataset
:data:`lort.config.DEFAULTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lort.errors import OptionError
from lort.limits import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_WORKERS

# The choices of the options below, each the one definition the code checks against.
LT_SPLITS = ("ltwb", "ldam")
VAL_SPLITS = ("leftover", "fraction")
STAGE1_LOSSES = ("ce", "ce-drw", "ldam-drw", "bs")
# Stage 1's learning-rate schedule: "cosine" (lort's, per step to 0), "ldam-drw" (kaidic/LDAM-DRW's
# warm-up and step decay, with its lr, weight decay and batch where the run gives none); "auto"
# is "ldam-drw" for the ldam-drw loss, else "cosine".
STAGE1_SCHEDULES = ("auto", "cosine", "ldam-drw")
STAGE2_MODES = ("cached", "live")
LIVE_BN = ("eval", "train")
# Which stage-2 epoch `lort fit` keeps: "val" its best on the validation split (and LORT's delta
# chosen there at that epoch), "last" the last one; "auto" is "val" when the run has a
# validation split and trains stage 2 on cached features, else "last".
STAGE2_STOPS = ("auto", "val", "last")
DEVICES = ("auto", "cpu", "cuda")
# Where `lort fit` logs its per-epoch metrics: history.csv always; "tensorboard" adds
# RUN/tensorboard/ (the `tensorboard` extra).
LOGS = ("csv", "tensorboard")
# The feature cache's dtype: float16 halves its files (and what a compare or keep reads), at a
# cost measured in docs/performance.md; stage 2 computes in float32 either way.
CACHE_DTYPES = ("float32", "float16")
# `lort compare --protocol` (lort.experiments.protocols has each one's definition; "shared":
# every method with the run's own stage-2 settings, the epoch kept by --epoch).
COMPARE_PROTOCOLS = ("tuned", "authors", "test-selected", "paper", "paper-test-selected", "shared")
# ``--method auto``: the method lort fit keeps is chosen after it, by `lort compare --keep`.
AUTO_METHOD = "auto"


def auto_needs_validation() -> OptionError:
    """The error of ``--method auto`` on a run without a validation split."""
    return OptionError(
        "{method} auto chooses a method on the validation split, and the run has none: "
        "give it one ({val_split}, or {val_fraction} > 0), or name a {method}",
        "method",
        "val_split",
        "val_fraction",
    )


Kind = Literal["str", "str?", "bool", "int", "number", "number?", "auto-or-number"]
# How a boolean option is spelled: ``--x`` sets True, ``--no-x`` sets False, or both.
Switch = Literal["on", "off", "both"]


@dataclass(frozen=True)
class Option:
    """One option. ``key`` is the config key (a field of FitConfig) or, for a stage's four
    settings, the flag's own name (``epochs1`` is ``stage1.epochs``, see
    :data:`lort.config.STAGE_FLAGS`)."""

    key: str
    kind: Kind
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None  # counts: the least value
    maximum: int | None = None  # counts: the largest (lort.limits)
    flag: str = ""  # the command-line spelling, when it is not --key with dashes
    switch: Switch | None = None  # a boolean's spelling
    metavar: str | None = None

    @property
    def cli(self) -> str:
        """The flag as the command line spells it."""
        if self.flag:
            return self.flag
        name = self.key.replace("_", "-")
        return f"--no-{name}" if self.switch == "off" else f"--{name}"


FIT_OPTIONS: tuple[Option, ...] = (
    Option(
        "dataset",
        "str",
        "digits-lt (default), cifar10-lt, cifar100-lt, imagefolder, imagenet-lt, inat2018, "
        "features (.npy arrays of your own features).",
    ),
    Option("data_root", "str?", "Folder holding the dataset in its standard layout."),
    Option("download", "bool", "Let torchvision download CIFAR.", switch="on"),
    Option("imbalance_ratio", "number?", "Largest / smallest class count (10, 50, 100...)."),
    Option("lt_split", "str", "Which images a long-tailed class keeps.", LT_SPLITS),
    Option(
        "val_split",
        "str",
        "Where validation comes from: leftover (default) = a balanced set from the images the "
        "long-tail profile did not keep; fraction = carved by --val-fraction from training data.",
        VAL_SPLITS,
    ),
    Option("val_fraction", "number", "Stratified validation split carved from training data."),
    Option(
        "arch",
        "str",
        "small-cnn, resnet8, resnet20, resnet32, resnet34-cifar, resnet50, resnext50, or "
        "timm:NAME (any timm model; pip install 'lort[timm]').",
    ),
    Option(
        "pretrained",
        "bool",
        "Start from the network's pretrained weights (downloaded by torchvision or timm).",
        switch="on",
    ),
    Option("weights", "str?", "Start the backbone from a local state_dict / checkpoint file."),
    Option(
        "freeze_backbone",
        "bool",
        "Stage 1 trains the head alone on the frozen backbone.",
        switch="on",
    ),
    Option(
        "backbone_lr_scale",
        "number",
        "Stage-1 learning rate of the backbone as a fraction of --lr1 (fine-tuning).",
    ),
    Option(
        "stage1_loss",
        "str",
        "Stage-1 loss: ce (the paper's), ce-drw, ldam-drw or bs (balanced softmax), for the "
        "paper's Table 3 backbones. [ce]",
        STAGE1_LOSSES,
    ),
    Option(
        "stage1_schedule",
        "str",
        "Stage-1 schedule: cosine, or LDAM-DRW's (5 warm-up epochs, x0.01 at 80% and 90% of "
        "the epochs, lr 0.1 / wd 2e-4 / batch 128 unless given); auto: ldam-drw's for "
        "--stage1-loss ldam-drw. [auto]",
        STAGE1_SCHEDULES,
    ),
    Option(
        "method",
        "str",
        "Stage-2 re-training method (lort, ce, cosine, lws, ...), or auto: fit with LORT, then "
        "the tuned comparison of the twelve methods and keep the best on validation.",
    ),
    Option(
        "smooth", "auto-or-number", "LORT's delta, or 'auto' to pick it on the validation split."
    ),
    Option(
        "stage2_mode",
        "str",
        "Stage 2 on features extracted once, plain and flipped (cached), or with the frozen "
        "backbone in the loop and augmentation (live). [cached]",
        STAGE2_MODES,
    ),
    Option("live_bn", "str", "BatchNorm in live stage 2.", LIVE_BN),
    Option(
        "stage2_stop",
        "str",
        "Which stage-2 epoch to keep: its best on the validation split (LORT's delta chosen "
        "there too) or the last; auto: val when the run has a validation split and stage 2 is "
        "cached. [auto]",
        STAGE2_STOPS,
    ),
    Option("epochs1", "int", "Stage-1 epochs.", minimum=0, maximum=MAX_EPOCHS),
    Option("lr1", "number", "Stage-1 learning rate."),
    Option("wd1", "number", "Stage-1 weight decay."),
    Option("batch1", "int", "Stage-1 batch size.", minimum=1, maximum=MAX_BATCH),
    Option("epochs2", "int", "Stage-2 epochs.", minimum=0, maximum=MAX_EPOCHS),
    Option("lr2", "number", "Stage-2 learning rate."),
    Option("wd2", "number", "Stage-2 weight decay."),
    Option("batch2", "int", "Stage-2 batch size.", minimum=1, maximum=MAX_BATCH),
    Option(
        "tau",
        "auto-or-number",
        "tau of tau-norm / logit adjustment, or auto: chosen with the stage-2 epoch on the "
        "validation split (1, the authors' value, when the last epoch is kept). [auto]",
    ),
    Option("flip_tta", "bool", "Evaluate without flip TTA.", switch="off", flag="--no-flip-tta"),
    Option(
        "seed",
        "int",
        "Seed of the split, both stages' initialisation and batch order. [0]",
        minimum=0,
        maximum=MAX_SEED,
    ),
    Option(
        "device", "str", "Where to train: auto (a GPU when there is one), cpu or cuda.", DEVICES
    ),
    Option("workers", "int", "DataLoader worker processes.", minimum=0, maximum=MAX_WORKERS),
    Option(
        "compile_model",
        "bool",
        "Stage 1 through torch.compile (CUDA graphs on a GPU). Pays on long GPU runs.",
        switch="both",
        flag="--compile",
    ),
    Option(
        "log",
        "str",
        "Per-epoch metrics: csv (history.csv) or tensorboard (history.csv and RUN/tensorboard/; "
        "needs `pip install 'lort[tensorboard]'`). [csv]",
        LOGS,
    ),
    Option(
        "baselines",
        "bool",
        "Also re-train the CE and logit-adjustment baselines on the same features and print "
        "their test accuracy beside the method's (--no-baselines: the method alone). [on]",
        switch="both",
    ),
    Option(
        "cache_dtype",
        "str",
        "The feature cache's dtype: float16 halves its files and reads (stage 2 converts the "
        "rows it reads to float32). [float32]",
        CACHE_DTYPES,
    ),
)

BY_KEY: dict[str, Option] = {o.key: o for o in FIT_OPTIONS}


def flag_of(key: str) -> str:
    """The command-line spelling of the option (or config key) ``key``."""
    option = BY_KEY.get(key)
    return option.cli if option is not None else "--" + key.replace("_", "-")
