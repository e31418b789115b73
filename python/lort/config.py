"""The resolved configuration of a ``lort fit`` run: defaults per dataset, a YAML
file, then command-line flags, in that order of precedence. The resolved
config is written next to every checkpoint."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lort.data.build import ships_val, takes_leftover
from lort.errors import InputError, OptionError
from lort.files import NotRegularFile, read_bytes
from lort.limits import MAX_GRID, MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_TAU
from lort.methods import check_delta, get_method
from lort.models import check_arch
from lort.optim import LDAM_DRW_OPTIM, StageConfig
from lort.options import FIT_OPTIONS


@dataclass(kw_only=True)
class FitConfig:
    """Every option of a run, final once :func:`resolve` returns it. The fields are what
    ``config.yaml`` holds, in this order; ``notes`` says what ``resolve`` decided for the user
    (shown once, not saved). The fields marked ``omit_default`` (the pretrained-backbone
    options) are saved only when set, so a config that does not use them is written as before
    they existed."""

    dataset: str = "digits-lt"
    data_root: str | None = None
    download: bool = False
    imbalance_ratio: float | None = None
    lt_split: str = "ltwb"
    val_fraction: float = 0.0
    val_split: str = "leftover"
    arch: str
    stage1_loss: str = "ce"
    # "cosine" or "ldam-drw" once resolved ("auto" picks, see resolve); saved when not cosine.
    stage1_schedule: str = field(default="cosine", metadata={"omit_default": True})
    stage1: StageConfig
    method: str = "lort"
    smooth: str | float = "auto"
    smooth_grid: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99]
    )
    stage2_mode: str = "cached"
    live_bn: str = "eval"
    stage2_stop: str = "auto"
    stage2: StageConfig
    tau: str | float = "auto"
    flip_tta: bool = True
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    compile_model: bool = False
    log: str = field(default="csv", metadata={"omit_default": True})
    # Re-train the CE and logit-adjustment baselines the fit prints beside its method.
    baselines: bool = field(default=True, metadata={"omit_default": True})
    pretrained: bool = field(default=False, metadata={"omit_default": True})
    weights: str | None = field(default=None, metadata={"omit_default": True})
    freeze_backbone: bool = field(default=False, metadata={"omit_default": True})
    backbone_lr_scale: float = field(default=1.0, metadata={"omit_default": True})
    cache_dtype: str = field(default="float32", metadata={"omit_default": True})
    notes: tuple[str, ...] = field(default=(), compare=False, metadata={"saved": False})

    def to_dict(self) -> dict[str, Any]:
        """The saved config (``config.yaml``, the resume check, stored-point identities)."""
        values = dataclasses.asdict(self)
        return {
            f.name: values[f.name]
            for f in dataclasses.fields(self)
            if f.metadata.get("saved", True)
            and not (f.metadata.get("omit_default") and values[f.name] == f.default)
        }


# Per-dataset defaults. Each value's source is written beside it:
#   paper  the LORT paper's text (arXiv 2403.00250v1): Appendix B and Section 5.1 give the
#          backbones, stage 1's epochs / batch / initial lr per dataset, delta per dataset
#          and the 20 fine-tune epochs; SGD momentum 0.9 and cosine to zero for every model.
#   LOS    the official code's defaults (bilibili/LOS utils/config.py, CIFAR100-LT only),
#          for what the paper leaves unprinted: stage 1's weight decay ("suitable", following
#          LTWB, Appendix B), stage 2's lr and weight decay ("adequate", Appendix B) and batch.
#   lort   neither: lort's own choice.
# No value here contradicts the paper's text (issue 20 checked every number it prints).
# docs/stage2-recipes.md, "What the LORT paper says about Table 1's protocol", has the detail.
DEFAULTS: dict[str, dict[str, Any]] = {
    # lort: a CPU-sized recipe for the embedded digits set (not in the paper).
    "digits-lt": {
        "imbalance_ratio": 10.0,
        "val_split": "fraction",
        "val_fraction": 0.2,
        "arch": "small-cnn",
        "stage1": StageConfig(epochs=30, lr=0.05, weight_decay=5e-4, batch_size=64),
        "stage2": StageConfig(epochs=20, lr=0.05, weight_decay=0.0, batch_size=64),
    },
    # Not in the paper (it has no CIFAR-10-LT): ResNet-32 is LDAM-DRW's CIFAR network
    # (kaidic/LDAM-DRW cifar_train.py --arch); both stages are CIFAR100-LT's values below.
    "cifar10-lt": {
        "imbalance_ratio": 100.0,
        "arch": "resnet32",
        "stage1": StageConfig(epochs=200, lr=0.01, weight_decay=5e-3, batch_size=64),
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64),
    },
    "cifar100-lt": {
        "imbalance_ratio": 100.0,  # paper: IR 100 is Table 1's and Section 5.3's setting
        "arch": "resnet34-cifar",  # paper (ResNet-34); its CIFAR form: LOS models/resnet.py
        "smooth": 0.98,  # paper (Section 5.1, Appendix B); LOS readme
        # paper: 200 epochs, lr 0.01, batch 64 (LOS's defaults too); LOS: wd 5e-3 (--wd)
        "stage1": StageConfig(epochs=200, lr=0.01, weight_decay=5e-3, batch_size=64),
        # paper: 20 epochs; LOS: lr 5e-4 (--finetune_lr), wd 0 (--finetune_wd), batch 64
        # (--batch_size, shared by both stages)
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64),
    },
    # lort: CIFAR100-LT's values for a folder of images.
    "imagefolder": {
        "arch": "resnet32",
        "stage1": StageConfig(epochs=200, lr=0.01, weight_decay=5e-3, batch_size=64),
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64),
    },
    "imagenet-lt": {
        "arch": "resnext50",  # paper
        "smooth": 0.99,  # paper
        # paper: 200 epochs, lr 0.03, batch 128; lort: wd 5e-4 (the paper defers to LTWB)
        "stage1": StageConfig(epochs=200, lr=0.03, weight_decay=5e-4, batch_size=128),
        # paper: 20 epochs; LOS's CIFAR lr and wd; lort: batch (stage 1's)
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=128),
    },
    "inat2018": {
        "arch": "resnet50",  # paper
        "smooth": 0.99,  # paper
        # paper: 200 epochs, lr 0.1, batch 256; lort: wd 1e-4 (the paper defers to LTWB)
        "stage1": StageConfig(epochs=200, lr=0.1, weight_decay=1e-4, batch_size=256),
        # paper: 20 epochs; LOS's CIFAR lr and wd; lort: batch (stage 1's)
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=256),
    },
    # No backbone to train: stage 1 is a linear classifier trained with cross-entropy and
    # weight decay on the given features (seconds), the trained head that stage 2 re-trains
    # with the paper's light recipe. From a fresh head (--epochs1 0) LORT's retargeted
    # targets do not learn the tail (README, "Your own features"). Stage 1: lort; stage 2:
    # paper (20 epochs) and LOS (lr, wd, batch).
    "features": {
        "arch": "none",
        "stage1": StageConfig(epochs=30, lr=0.05, weight_decay=5e-4, batch_size=128),
        "stage2": StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64),
    },
}

STAGE_KEYS = ("epochs", "lr", "weight_decay", "batch_size")

# What a run's saved config means by a key it lacks: the value runs had before the key existed
# (a run folder from before ``val_split`` carved its validation split, or had none; one from
# before ``stage2_stop`` kept the last stage-2 epoch; one without ``stage1_schedule`` trained
# stage 1 with the cosine schedule, its ``ldam-drw`` loss included). A fresh config takes
# :class:`FitConfig`'s defaults instead.
RUN_DEFAULTS: dict[str, Any] = {
    "val_split": "fraction",
    "stage2_stop": "last",
    "stage1_schedule": "cosine",
}


def run_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved options (its config.yaml, or the config in its stage-1 checkpoint) with
    the keys it predates filled in as :data:`RUN_DEFAULTS` says, and ``val_split`` as
    :func:`recorded_val_split` records it (runs saved before that wrote ``leftover`` beside a
    carve: the same split, so they open, resume and compare as before)."""
    values = RUN_DEFAULTS | saved
    fraction = values.get("val_fraction")
    if isinstance(fraction, int | float) and not isinstance(fraction, bool):
        values["val_split"] = recorded_val_split(values["val_split"], float(fraction))
    return values


