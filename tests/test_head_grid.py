"""The grid trainer against training each head alone with lort.stage2.loop.train_head_cached."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lort.stage2.loop
from lort.errors import InputError
from lort.methods import METHODS, Method, SoftmaxLoss, get_method, inference_logits
from lort.optim import StageConfig
from lort.stage2.grid import (
    EvalSplit,
    HeadConfig,
    HeadResult,
    chunk_size,
    eval_rows,
    full_head_epochs,
    head_bytes,
    head_epochs,
    train_head_grid,
)
from lort.stage2.select import ValScore, best_on_validation, halving_rungs, ranked

COUNTS = np.array([50, 30, 25, 15, 12, 10, 8], dtype=np.int64)
K = COUNTS.size
N = int(COUNTS.sum())
D = 12
F64_RTOL = 1e-9  # the module docstring's float64 tolerance (observed: about 1e-15)
F32_RTOL = 1e-4  # float32 after a few hundred steps (observed: about 1e-6)

# Each method's own hyperparameter, two values per grid.
HYPER: dict[str, tuple[str, tuple[float, float]]] = {
    "lort": ("smooth", (0.5, 0.9)),
    "ldam": ("ldam_max_margin", (0.3, 0.6)),
    "focal": ("focal_gamma", (0.0, 2.0)),
    "cb-loss": ("cb_beta", (0.9, 0.999)),
    "cb-loss-softmax": ("cb_beta", (0.9, 0.999)),
    "maxnorm": ("threshold", (0.1, 0.5)),
    "tau-norm": ("tau", (0.5, 1.0)),
    "logit-adjust": ("tau", (1.0, 2.0)),
}


def data(
    dtype: torch.dtype = torch.float64, n: int = N, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain and flipped features (a class signal plus noise) and shuffled labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(np.repeat(np.arange(K), COUNTS))[torch.randperm(N, generator=g)]
    labels = labels[:n]
    centres = torch.randn(K, D, generator=g, dtype=dtype)
    feats = centres[labels] + torch.randn(n, D, generator=g, dtype=dtype)
    flip = centres[labels] + torch.randn(n, D, generator=g, dtype=dtype)
    return feats, flip, labels


def stage1(dtype: torch.dtype = torch.float64) -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(D, K).to(dtype)


def grid(
    method: Method, epochs: int = 3, batch: int = 16, shared: bool = False
) -> list[HeadConfig]:
    """Two seeds x two (lr, weight decay) x the method's two hyperparameter values (or, if
    ``shared``, the second value for all heads)."""
    name, values = HYPER.get(method.name, ("", ()))
    values = values[1:] if shared else values
    hypers = [{name: v} for v in values] or [{}]
    return [
        HeadConfig(StageConfig(epochs, lr, wd, batch), seed, h)
        for seed in (3, 11)
        for lr, wd in ((0.05, 0.0), (0.2, 5e-3))
        for h in hypers
    ]


def alone(
    method: Method,
    feats: torch.Tensor,
    flip: torch.Tensor | None,
    labels: torch.Tensor,
    init: nn.Linear | None,
    config: HeadConfig,
) -> nn.Module:
    """train_head_cached on one configuration, its hyperparameters given as the grid's are."""
    hyper = dict(config.hyper)
    smooth = hyper.pop("smooth", 0.0)
    hyper.pop("tau", None)
    return lort.stage2.loop.train_head_cached(
        method,
        feats,
        flip,
        labels,
        COUNTS,
        init,  # type: ignore[arg-type]
        config.stage,
        smooth=smooth,
        seed=config.seed,
        hyper=hyper,
    )


def assert_same_head(got: nn.Module, want: nn.Module, rtol: float) -> None:
    """Every parameter and buffer within ``rtol`` of the largest entry of the tensor."""
    got_state, want_state = got.state_dict(), want.state_dict()
    assert list(got_state) == list(want_state)
    for name, w in want_state.items():
        atol = rtol * float(w.abs().max().clamp_min(1e-12))
        torch.testing.assert_close(got_state[name], w, rtol=0.0, atol=atol, msg=name)


