"""How ``lort compare`` chooses each method's settings and stopping epoch: three protocols.

- ``tuned`` (the default, the fair one): every method runs its authors' recipe
  (:mod:`lort.methods.recipes`) over a search: the learning rate times 0.01, 0.1, 1, 10 and 100,
  weight decay none or the recipe's, and the values of the method's own hyperparameter (LORT's
  delta over the run's ``smooth_grid``, tau, gamma, beta, the LDAM margin, the MaxNorm
  threshold). Each configuration is scored on the validation split after every epoch; the
  (configuration, epoch) with the highest validation class-mean accuracy is kept, ties broken by
  the lower validation NLL, then the first. Only what was kept is evaluated on the test set.
- ``authors``: each recipe with its authors' hyperparameters, untuned, at the last epoch (LORT's
  delta fixed in the run's config, else chosen on validation at the last epoch).
- ``test-selected``: the tuned search with every choice, configuration and epoch, made on the
  TEST set: the habit of much published code (LOS, LTWB, LDAM-DRW, BALMS on CIFAR), shown only
  to measure how much it inflates a number, and labelled wherever it appears.
- ``paper``: the paper's own Table 1 (:mod:`lort.methods.paper`): each row's formula alone as
  one 20-epoch fine-tune of the stage-1 head with the run's batch, the constants held, the
  learning rate (the run's times :data:`~lort.methods.paper.PAPER_LR_FACTORS`) and weight
  decay searched, the (grid point, epoch) chosen on the validation split; Vanilla FC, tau-norm
  and logit adjustment are the stage-1 classifier with nothing chosen.
- ``paper-test-selected``: the paper's reporting: the same search chosen on the TEST set, and
  each row reports the best of its seeds ("the best result in five trails", Sec. 5.1);
  labelled wherever it appears.

A post-hoc method (tau-norm, logit adjustment: no re-training in their authors' code) has no
epochs; only its tau is chosen.

Every search that chooses a configuration and its best epoch on validation (``tuned``,
``paper``) is by default a successive-halving one (:data:`SEARCH_DEFINITION`): the
configurations that validation has ruled out stop training early, the same rule for every
method; ``full`` trains every configuration to its last epoch. The test-selected protocols
always search in full: the habit they measure picks the best on the test set among every
configuration and epoch (a superset of what the halving search on validation saw, so their gap
to it is never negative).
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from lort.errors import InputError
from lort.files import finite_or_none
from lort.methods import Method, get_method, make_head
from lort.methods.paper import PAPER_LR_FACTORS, PAPER_WEIGHT_DECAYS, paper_row
from lort.methods.recipes import LR_FACTORS, WD_WHEN_NONE, Recipe, recipe_for
from lort.optim import StageConfig
from lort.options import COMPARE_PROTOCOLS
from lort.run.finished import FinishedRun
from lort.stage2.grid import HeadConfig, full_head_epochs, head_epochs
from lort.stage2.select import ValScore, best_on_validation, kept_scores

Protocol = Literal["tuned", "authors", "test-selected", "paper", "paper-test-selected"]
PROTOCOLS: tuple[Protocol, ...] = typing.get_args(Protocol)
assert tuple(p for p in COMPARE_PROTOCOLS if p != "shared") == PROTOCOLS
# The protocols of the paper's Table 1 (lort.methods.paper), and those choosing on the test set.
PAPER_PROTOCOLS = ("paper", "paper-test-selected")
TEST_SELECTED = ("test-selected", "paper-test-selected")
Search = Literal["halving", "full"]
SEARCHES: tuple[Search, ...] = typing.get_args(Search)
SEARCH_DEFINITION: dict[str, str] = {
    "halving": "successive halving on validation: every configuration trains to the first "
    "rung, then only the better half (each at its best epoch so far) trains on to the next; "
    "the rungs at E // 2^j epochs for j = ceil(log2 configurations) down to 1, none before "
    "E // 10 (E the epochs); every epoch trained stays a candidate",
    "full": "every configuration trained to its last epoch and scored after each (always so "
    "in the test-selected protocols)",
}
PROTOCOL_DEFINITION: dict[str, str] = {
    "tuned": "each method's authors' recipe, searched over learning rate (x0.01 to x100), "
    "weight decay (none or the recipe's) and its own hyperparameter; the configuration and "
    "the epoch chosen on the validation split (class-mean accuracy, then NLL, then the "
    "first); test numbers only for what was chosen",
    "authors": "each method's authors' recipe and hyperparameters, untuned, at its last epoch "
    "(LORT's delta: the run's fixed one, else chosen on validation at the last epoch)",
    "test-selected": "TEST-SELECTED: the tuned search with the configuration and the epoch "
    "chosen on the TEST set, the habit of much published code; shown to measure the gap, not "
    "a fair comparison",
    "paper": "the paper's Table 1: each row's formula alone, one 20-epoch fine-tune of the "
    "stage-1 head (Appendix B), gamma, beta, delta, tau and the MaxNorm radius held constant, "
    f"the learning rate (the run's x{min(PAPER_LR_FACTORS):g} to x{max(PAPER_LR_FACTORS):g}) "
    f"and weight decay ({', '.join(f'{w:g}' for w in PAPER_WEIGHT_DECAYS)}; Fig. 5's values "
    "are not in the text) searched, the grid point and epoch chosen on the validation split; "
    "Vanilla FC, tau-norm and logit adjustment are the stage-1 classifier",
    "paper-test-selected": "TEST-SELECTED, the paper's reporting: the paper protocol's search "
    "chosen on the TEST set, and the best of the seeds ('the best result in five trails'); "
    "shown to measure the gap, not a fair comparison",
}


@dataclass(frozen=True)
class Plan:
    """What one (method, seed) trains under a protocol: its recipe, the candidate
    configurations, and the split that chooses among them."""

    method: Method
    recipe: Recipe
    protocol: Protocol
    candidates: tuple[HeadConfig, ...]
    choose_on: Literal["val", "test"] | None  # None: a single candidate, nothing to choose
    last_epoch: bool  # the authors protocol keeps the last epoch
    search: Search = "full"  # halving only where it can stop a candidate early

    def fingerprint(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "parts": {  # as JSON stores them (tuples as lists)
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self.method).items()
            },
            "recipe": self.recipe.to_dict(),
            "candidates": [
                {"stage": dataclasses.asdict(c.stage), "seed": c.seed, "hyper": dict(c.hyper)}
                for c in self.candidates
            ],
            "choose_on": self.choose_on,
            "last_epoch": self.last_epoch,
            "search": self.search,
        }


def plan(
    run: FinishedRun, name: str, seed: int, protocol: Protocol, search: Search = "halving"
) -> Plan:
    """The candidates of ``name`` (a method or composition) on ``run`` for one seed, searched
    with ``search`` where a search keeps best epochs (else every candidate to its end)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if search not in SEARCHES:
        raise InputError(f"--search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if protocol in PAPER_PROTOCOLS:
        row = paper_row(name)
        recipe, method = row.recipe(run.cfg.dataset), row.method
    else:
        recipe, method = recipe_for(name), get_method(name)
    n_train = len(run.problem.data.train_labels)
    stage = recipe.stage(run.cfg.stage2, n_train) or _NO_TRAINING
    if protocol in PAPER_PROTOCOLS:
        grids: dict[str, tuple[float, ...]] = {}
        hyper = dict(recipe.hyper)
        stages = _paper_stages(stage) if recipe.retrains else [stage]
    elif protocol == "authors":
        hyper = dict(recipe.hyper)
        grids = {}
        if method.target == "smooth":
            smooth = run.smooth_plan(method, "val" if run.has_val else "none")
            if smooth.mode == "select":
                grids["smooth"] = smooth.grid
            else:
                hyper["smooth"] = smooth.delta
        stages = [stage]
    else:
        grids = dict(recipe.search)
        if method.target == "smooth":
            grids["smooth"] = tuple(run.cfg.smooth_grid)
        hyper = {k: v for k, v in recipe.hyper.items() if k not in grids}
        stages = _stages(stage) if recipe.retrains else [stage]
    keys = list(grids)
    candidates = tuple(
        HeadConfig(st, seed, hyper | dict(zip(keys, values, strict=True)))
        for st in stages
        for values in itertools.product(*(grids[k] for k in keys))
    )
    if protocol in TEST_SELECTED:
        choose_on: Literal["val", "test"] | None = "test"
    elif len(candidates) > 1:
        if not run.has_val:
            raise InputError(
                f"{run.root} has no validation split to choose {name}'s settings on; re-run "
                "`lort fit` with a validation split, or use --protocol authors"
                + (" (or paper-test-selected)" if protocol == "paper" else "")
            )
        choose_on = "val"
    else:
        choose_on = "val" if run.has_val else None
    last = protocol == "authors"
    halves = choose_on == "val" and not last and len(candidates) > 1 and recipe.retrains
    return Plan(method, recipe, protocol, candidates, choose_on, last, search if halves else "full")


# A post-hoc rule trains nothing; its candidates carry this in place of stage-2 settings.
_NO_TRAINING = StageConfig(epochs=0, lr=0.0, weight_decay=0.0, batch_size=1)


def _stages(stage: StageConfig) -> list[StageConfig]:
    """The tuned protocol's learning rates and weight decays around a recipe's."""
    wds = (0.0, stage.weight_decay or WD_WHEN_NONE)
    return [
        dataclasses.replace(stage, lr=stage.lr * f, weight_decay=wd)
        for f in LR_FACTORS
        for wd in wds
    ]


def _paper_stages(stage: StageConfig) -> list[StageConfig]:
    """The paper protocol's grid (lort's values for Fig. 5) around the run's stage 2."""
    return [
        dataclasses.replace(stage, lr=stage.lr * f, weight_decay=wd)
        for f in PAPER_LR_FACTORS
        for wd in PAPER_WEIGHT_DECAYS
    ]


@dataclass
class Chosen:
    """The outcome of a plan: the kept head, its configuration and epoch (0 for a post-hoc
    rule), every candidate's score on the choosing split, and the kept one's per-epoch
    validation and test curve."""

    head: nn.Module
    config: HeadConfig
    epoch: int
    scores: list[dict[str, Any]]
    curve: list[dict[str, Any]]
    head_epochs: int = 0  # the epochs trained, summed over the heads (the test curve's too)
    full_head_epochs: int = 0  # what the full search trains for the same


def run_plan(run: FinishedRun, p: Plan) -> Chosen:
    """Train (or, for a post-hoc rule, score) every candidate and keep the best."""
    problem = run.problem
    if not p.recipe.retrains:
        head = make_head(p.method, problem.init.in_features, problem.k, problem.init).eval()
        split = p.choose_on
        vals = [
            problem.val_score(p.method, head, c.hyper.get("tau"), split) if split else None
            for c in p.candidates
        ]
        scores = [v or ValScore(None, None) for v in vals]
        best = best_on_validation(scores) if split else 0
        nothing = [0] * len(scores)
        return Chosen(head, p.candidates[best], 0, _table(p, scores, nothing, nothing), [])
    configs = list(p.candidates)
    fresh = p.recipe.init == "fresh"
    epochs = configs[0].stage.epochs
    if p.choose_on is None:
        (head,) = problem.train_many(p.method, configs, fresh=fresh)
        return Chosen(head, configs[0], epochs, [], [], epochs, epochs)
    on_val = p.choose_on == "val"
    alone = len(configs) == 1
    results = problem.train_stopped(
        p.method,
        configs,
        on=p.choose_on,
        fresh=fresh,
        record_test=on_val and alone,
        halving=p.search == "halving",
    )
    trained, full = head_epochs(results), full_head_epochs(configs)
    picked, scores = kept_scores(results, last=p.last_epoch)
    best = best_on_validation(scores)
    r = results[best]
    head = r.head if p.last_epoch else r.best_head
    assert head is not None
    tests: list[float | None] = [e.test_accuracy for e in r.history]
    if on_val and not alone:
        # The test curve of the kept configuration only (recorded, never used to choose):
        # trained again alone rather than every candidate scored on the test set after every
        # epoch. Alone and in the grid round differently; a learning rate large enough to make
        # training chaotic turns that into another head, whose curve is not the kept one's:
        # kept only where the validation curves agree at every epoch (measure_protocol also
        # checks the kept epoch's test score), else no test curve. A configuration that a
        # halving search stopped early has a curve to the epoch it stopped at.
        (again,) = problem.train_stopped(
            p.method, [configs[best]], on="val", fresh=fresh, record_test=True
        )
        trained, full = trained + epochs, full + epochs
        alike = again.history[: len(r.history)]
        followed = all(
            curves_agree(a.val_accuracy, e.val_accuracy)
            for a, e in zip(alike, r.history, strict=True)
        )
        tests = [a.test_accuracy if followed else None for a in alike]
    curve = [
        {
            "epoch": e.epoch,
            "val_accuracy": e.val_accuracy if on_val else None,
            "test_accuracy": t if on_val else e.val_accuracy,
        }
        for e, t in zip(r.history, tests, strict=True)
    ]
    table = _table(p, scores, [e.epoch for e in picked], [r.trained_epochs for r in results])
    return Chosen(head, configs[best], picked[best].epoch, table, curve, trained, full)


# How far two class-mean accuracies of one configuration may differ and still be one head's
# (half a point): a near-tie decided the other way by rounding moves a few rows (cb-resample on
# CIFAR-10-LT: 2 of 10,000 test rows, one validation image of 100 per class is 0.001); a
# chaotic run moves points (LWS at lr 50: 2 to 10).
CURVE_TOLERANCE = 5e-3


def curves_agree(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= CURVE_TOLERANCE


def _table(
    p: Plan, scores: list[ValScore], epochs: list[int], trained: list[int]
) -> list[dict[str, Any]]:
    """Every candidate with its score on the choosing split at its kept epoch and the epochs
    it trained (fewer than its last where a halving search stopped it), as stored beside the
    result."""
    split = p.choose_on or "val"
    return [
        {
            "lr": c.stage.lr,
            "weight_decay": c.stage.weight_decay,
            "hyper": dict(c.hyper),
            "epoch": e,
            "epochs_trained": t,
            f"{split}_balanced_accuracy": s.accuracy,
            f"{split}_nll": None if s.nll is None else finite_or_none(s.nll),
        }
        for c, s, e, t in zip(p.candidates, scores, epochs, trained, strict=True)
    ]