def recorded_val_split(val_split: Any, val_fraction: float) -> Any:
    """The validation rule as a run records it: what was done. A ``val_fraction`` > 0 carves
    from the training set whatever ``val_split`` says (:func:`lort.data.build.build_dataset`
    takes the leftover split only without one; ``leftover`` falls back to the carve where the
    profile leaves nothing over), so it is recorded as ``fraction``."""
    return "fraction" if val_split == "leftover" and val_fraction > 0.0 else val_split


# The most values a config file may hold, each alias counted as the values it repeats: a
# config lort writes holds about 60, and under 1,100 with ``smooth_grid`` at its bound.
MAX_CONFIG_NODES = 10_000


class _TooLarge(Exception):
    """A YAML document beyond :data:`MAX_CONFIG_NODES` or :data:`MAX_JSON_DEPTH`."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded while it composes, before anything is built: at most
    :data:`MAX_CONFIG_NODES` values with aliases expanded (an alias bomb, nested anchors that
    repeat each other, expands exponentially in whatever walks the result) and at most
    :data:`MAX_JSON_DEPTH` levels (a depth bomb overflows the composer's recursion)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open = 0  # nodes being composed: the depth so far
        self._made = 0  # nodes composed
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        is_alias = self.check_event(yaml.AliasEvent)
        self._open += 1
        if self._open > MAX_JSON_DEPTH:
            raise _TooLarge(f"nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open -= 1
        if is_alias:
            if id(node) not in self._expanded:  # an alias inside its own anchor
                raise _TooLarge("holds an alias to a value that contains it")
            return node
        self._made += 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        sizes = [self._expanded[id(c)] for c in children]
        values = 1 + sum(v for v, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if max(values, self._made) > MAX_CONFIG_NODES:
            raise _TooLarge(f"holds more than {MAX_CONFIG_NODES:,} values (aliases expanded)")
        if depth > MAX_JSON_DEPTH:
            raise _TooLarge(f"nests deeper than {MAX_JSON_DEPTH} levels (aliases expanded)")
        self._expanded[id(node)] = (values, depth)
        return node


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path``, bounded in size, values and depth; an
    InputError saying why not."""
    p = Path(path)
    try:
        data = yaml.load(read_bytes(p, MAX_JSON_BYTES).decode(), Loader=_BoundedLoader)
    except _TooLarge as e:
        raise InputError(f"config file {p} {e}, more than a lort config holds") from None
    except FileNotFoundError:
        raise InputError(f"config file {p} does not exist") from None
    except NotRegularFile as e:  # a FIFO would hang the read
        raise InputError(f"config file: {e}") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        mark = getattr(e, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise InputError(f"config file {p} is not valid YAML ({problem}{where})") from None
    except (OSError, ValueError) as e:  # unreadable, too large, or not UTF-8
        raise InputError(f"cannot read config file {p}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file {p} must hold a mapping of option: value")
    return data


# ``lort fit`` flags that set one key of a stage: --epochs1 is stage1.epochs.
STAGE_FLAGS = {
    f"{short}{n}": (f"stage{n}", key)
    for short, key in (
        ("epochs", "epochs"),
        ("lr", "lr"),
        ("wd", "weight_decay"),
        ("batch", "batch_size"),
    )
    for n in "12"
}
# ``--smooth auto`` picks delta on a validation split: this much of the training data is carved
# for it (stratified) when the run asked for none.
AUTO_VAL_FRACTION = 0.2


# The type of every option as a config file may give it, for one clear line per wrong key: the
# options' own (lort.options), and the keys no flag sets.
_KINDS: dict[str, str] = {o.key: o.kind for o in FIT_OPTIONS if o.key not in STAGE_FLAGS} | {
    "stage1": "stage",
    "stage2": "stage",
    "smooth_grid": "numbers",
}
_STAGE_KINDS = {"epochs": "int", "lr": "number", "weight_decay": "number", "batch_size": "int"}
_WANT = {
    "str": "a string",
    "str?": "a string",
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "number?": "a number",
    "stage": "a mapping of epochs, lr, weight_decay, batch_size",
    "auto-or-number": "'auto' or a number",
    "numbers": "a list of numbers",
}


def _is(kind: str, v: Any) -> bool:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {
        "str": isinstance(v, str),
        "str?": v is None or isinstance(v, str),
        "bool": isinstance(v, bool),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "number": number,
        "number?": v is None or number,
        "stage": isinstance(v, dict),
        "auto-or-number": number or isinstance(v, str),
        "numbers": isinstance(v, list) and all(_is("number", x) for x in v),
    }[kind]


def type_errors(values: dict[str, Any], source: str) -> list[str]:
    """One line per option of ``values`` whose value has the wrong type."""
    out = []
    for key, value in values.items():
        kind = _KINDS.get(key)
        if kind is not None and not _is(kind, value):
            out.append(f"{source}: {key} must be {_WANT[kind]}, got {value!r}")
        elif kind == "stage":
            for sub, v in value.items():
                sub_kind = _STAGE_KINDS.get(sub)
                if sub_kind is not None and not _is(sub_kind, v):
                    out.append(f"{source}: {key}.{sub} must be {_WANT[sub_kind]}, got {v!r}")
    return out


def resolve(
    file_values: dict[str, Any], flags: dict[str, Any], source: str = "config file"
) -> FitConfig:
    """Dataset defaults < config file < flags (flags set to None are absent; the stage flags
    of :data:`STAGE_FLAGS` may stand for their nested keys). Type errors in ``file_values``
    are reported against ``source``. Validated, and final."""
    nested: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key in STAGE_FLAGS:
            stage, sub = STAGE_FLAGS[key]
            nested.setdefault(stage, {})[sub] = value
        else:
            nested[key] = value
    errors = type_errors(file_values, source) + type_errors(nested, "options")
    if errors:
        raise InputError("\n".join(errors))
    values: dict[str, Any] = {}
    for source in (file_values, nested):
        for key, value in source.items():
            if key in ("stage1", "stage2") and isinstance(value, dict):
                values.setdefault(key, {}).update(value)
            else:
                values[key] = value
    known = {f.name for f in dataclasses.fields(FitConfig) if f.metadata.get("saved", True)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    dataset = values.get("dataset", "digits-lt")
    if dataset not in DEFAULTS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DEFAULTS)}")
    base = DEFAULTS[dataset]
    merged = {k: v for k, v in base.items() if k not in ("stage1", "stage2")}
    merged |= {k: v for k, v in values.items() if k not in ("stage1", "stage2")}
    if merged.get("data_root"):  # a run folder travels: its config names the data absolutely
        merged["data_root"] = str(Path(str(merged["data_root"])).expanduser().absolute())
    merged["stage1_schedule"] = _stage1_schedule(merged)
    notes: tuple[str, ...] = ()
    for stage in ("stage1", "stage2"):
        keys = dataclasses.asdict(base[stage]) | values.get(stage, {})
        bad = sorted(set(keys) - set(STAGE_KEYS))
        if bad:
            raise InputError(f"unknown {stage} option(s) {', '.join(bad)}; use {STAGE_KEYS}")
        if stage == "stage1" and merged["stage1_schedule"] == "ldam-drw":
            authors = {k: v for k, v in LDAM_DRW_OPTIM.items() if k not in values.get(stage, {})}
            keys |= authors
            if authors:
                notes += (_ldam_drw_note(authors),)
        merged[stage] = StageConfig(**keys)
    if merged.get("smooth", "auto") != "auto":
        merged["smooth"] = _delta(merged["smooth"], "smooth")
    if merged.get("tau", "auto") != "auto":
        merged["tau"] = _number(merged["tau"], "tau")
    cfg = FitConfig(**merged, notes=notes)
    validate(cfg)
    cfg = _auto_validation(_val_split(cfg, set(values)))
    return dataclasses.replace(cfg, val_split=recorded_val_split(cfg.val_split, cfg.val_fraction))