# ------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("name", "shared"), [(m, False) for m in METHODS] + [(m, True) for m in HYPER]
)
def test_each_head_is_the_one_trained_alone(
    monkeypatch: pytest.MonkeyPatch, name: str, shared: bool
) -> None:
    """A hyperparameter that differs between heads enters per head (per row, or the loss is
    vmapped for per-class constants); a shared one as the single loss's own."""
    method = get_method(name)
    feats, flip, labels = data()
    init = stage1()
    configs = grid(method, shared=shared)
    results = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    assert [r.config for r in results] == configs
    for r in results:
        want = alone(method, feats, flip, labels, init, r.config)
        assert_same_head(r.head, want, F64_RTOL)
        assert not r.head.training and r.best_head is None and r.history == []


@pytest.mark.parametrize("name", ["lort", "ldam", "cb-resample", "maxnorm"])
def test_float32_heads_agree_to_the_stated_tolerance(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    method = get_method(name)
    feats, flip, labels = data(torch.float32)
    init = stage1(torch.float32)
    configs = grid(method, epochs=20)[::3]  # 20 epochs x 10 steps
    for r in train_head_grid(method, feats, flip, labels, COUNTS, init, configs):
        want = alone(method, feats, flip, labels, init, r.config)
        assert_same_head(r.head, want, F32_RTOL)


@pytest.mark.parametrize("name", ["lort", "balanced-softmax", "logit-adjust", "maxnorm"])
def test_linear_heads_step_without_autograd_as_autograd_would(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A linear head with a softmax loss steps by SoftmaxLoss.logit_grad in the grid and alone
    (counted); with that path switched off (autograd's backward instead) every head is the
    same to float64 rounding. MaxNorm's loss has no analytic gradient: autograd throughout."""
    method = get_method(name)
    feats, flip, labels = data()
    init = stage1()
    configs = grid(method)
    calls = 0
    logit_grad = SoftmaxLoss.logit_grad

    def counted(self: SoftmaxLoss, *args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return logit_grad(self, *args, **kwargs)

    monkeypatch.setattr(SoftmaxLoss, "logit_grad", counted)
    fast = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    fast_alone = alone(method, feats, flip, labels, init, configs[-1])
    steps = math.ceil(N / configs[0].stage.batch_size) * configs[0].stage.epochs
    analytic = name != "maxnorm"
    # The grid: one call a step per seed (two seeds); alone: one a step.
    assert calls == (3 * steps if analytic else 0)
    monkeypatch.setattr(SoftmaxLoss, "has_logit_grad", property(lambda self: False))
    slow = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    for f, s in zip(fast, slow, strict=True):
        assert_same_head(f.head, s.head, F64_RTOL)
    slow_alone = alone(method, feats, flip, labels, init, configs[-1])
    assert_same_head(fast_alone, slow_alone, F64_RTOL)
    assert calls == (3 * steps if analytic else 0)


def test_the_analytic_step_under_bfloat16_autocast() -> None:
    """benches/scale_gpu.py trains the grid in bfloat16 autocast: the analytic step's weight
    gradient is autocast's product copied into the float32 gradient, and the heads stay
    float32, near the float32 ones (observed: 5e-4; training moves the weights about 0.5)."""
    method = get_method("lort")
    feats, flip, labels = data(torch.float32)
    init = stage1(torch.float32)
    configs = grid(method)[:2]
    want = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    for g, w in zip(got, want, strict=True):
        assert g.head.weight.dtype == torch.float32
        torch.testing.assert_close(g.head.weight, w.head.weight, rtol=0.0, atol=5e-3)


def test_fresh_heads_and_no_flipped_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without init each seed's head is drawn as train_head_cached draws it, from the same
    stream as the batches; without a flipped view there are no flip draws."""
    method = get_method("cosine")
    feats, _, labels = data(torch.float32)
    results = train_head_grid(method, feats, None, labels, COUNTS, None, grid(method))
    for r in results:
        want = alone(method, feats, None, labels, None, r.config)
        assert_same_head(r.head, want, F32_RTOL)
    heads = {r.config.seed: r.head.weight for r in results}
    assert not torch.equal(heads[3], heads[11])


def test_recipes_of_different_shapes_train_in_their_own_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    method = get_method("lort")
    feats, flip, labels = data()
    init = stage1()
    configs = [
        HeadConfig(StageConfig(2, 0.1, 0.0, 32), 5, {"smooth": 0.3}),
        HeadConfig(StageConfig(3, 0.1, 0.0, 16), 5, {"smooth": 0.3}),
        HeadConfig(StageConfig(2, 0.2, 1e-3, 32), 6, {"smooth": 0.7}),
    ]
    results = train_head_grid(method, feats, flip, labels, COUNTS, init, configs)
    for r, c in zip(results, configs, strict=True):
        assert r.config is c
        assert_same_head(r.head, alone(method, feats, flip, labels, init, c), F64_RTOL)


def test_the_global_random_state_is_left_alone() -> None:
    feats, flip, labels = data()
    init, configs = stage1(), grid(get_method("ce"))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_head_grid(get_method("ce"), feats, flip, labels, COUNTS, init, configs)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------- per-epoch evaluation


def scores(method: Method, head: nn.Module, split: EvalSplit, tau: float) -> tuple[float, float]:
    """Class-mean accuracy and NLL as lort fit evaluates: inference logits, flip-averaged."""
    z = inference_logits(method, head, split.feats, COUNTS, tau=tau)
    if split.feats_flip is not None:
        z = (z + inference_logits(method, head, split.feats_flip, COUNTS, tau=tau)) / 2
    pred, y = z.argmax(1), split.labels
    accs = [float((pred[y == c] == c).double().mean()) for c in range(K) if (y == c).any()]
    return float(np.mean(accs)), float(F.cross_entropy(z, y))


def best_by_rule(r: HeadResult) -> int:
    """Highest validation accuracy, then lowest NLL, then the earliest epoch."""
    return min(r.history, key=lambda s: (-s.val_accuracy, s.val_nll, s.epoch)).epoch


@pytest.mark.parametrize("name", ["tau-norm", "logit-adjust", "cosine", "lws"])
def test_per_epoch_scores_and_the_best_epoch(name: str) -> None:
    method = get_method(name)
    feats, flip, labels = data()
    val = EvalSplit(*data(n=60, seed=1))
    test_feats, _, test_labels = data(n=80, seed=2)
    test = EvalSplit(test_feats, None, test_labels)  # no flipped view
    configs = grid(method, epochs=6)
    results = train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(), configs, val=val, test=test
    )
    for r in results:
        tau = r.config.hyper.get("tau", 1.0)
        assert [s.epoch for s in r.history] == list(range(1, 7))
        last = r.history[-1]
        acc, nll = scores(method, r.head, val, tau)
        assert last.val_accuracy == pytest.approx(acc, abs=1e-12)
        assert last.val_nll == pytest.approx(nll, rel=1e-9)
        acc, nll = scores(method, r.head, test, tau)
        assert last.test_accuracy == pytest.approx(acc, abs=1e-12)
        assert last.test_nll == pytest.approx(nll, rel=1e-9)
        assert r.best_epoch == best_by_rule(r)
        assert r.best_head is not None
        best = r.history[r.best_epoch - 1]
        acc, nll = scores(method, r.best_head, val, tau)
        assert (best.val_accuracy, best.val_nll) == (pytest.approx(acc), pytest.approx(nll))
    if name != "lws":  # its scales on a random stage-1 head all peak at epoch 1 here
        assert len({r.best_epoch for r in results}) > 1
    # The test split is recorded only: selection is the same without it.
    again = train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, val=val)
    assert [r.best_epoch for r in again] == [r.best_epoch for r in results]
    assert all(s.test_accuracy is None and s.test_nll is None for s in again[0].history)


def test_ties_go_to_the_earliest_epoch() -> None:
    """With lr 0 every epoch scores the same: the first one is the best."""
    method = get_method("ce")
    feats, flip, labels = data()
    val = EvalSplit(*data(n=60, seed=1))
    configs = [
        HeadConfig(StageConfig(4, 0.0, 0.0, 16), 0),
        HeadConfig(StageConfig(4, 0.5, 0, 16), 0),
    ]
    still, moving = train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, val=val)
    assert len({(s.val_accuracy, s.val_nll) for s in still.history}) == 1
    assert still.best_epoch == 1
    assert still.best_head is not None
    assert_same_head(still.best_head, still.head, 0.0)
    assert moving.best_epoch == best_by_rule(moving)


def test_a_diverged_head_scores_nothing_and_does_not_disturb_its_neighbours() -> None:
    """An lr far past stable (the top of a search's grid) overflows to infinite or NaN
    logits: accuracy 0, NLL infinite, never the best; the head beside it trains as alone."""
    method = get_method("ce")
    feats, flip, labels = data(torch.float32)
    val = EvalSplit(*data(torch.float32, n=60, seed=1))
    sane = HeadConfig(StageConfig(3, 0.05, 0.0, 16), 0)
    configs = [HeadConfig(StageConfig(3, 1e38, 0.0, 16), 0), sane]
    wild, kept = train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(torch.float32), configs, val=val
    )
    assert all(s.val_accuracy == 0.0 and s.val_nll == math.inf for s in wild.history)
    assert all(s.val_accuracy > 0.0 and math.isfinite(s.val_nll) for s in kept.history)
    (alone_,) = train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(torch.float32), [sane], val=val
    )
    assert [s.val_accuracy for s in kept.history] == [s.val_accuracy for s in alone_.history]


# ------------------------------------------------------------------------------ memory


def test_chunk_size_shrinks_with_the_number_of_classes() -> None:
    lort_method = get_method("lort")
    gib = 1 << 30
    sizes = [chunk_size(lort_method, 512, k, 64, gib) for k in (100, 1000, 8142)]
    assert sizes[0] > sizes[1] > sizes[2] >= 1
    assert sizes[2] * head_bytes(lort_method, 512, 8142, 64) <= gib
    assert chunk_size(lort_method, 512, 8142, 64, 1) == 1  # never below one head
    # A best-epoch copy makes evaluating heads larger; LWS trains K numbers only.
    assert head_bytes(lort_method, 512, 100, 64, evaluate=True) > head_bytes(
        lort_method, 512, 100, 64
    )
    assert chunk_size(get_method("lws"), 512, 100, 64, gib) > sizes[0]
    assert eval_rows(16, 1000, 6 * 16 * 1000 * 4 * 10) == 10
    assert eval_rows(16, 1000, 1) == 1


def test_a_small_budget_trains_in_chunks_with_the_same_result() -> None:
    method = get_method("maxnorm")
    feats, flip, labels = data()
    val = EvalSplit(*data(n=60, seed=1))
    configs = grid(method)  # 8 heads
    whole = train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, val=val)
    budget = 3 * head_bytes(method, D, K, 16, itemsize=8, evaluate=True)  # 3 heads per chunk
    assert chunk_size(method, D, K, 16, budget, itemsize=8, evaluate=True) == 3
    parts = train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(), configs, val=val, memory_budget=budget
    )
    for a, b in zip(whole, parts, strict=True):
        assert a.config is b.config
        assert_same_head(b.head, a.head, F64_RTOL)
        assert b.best_epoch == a.best_epoch
        for s, t in zip(a.history, b.history, strict=True):
            assert s.val_accuracy == t.val_accuracy
            assert s.val_nll == pytest.approx(t.val_nll, rel=1e-12)


# ------------------------------------------------------------------------------ errors


def test_clear_errors() -> None:
    feats, flip, labels = data()
    st = StageConfig(1, 0.1, 0.0, 16)
    ce, lort_method = get_method("ce"), get_method("lort")

    def run(method: Method, configs: list[HeadConfig], **kw: object) -> None:
        train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, **kw)  # type: ignore[arg-type]

    with pytest.raises(InputError, match="reads smooth; got focal_gamma"):
        run(lort_method, [HeadConfig(st, 0, {"focal_gamma": 2.0})])
    with pytest.raises(InputError, match="reads no hyperparameters; got smooth"):
        run(ce, [HeadConfig(st, 0, {"smooth": 0.5})])
    with pytest.raises(InputError, match="smoothing delta"):
        run(lort_method, [HeadConfig(st, 0, {"smooth": 1.5})])
    with pytest.raises(InputError, match="MaxNorm threshold"):
        run(get_method("maxnorm"), [HeadConfig(st, 0, {"threshold": -0.1})])
    with pytest.raises(InputError, match="at least one configuration"):
        run(ce, [])
    with pytest.raises(InputError, match="epochs >= 1"):
        run(ce, [HeadConfig(StageConfig(0, 0.1, 0.0, 16), 0)])
    with pytest.raises(InputError, match="pass val too"):
        run(ce, [HeadConfig(st, 0)], test=EvalSplit(feats, None, labels))
    with pytest.raises(
        InputError, match=r"initial head is torch\.float32; heads on torch\.float64 features"
    ):
        train_head_grid(ce, feats, flip, labels, COUNTS, nn.Linear(D, K), [HeadConfig(st, 0)])
    with pytest.raises(InputError, match="evaluation features"):
        run(ce, [HeadConfig(st, 0)], val=EvalSplit(feats[:, :3], None, labels))
    with pytest.raises(InputError, match=r"lie in \[0, 7\)"):
        run(ce, [HeadConfig(st, 0)], val=EvalSplit(feats, None, labels + 1))


def test_progress_after_every_epoch() -> None:
    feats, flip, labels = data()
    calls: list[tuple[str, int, int, float, float]] = []
    configs = grid(get_method("lort"))  # 8 heads, 3 epochs of 10 steps
    train_head_grid(
        get_method("lort"),
        feats,
        flip,
        labels,
        COUNTS,
        stage1(),
        configs,
        progress=lambda *a: calls.append(a),
    )
    assert [(c[0], c[1], c[2]) for c in calls] == [("stage 2", s, 30) for s in (10, 20, 30)]
    assert all(0.0 < c[3] < 10.0 and 0.0 <= c[4] <= 1.0 for c in calls)


def test_progress_counts_every_chunk_and_what_halving_stops() -> None:
    """One count over all chunks (a large head trains alone: a features fit's delta grid at
    K = 1,000 is ten chunks in a row); a halving search takes a stopped chunk's rest off it."""
    method = get_method("lort")
    feats, flip, labels = data()
    configs = grid(method)  # 8 heads, 3 epochs of 10 steps
    calls: list[tuple[int, int]] = []
    train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(), configs, memory_budget=1,
        progress=lambda _, done, total, *rest: calls.append((done, total)),
    )  # fmt: skip
    assert calls == [(10 * e, 8 * 30) for e in range(1, 25)]  # one head a chunk
    calls.clear()
    configs = [HeadConfig(StageConfig(20, c.stage.lr, 0.0, 16), c.seed, c.hyper) for c in configs]
    one_head = head_bytes(method, D, K, 16, itemsize=8, evaluate=True)  # chunks of two heads
    train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(), configs, memory_budget=2 * one_head,
        val=EvalSplit(*data(n=60, seed=1)), halving=True,
        progress=lambda _, done, total, *rest: calls.append((done, total)),
    )  # fmt: skip
    done = [d for d, _ in calls]
    # Four chunks of 20 epochs of 10 steps until the first rung; the end is the count.
    assert calls[0] == (10, 4 * 200) and done == sorted(done)
    assert calls[-1][0] == calls[-1][1] < 4 * 200


def test_configurations_differing_in_tau_alone_train_one_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tau changes only evaluation: LORT + logit adjustment over three taus trains one head per
    (lr, seed), each tau scored on it as if trained alone."""
    import lort.stage2.grid as grid_module

    method = get_method("lort+logit-adjust")
    feats, flip, labels = data()
    val = EvalSplit(*data(n=60, seed=1))
    configs = [
        HeadConfig(StageConfig(4, lr, 0.0, 16), seed, {"smooth": 0.5, "tau": tau})
        for seed in (3, 11)
        for lr in (0.05, 0.2)
        for tau in (0.0, 1.0, 2.0)
    ]
    trained: list[int] = []
    real = grid_module._Grid

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            trained.append(self.trained)

    monkeypatch.setattr(grid_module, "_Grid", Spy)
    results = train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, val=val)
    assert sum(trained) == 4  # 12 configurations, 4 trainings
    monkeypatch.setattr(grid_module, "_Grid", real)
    for r in results:
        assert r.config in configs
        (lone,) = train_head_grid(
            method, feats, flip, labels, COUNTS, stage1(), [r.config], val=val
        )
        assert_same_head(r.head, lone.head, F64_RTOL)
        assert r.best_epoch == lone.best_epoch
        assert r.best_head is not None and lone.best_head is not None
        assert_same_head(r.best_head, lone.best_head, F64_RTOL)
        for s, t in zip(r.history, lone.history, strict=True):
            assert s.val_accuracy == t.val_accuracy
            assert s.val_nll == pytest.approx(t.val_nll, rel=1e-12)
    # the taus of one training share its last head but are scored apart
    first = results[:3]
    assert_same_head(first[0].head, first[2].head, 0.0)
    assert len({r.history[-1].val_nll for r in first}) == 3


# ----------------------------------------------------------------------------- halving


def test_halving_rungs_keep_half_at_halves_of_the_epochs() -> None:
    assert halving_rungs(27, 20) == [(2, 14), (5, 7), (10, 4)]  # none before a tenth
    assert halving_rungs(10, 2000) == [(250, 5), (500, 3), (1000, 2)]
    assert halving_rungs(100, 20) == [(2, 50), (5, 25), (10, 13)]
    assert halving_rungs(10, 5) == [(1, 5), (2, 3)]
    assert halving_rungs(1, 20) == [] and halving_rungs(9, 1) == []


def test_ranked_is_the_rule_of_every_choice() -> None:
    scores = [ValScore(0.5, 1.0), ValScore(0.7, 2.0), ValScore(0.7, 1.5), ValScore(0.7, 1.5),
              ValScore(None, None), ValScore(0.5, None)]  # fmt: skip
    assert ranked(scores) == [2, 3, 1, 0, 5, 4]
    assert best_on_validation(scores) == 2


@pytest.mark.parametrize(("name", "chunks"), [("lort", 1), ("logit-adjust", 1), ("maxnorm", 3)])
def test_halving_stops_the_ruled_out_and_trains_the_rest_as_the_full_grid(
    name: str, chunks: int
) -> None:
    """Each rung keeps the configurations best so far on validation over all chunks (the full
    grid's scores up to that epoch say which); a kept one trains on exactly as in the full grid,
    a stopped one keeps the epochs it trained; the head-epochs count what was trained."""
    method = get_method(name)
    feats, flip, labels = data()
    val = EvalSplit(*data(n=60, seed=1))
    key, values = HYPER[name]
    configs = [
        HeadConfig(StageConfig(6, lr, 0.0, 16), seed, {key: v})
        for seed in (3, 11)
        for lr in (0.01, 0.05, 0.2, 1.0)
        for v in values
    ]
    full = train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, val=val)
    per_head = head_bytes(method, D, K, 16, itemsize=8, evaluate=True)
    budget = math.ceil(len(configs) / chunks) * per_head if chunks > 1 else None
    halved = train_head_grid(
        method, feats, flip, labels, COUNTS, stage1(), configs, val=val,
        memory_budget=budget, halving=True,
    )  # fmt: skip
    alive = list(range(len(configs)))
    stopped_at = {}
    for epoch, keep in halving_rungs(len(configs), 6):
        best = [min(full[i].history[:epoch], key=lambda s: (-s.val_accuracy, s.val_nll))
                for i in alive]  # fmt: skip
        stays = sorted(alive[j] for j in ranked([ValScore(s.val_accuracy, s.val_nll)
                                                 for s in best])[:keep])  # fmt: skip
        stopped_at |= {i: epoch for i in alive if i not in stays}
        alive = stays
    assert 0 < len(alive) < len(configs) and stopped_at
    for i, (f, h) in enumerate(zip(full, halved, strict=True)):
        epochs = stopped_at.get(i, 6)
        assert h.config == f.config and h.trained_epochs == len(h.history) == epochs
        for a, b in zip(h.history, f.history, strict=False):
            assert (a.epoch, a.val_accuracy) == (b.epoch, b.val_accuracy)
            assert a.val_nll == pytest.approx(b.val_nll, rel=F64_RTOL)
        assert h.best_head is not None and h.best_epoch == best_by_rule(h)
        if epochs == 6:
            assert_same_head(h.head, f.head, F64_RTOL)
            assert f.best_head is not None and h.best_epoch == f.best_epoch
            assert_same_head(h.best_head, f.best_head, F64_RTOL)
    assert (
        head_epochs(full)
        == full_head_epochs(configs)
        == 6
        * len(configs)
        / (
            2 if name == "logit-adjust" else 1  # its two taus share one training
        )
    )
    assert head_epochs(halved) < head_epochs(full)


def test_halving_says_when_every_configurations_state_does_not_fit() -> None:
    method = get_method("ce")
    feats, flip, labels = data()
    configs = [HeadConfig(StageConfig(3, lr, 0.0, 16), 0) for lr in (0.01, 0.1, 1.0)]
    val = EvalSplit(*data(n=60, seed=1))
    with pytest.raises(InputError, match="--search full"):
        train_head_grid(
            method, feats, flip, labels, COUNTS, stage1(), configs, val=val,
            memory_budget=100, halving=True,
        )  # fmt: skip
    with pytest.raises(InputError, match="halving"):
        train_head_grid(method, feats, flip, labels, COUNTS, stage1(), configs, halving=True)
