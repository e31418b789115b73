"""Stage 2 on frozen features: one problem, any number of classifier re-trainings.

A :class:`Stage2` holds what every re-training of a run shares: the resolved config, the data's
labels, the feature cache, the stage-1 classifier every head starts from, and the training
counts. It trains a head of any method on the cached features, gives a head's logits for a
split (the method's inference rule, flip averaging where the data mirrors), evaluates them
through :mod:`lort.analysis`, and picks LORT's delta on the validation split (never the test
set). ``lort fit`` builds one from the run it is training; ``lort compare`` and ``lort sweep``
open one from a finished run folder with :func:`open_run`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lort.analysis import Analysis, analyze, new_stats, summarize
from lort.config import FitConfig
from lort.data import LTData, build_dataset
from lort.data.ltdata import Split
from lort.errors import InputError, OptionError
from lort.files import finite_or_none
from lort.methods import Method, inference_logits, rho
from lort.methods.recipes import AUTHORS_TAU, recipe_for
from lort.models import input_spec
from lort.optim import StageConfig
from lort.runtime import Progress, Runtime
from lort.stage1.features import FeatureCache
from lort.stage2.calibrate import Calibration, calibrate
from lort.stage2.grid import EpochScores, EvalSplit, HeadConfig, HeadResult, train_head_grid
from lort.stage2.loop import compute_dtype, convert_rows, train_head_cached
from lort.stage2.select import ValScore, best_on_validation, kept_scores

Stop = Literal["last", "val", "test"]
# Which split a stopping protocol picks the epoch on: none for "last" (the selection of
# delta stays on validation), validation, or the test set (the published habit, shown on
# request and labelled as such wherever it appears).
STOP_SPLIT: dict[str, Split] = {"last": "val", "val": "val", "test": "test"}
_SPLIT_NAME = {"val": "validation split", "test": "TEST set"}


def option_tau(cfg: FitConfig) -> float:
    """``--tau`` as a number: the authors' value (1, Decoupling's and Menon et al.'s) for auto,
    where nothing chose one."""
    return AUTHORS_TAU if cfg.tau == "auto" else float(cfg.tau)


def own_grids(method: Method, cfg: FitConfig) -> dict[str, tuple[float, ...]]:
    """The values of a method's own hyperparameters that ``lort fit`` chooses on validation:
    its recipe's search (:mod:`lort.methods.recipes`) less delta, which ``--smooth`` sets, and
    less tau unless ``--tau`` is auto."""
    search = recipe_for(method.name).search
    fixed = {"smooth"} | (set() if cfg.tau == "auto" else {"tau"})
    return {k: v for k, v in search.items() if k not in fixed}


def load_data(cfg: FitConfig) -> LTData:
    """The long-tailed dataset a config describes (rebuilt identically from a saved one), read
    as the config's network reads images: a pretrained network's own input size and
    normalisation (see :func:`lort.models.input_spec`), else the dataset's."""
    data = build_dataset(
        cfg.dataset,
        data_root=cfg.data_root,
        imbalance_ratio=cfg.imbalance_ratio,
        lt_split=cfg.lt_split,  # type: ignore[arg-type]
        val_split=cfg.val_split,  # type: ignore[arg-type]
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        download=cfg.download,
    )
    if cfg.dataset == "features":
        return data
    spec = input_spec(
        cfg.arch,
        pretrained=cfg.pretrained,
        weights=cfg.weights,
        in_channels=data.in_channels,
        mirror=data.mirrorable,
    )
    return data if spec is None else data.with_transform(spec)


@torch.no_grad()
def infer(
    method: Method,
    head: nn.Module,
    features: torch.Tensor,
    flipped: torch.Tensor | None,
    counts: np.ndarray,
    tau: float,
) -> torch.Tensor:
    """Logits of ``features`` as ``method`` infers them; with the features of the mirror
    images (``flipped``), the mean of both views' logits. ``lort fit``'s evaluation and
    ``lort predict`` both go through here. Half-precision features are converted a block of
    rows at a time (:func:`lort.stage2.loop.compute_dtype`)."""
    dtype, step = compute_dtype(features), convert_rows(features)
    out = []
    for i in range(0, max(1, len(features)), step):  # one block, empty, when there are no rows
        z = inference_logits(method, head, features[i : i + step].to(dtype), counts, tau=tau)
        if flipped is not None:
            x_flip = flipped[i : i + step].to(dtype)
            z = (z + inference_logits(method, head, x_flip, counts, tau=tau)) / 2
        out.append(z)
    return out[0] if len(out) == 1 else torch.cat(out)