def _stage1_schedule(merged: dict[str, Any]) -> Any:
    """``stage1_schedule`` resolved: ``auto`` is LDAM-DRW's schedule for the ``ldam-drw`` loss
    on a network, else the cosine one (a features run's stage 1 is a linear head, trained as
    :data:`DEFAULTS` says whatever the loss). Other values go to :func:`validate` as given."""
    schedule = merged.get("stage1_schedule", "auto")
    if schedule != "auto":
        return schedule
    ldam = merged.get("stage1_loss") == "ldam-drw" and merged.get("dataset") != "features"
    return "ldam-drw" if ldam else "cosine"


def _ldam_drw_note(authors: dict[str, Any]) -> str:
    """What LDAM-DRW's schedule set that the run did not give (``authors``)."""
    flags = {"lr": "--lr1", "weight_decay": "--wd1", "batch_size": "--batch1"}
    given = ", ".join(f"{flags[k]} {v:g}" for k, v in authors.items())
    return (
        f"stage 1 trains with LDAM-DRW's optimiser and schedule (kaidic/LDAM-DRW): {given}, "
        "5 warm-up epochs, lr x0.01 from 80% of the epochs and x0.0001 from 90%; "
        "--stage1-schedule cosine for lort's cosine schedule"
    )


def _number(value: Any, key: str) -> float:
    """``value`` (a number, or a string of one) as a finite float; OptionError otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{{{key}}} must be 'auto' or a number, got {value!r}", key) from None
    if not math.isfinite(x):
        raise OptionError(f"{{{key}}} must be a finite number, got {value}", key)
    return x


def _delta(value: Any, key: str | None) -> float:
    """A delta as :func:`lort.methods.check_delta` checks it, the error naming option ``key``
    (or, with None, the values of ``smooth_grid``)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise OptionError(f"{{{key}}} must be 'auto' or a number, got {value!r}", key) from None
    if key is None:
        return check_delta(value, allow_one=False, name="every value of smooth_grid")
    try:
        return check_delta(value, allow_one=False, name="{" + key + "}")
    except InputError as e:
        raise OptionError(str(e), key) from None


def _takes_leftover(cfg: FitConfig) -> bool:

    return cfg.val_split == "leftover" and takes_leftover(
        cfg.dataset, cfg.imbalance_ratio, cfg.data_root
    )


def _val_split(cfg: FitConfig, given: set[str]) -> FitConfig:
    """``val_fraction`` carves from the training set, so it does not go with a leftover split.
    A ``val_fraction`` the user gave means ``val_split: fraction`` (with a note), unless they
    also asked for ``leftover``; a dataset's default fraction (digits-lt) is dropped."""
    if cfg.val_fraction == 0.0 or not _takes_leftover(cfg):
        return cfg
    if "val_fraction" not in given:
        return dataclasses.replace(cfg, val_fraction=0.0)
    if "val_split" in given:
        raise OptionError(
            f"{{val_split}} leftover takes validation from the images the long-tail profile did "
            f"not keep, {{val_fraction}} {cfg.val_fraction:g} carves it from the training set: "
            "drop one (or pass {val_split} fraction)",
            "val_split",
            "val_fraction",
        )
    note = (
        f"--val-fraction {cfg.val_fraction:g} carves validation from the training set "
        "(--val-split fraction), instead of taking it from the images the long-tail profile "
        "did not keep"
    )
    return dataclasses.replace(cfg, val_split="fraction", notes=(*cfg.notes, note))