@dataclass
class Stage2:
    """One frozen-feature problem: the config, labels, feature cache, stage-1 head, counts."""

    cfg: FitConfig
    data: LTData
    cache: FeatureCache
    init: nn.Linear
    counts: np.ndarray

    @property
    def k(self) -> int:
        return self.data.num_classes

    @property
    def has_val(self) -> bool:
        return self.data.val_labels is not None and len(self.data.val_labels) > 0

    def tau(self, own: Mapping[str, float] | None = None) -> float:
        """The tau a head is evaluated with: chosen with it (``own``), else ``--tau``, else
        the authors' value (1, Decoupling's and Menon et al.'s)."""
        if own and "tau" in own:
            return float(own["tau"])
        return option_tau(self.cfg)

    @property
    def flips(self) -> bool:
        """Whether logits average the plain and the mirrored view."""
        return self.cfg.flip_tta and self.data.mirrorable

    def _training_set(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The cached training features, their mirrored view (or None) and the labels."""
        feats = self.cache.tensor("train")
        if feats is None:
            raise InputError("the feature cache holds no training features")
        flipped = self.cache.tensor("train", flipped=True)
        return feats, flipped, torch.from_numpy(self.data.train_labels)

    def train(
        self,
        method: Method,
        smooth: float,
        *,
        seed: int | None = None,
        stage2: StageConfig | None = None,
        progress: Progress | None = None,
    ) -> nn.Module:
        """A head of ``method`` re-trained on the cached training features (the run's seed
        and stage-2 settings unless given)."""
        return train_head_cached(
            method,
            *self._training_set(),
            self.counts,
            self.init,
            self.cfg.stage2 if stage2 is None else stage2,
            smooth=smooth,
            seed=self.cfg.seed if seed is None else seed,
            progress=progress,
        )

    def stop(self) -> Literal["val", "last"]:
        """Which epoch ``lort fit`` keeps (see :data:`lort.options.STAGE2_STOPS`)."""
        if self.cfg.stage2_stop == "auto":
            return "val" if self.has_val and self.cfg.stage2_mode == "cached" else "last"
        return "val" if self.cfg.stage2_stop == "val" else "last"  # checked by lort fit

    def train_kept(
        self,
        method: Method,
        smooth: float,
        stop: Literal["val", "last"],
        own: Mapping[str, float] | None = None,
        progress: Progress | None = None,
    ) -> tuple[nn.Module, int, list[EpochScores]]:
        """The head ``lort fit`` keeps, its epoch and the validation scores of every epoch
        (none when the last is kept): the last, or the best on validation (with the method's
        own hyperparameters ``own``, chosen there by :meth:`choose_own`)."""
        if stop == "last":
            if own:
                raise ValueError("own hyperparameters are chosen with the epoch, on validation")
            return self.train(method, smooth, progress=progress), self.cfg.stage2.epochs, []
        config = self.config(method, smooth, own=own)
        (result,) = self.train_stopped(method, [config], on="val", progress=progress)
        assert result.best_head is not None and result.best_epoch is not None
        return result.best_head, result.best_epoch, result.history

    def choose_own(
        self,
        method: Method,
        smooth: float,
        on: Split | None,
        *,
        seed: int | None = None,
        stage2: StageConfig | None = None,
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """The method's own hyperparameters that no option sets (focal gamma, the class-balanced
        beta, the LDAM margin, the MaxNorm threshold, and tau when ``--tau`` is auto:
        :func:`own_grids`), chosen with the epoch on split ``on`` over its recipe's values, with
        the run's stage-2 settings; ``on=None`` keeps the authors' values (the functions'
        defaults). Returns the values and a record."""
        grids = own_grids(method, self.cfg)
        if not grids:
            return {}, {"mode": "none"}
        if on is None:
            return {}, {"mode": "authors", "values": dict(recipe_for(method.name).hyper)}
        keys = list(grids)
        values = [dict(zip(keys, v, strict=True)) for v in itertools.product(*grids.values())]
        configs = [self.config(method, smooth, seed, stage2, own=v) for v in values]
        picked, scores = kept_scores(self.train_stopped(method, configs, on=on))
        best = best_on_validation(scores)
        return values[best], {
            "mode": "auto",
            "grid": {k: list(v) for k, v in grids.items()},
            "values": values,
            f"{on}_balanced_accuracy": [v.accuracy for v in scores],
            f"{on}_nll": [v.nll for v in scores],
            "best_epochs": [e.epoch for e in picked],
            "chosen": values[best],
            "why": f"highest class-mean accuracy on the {_SPLIT_NAME[on]} at each value's best "
            "epoch, ties broken by the lower NLL",
        }

    @torch.no_grad()
    def logits(
        self, method: Method, head: nn.Module, split: Split, tau: float | None = None
    ) -> np.ndarray:
        """Float32 logits of ``split`` as the method infers them (with the run's tau unless
        given), flip-averaged where the data mirrors and the cache holds the mirrored view."""
        head = head.cpu().eval()
        feats = self.cache.tensor(split)
        if feats is None:
            raise InputError(f"the feature cache holds no {split} features")
        flipped = self.cache.tensor(split, flipped=True) if self.flips else None
        tau = self.tau() if tau is None else tau
        return infer(method, head, feats, flipped, self.counts, tau).float().numpy()

    def calibration(
        self, method: Method, head: nn.Module, tau: float, test_logits: np.ndarray
    ) -> Calibration:
        """The head's temperature fitted on the validation split (:mod:`lort.stage2.calibrate`)
        and its scores there and on the test split (``test_logits``, already computed)."""
        val = None
        if self.has_val:
            val = (self.logits(method, head, "val", tau), self.data.val_labels)
        return calibrate(val, (test_logits, self.data.test_labels), self.counts)

    def val_score(
        self, method: Method, head: nn.Module, tau: float | None = None, split: Split = "val"
    ) -> ValScore:
        """The head on the validation split (or ``split``): the criterion of every choice."""
        logits = self.logits(method, head, split, tau)
        a = analyze(logits, self.data.labels(split), hessian="none")
        return ValScore(a.balanced_accuracy, a.nll)

    def evaluate(
        self,
        logits: np.ndarray,
        *,
        rt: Runtime | None = None,
        hessian: Literal["bound", "exact", "none"] = "bound",
    ) -> Analysis:
        """Statistics of test logits, with the shot groups of the training counts. Under
        DDP each rank takes a shard and the accumulators merge exactly on every rank."""
        labels = self.data.test_labels
        stats = new_stats(logits.shape[1], hessian=hessian)
        if rt is None or not rt.distributed:
            stats.update(np.ascontiguousarray(logits), np.ascontiguousarray(labels))
            return summarize(stats, train_counts=self.counts)
        rows = slice(rt.rank, None, rt.world)
        stats.update(np.ascontiguousarray(logits[rows]), np.ascontiguousarray(labels[rows]))
        shards: list[Any] = [None] * rt.world
        dist.all_gather_object(shards, stats)
        stats = shards[0]
        for other in shards[1:]:
            stats.merge(other)
        return summarize(stats, train_counts=self.counts)

    def config(
        self,
        method: Method,
        smooth: float,
        seed: int | None = None,
        stage2: StageConfig | None = None,
        own: Mapping[str, float] | None = None,
    ) -> HeadConfig:
        """One training of a grid: the run's seed and stage-2 settings unless given."""
        hyper = {"smooth": smooth} if method.target == "smooth" else {}
        if "tau" in method.hyper:
            hyper["tau"] = self.tau()
        hyper |= own or {}
        return HeadConfig(
            self.cfg.stage2 if stage2 is None else stage2,
            self.cfg.seed if seed is None else seed,
            hyper,
        )

    def eval_split(self, split: Split) -> EvalSplit:
        """A split's features (and mirrored view where logits average it) and labels."""
        feats = self.cache.tensor(split)
        if feats is None:
            raise InputError(f"the feature cache holds no {split} features")
        flipped = self.cache.tensor(split, flipped=True) if self.flips else None
        return EvalSplit(feats, flipped, torch.from_numpy(self.data.labels(split)))

    def train_stopped(
        self,
        method: Method,
        configs: list[HeadConfig],
        on: Split,
        *,
        fresh: bool = False,
        record_test: bool = False,
        halving: bool = False,
        progress: Progress | None = None,
    ) -> list[HeadResult]:
        """Heads trained together (from the stage-1 head, or ``fresh``ly initialised) and
        scored on split ``on`` after every epoch; each result's ``best_head`` is its head at the
        best epoch there (class-mean accuracy, then NLL, then the earliest). ``record_test``
        adds each epoch's test scores to the history (recorded, never used to choose);
        ``halving`` stops the configurations ruled out on ``on`` early (successive halving,
        :func:`lort.stage2.select.halving_rungs`)."""
        test = self.eval_split("test") if record_test and on != "test" else None
        return train_head_grid(
            method,
            *self._training_set(),
            self.counts,
            None if fresh else self.init,
            configs,
            val=self.eval_split(on),
            test=test,
            halving=halving,
            progress=progress,
        )

    def train_many(
        self,
        method: Method,
        configs: list[HeadConfig],
        *,
        fresh: bool = False,
        progress: Progress | None = None,
    ) -> list[nn.Module]:
        """Heads of ``method``, one per configuration, trained together on the cached
        features (:mod:`lort.stage2.grid`: each agrees with its training alone to float
        rounding), from the stage-1 head or ``fresh``ly initialised."""
        init = None if fresh else self.init
        results = train_head_grid(
            method, *self._training_set(), self.counts, init, configs, progress=progress
        )
        return [r.head for r in results]

    def choose_smooth(
        self,
        method: Method,
        smooth: str | float,
        grid: list[float],
        *,
        seed: int | None = None,
        stage2: StageConfig | None = None,
        stop: Stop = "last",
        progress: Progress | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """The label-smooth delta and how it was had: fixed, or (``smooth="auto"``) the grid
        value whose head scores best on the validation split (:func:`best_on_validation`).
        The grid's heads are trained together and only scored; the caller trains the chosen
        delta again, so a chosen delta gives the numbers of the same delta fixed. With
        ``stop`` other than "last" each head is scored at its best epoch on the split the
        protocol stops on (see :data:`STOP_SPLIT`). ``progress`` sees the grid's steps."""
        if method.target != "smooth":
            return 0.0, {"mode": "unused", "why": f"{method.name} trains on one-hot targets"}
        if smooth != "auto":
            d = float(smooth)
            return d, {"mode": "fixed", "delta": d, "rho": finite_or_none(rho(self.k, d))}
        if not self.has_val:
            raise OptionError(
                "{smooth} auto needs a validation split: give the run one ({val_split}, or "
                "{val_fraction} > 0)",
                "smooth",
                "val_split",
                "val_fraction",
            )
        configs = [self.config(method, d, seed, stage2) for d in grid]
        if stop == "last":
            heads = self.train_many(method, configs, progress=progress)
            scores = [self.val_score(method, head) for head in heads]
            epochs = None
        else:
            trained = self.train_stopped(method, configs, on=STOP_SPLIT[stop], progress=progress)
            picked, scores = kept_scores(trained)
            epochs = [e.epoch for e in picked]
        best = best_on_validation(scores)
        d = grid[best]
        split = STOP_SPLIT[stop]
        record = {
            "mode": "auto",
            "grid": grid,
            f"{split}_balanced_accuracy": [v.accuracy for v in scores],
            f"{split}_nll": [v.nll for v in scores],
            "delta": d,
            "rho": finite_or_none(rho(self.k, d)),
            "why": f"highest class-mean accuracy on the {_SPLIT_NAME[split]} "
            f"({len(self.data.labels(split)):,} images) among {len(scores)} values of delta, "
            f"ties broken by the lower {'validation' if split == 'val' else 'test'} NLL",
        }
        if epochs is not None:
            record["best_epochs"] = epochs
        return d, record