def _auto_validation(cfg: FitConfig) -> FitConfig:
    """``--smooth auto`` for a smooth-target method needs a validation split: carve one unless
    the dataset ships one or the leftover rule gives one."""

    wants = cfg.smooth == "auto" and get_method(cfg.method).target == "smooth"
    given = ships_val(cfg.dataset, cfg.data_root) or _takes_leftover(cfg)
    if not wants or cfg.val_fraction != 0.0 or given:
        return cfg
    note = (
        f"--smooth auto picks delta on a validation split: carved {AUTO_VAL_FRACTION:.0%} "
        "of the training data (stratified), since none was asked for"
    )
    return dataclasses.replace(cfg, val_fraction=AUTO_VAL_FRACTION, notes=(*cfg.notes, note))


def validate_for_fit(cfg: FitConfig) -> None:
    """What only a fit needs installed: a saved run's config opens without it (compare, keep
    and predict of a run shared with a machine that lacks the extra)."""
    if cfg.log == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise OptionError(
            "{log} tensorboard needs the tensorboard package: pip install 'lort[tensorboard]' "
            "(history.csv is written either way)",
            "log",
        )


def validate(cfg: FitConfig) -> None:
    """Every option checked before anything is built or written."""

    get_method(cfg.method)
    _validate_backbone(cfg)
    for option in FIT_OPTIONS:
        value = getattr(cfg, option.key, None)
        if option.choices and value not in option.choices:
            raise OptionError(
                f"{{{option.key}}} must be {_either(option.choices)}, got {value!r}", option.key
            )
    if cfg.stage2_stop == "val" and cfg.stage2_mode == "live":
        raise OptionError(
            "{stage2_stop} val scores every stage-2 epoch on the cached features: use "
            "{stage2_mode} cached, or {stage2_stop} last",
            "stage2_stop",
            "stage2_mode",
        )
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise OptionError(
            f"{{val_fraction}} must be in [0, 1), got {cfg.val_fraction}", "val_fraction"
        )
    if not cfg.smooth_grid:
        raise InputError("smooth_grid must hold at least one delta")
    if len(cfg.smooth_grid) > MAX_GRID:
        raise InputError(f"smooth_grid holds {len(cfg.smooth_grid):,} deltas, at most {MAX_GRID:,}")
    for option in FIT_OPTIONS:  # the counts' bounds (lort.limits), config files included
        if option.maximum is None:
            continue
        stage, sub = STAGE_FLAGS.get(option.key, (None, option.key))
        value = getattr(getattr(cfg, stage) if stage else cfg, sub)
        low = option.minimum or 0
        if not low <= value <= option.maximum:
            raise OptionError(
                f"{{{option.key}}} must be between {low:,} and {option.maximum:,}, got {value:,}",
                option.key,
            )
    for d in cfg.smooth_grid:
        _delta(d, None)
    if cfg.tau != "auto" and not (isinstance(cfg.tau, int | float) and 0.0 <= cfg.tau <= MAX_TAU):
        raise OptionError(
            f"{{tau}} must be 'auto' or a number in [0, {MAX_TAU:g}] (the authors' is 1; "
            f"tau-norm's ||W||^tau overflows beyond), got {cfg.tau}",
            "tau",
        )
    if cfg.stage2.epochs < 1:
        raise OptionError(
            "{epochs2} 0 trains no stage-2 classifier, and lort fit re-trains the method's in "
            "stage 2: give {epochs2} 1 or more",
            "epochs2",
        )
    if cfg.imbalance_ratio is not None and not 1.0 <= cfg.imbalance_ratio < math.inf:
        raise OptionError(
            f"{{imbalance_ratio}} must be a finite number >= 1, got {cfg.imbalance_ratio}",
            "imbalance_ratio",
        )
    for n in "12":  # the bounds above check the epochs and the batch size
        st: StageConfig = getattr(cfg, f"stage{n}")
        if not (math.isfinite(st.lr) and st.lr > 0):
            raise OptionError(
                f"{{lr{n}}} is stage{n}'s lr: it must be finite, lr > 0, got {st.lr}", f"lr{n}"
            )
        if not (math.isfinite(st.weight_decay) and st.weight_decay >= 0):
            raise OptionError(
                f"{{wd{n}}} is stage{n}'s weight_decay: it must be finite, weight_decay >= 0, "
                f"got {st.weight_decay}",
                f"wd{n}",
            )


def _either(choices: tuple[str, ...]) -> str:
    return " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"


def _validate_backbone(cfg: FitConfig) -> None:
    """The architecture and the options that start or tune it (pretrained backbones)."""

    if cfg.dataset == "features":
        if cfg.arch != "none":
            raise OptionError(
                "{dataset} features has no backbone: leave {arch} unset", "dataset", "arch"
            )
        set_ = [
            name
            for name, on in (
                ("pretrained", cfg.pretrained),
                ("weights", cfg.weights is not None),
                ("freeze_backbone", cfg.freeze_backbone),
                ("backbone_lr_scale", cfg.backbone_lr_scale != 1.0),
            )
            if on
        ]
        if set_:
            named = ", ".join("{" + k + "}" for k in set_)
            raise OptionError(
                f"{named}: {{dataset}} features has no backbone to start", *set_, "dataset"
            )
        if cfg.stage1_schedule != "cosine":
            raise OptionError(
                "{dataset} features trains its linear stage-1 head with the cosine schedule: "
                "leave {stage1_schedule} unset",
                "dataset",
                "stage1_schedule",
            )
        if cfg.stage2_mode != "cached":
            raise OptionError(
                "{dataset} features trains stage 2 on the features: {stage2_mode} cached",
                "dataset",
                "stage2_mode",
            )
        return
    if cfg.arch == "none":
        raise OptionError(
            "{arch} none is for {dataset} features; choose a network", "arch", "dataset"
        )
    check_arch(cfg.arch, pretrained=cfg.pretrained)
    if cfg.pretrained and cfg.weights is not None:
        raise OptionError(
            "give {pretrained} (download) or {weights} FILE (local), not both",
            "pretrained",
            "weights",
        )
    if not cfg.backbone_lr_scale > 0:
        raise OptionError(
            f"{{backbone_lr_scale}} must be > 0, got {cfg.backbone_lr_scale}", "backbone_lr_scale"
        )
    if cfg.freeze_backbone and cfg.backbone_lr_scale != 1.0:
        raise OptionError(
            "{freeze_backbone} trains no backbone: drop {backbone_lr_scale}",
            "freeze_backbone",
            "backbone_lr_scale",
        )
