"""Stage-2 re-training methods and stage-1 losses, checked against direct computations."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lort.errors import InputError, LabelError
from lort.methods import (
    METHODS,
    TABLE1,
    CosineHead,
    LinearHead,
    LWSHead,
    SoftmaxLoss,
    apply_constraint,
    class_balanced_sample_weights,
    class_balanced_weights,
    get_method,
    inference_logits,
    ldam_margins,
    make_head,
    make_loss,
    make_sampler_weights,
    maxnorm_radius,
    rho,
    soft_target,
)
from lort.stage1.losses import STAGE1_LOSSES, drw_epoch, make_stage1_loss

COUNTS = np.array([500, 200, 80, 30, 12, 5], dtype=np.int64)
K = COUNTS.size
D = 16


def batch(k: int = K, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    return logits, labels


def stage1_head(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(D, K)


# ---------------------------------------------------------------------------- registry


def test_registry_reads_like_table_1() -> None:
    assert list(METHODS) == [
        "lort",
        "ce",
        "cosine",
        "lws",
        "ldam",
        "balanced-softmax",
        "cb-resample",
        "focal",
        "cb-loss",
        "maxnorm",
        "tau-norm",
        "logit-adjust",
        "cb-loss-softmax",
    ]
    assert list(TABLE1) == list(METHODS)[:12]
    assert all(name == m.name for name, m in METHODS.items())
    ce = METHODS["ce"]
    assert (ce.target, ce.head, ce.loss, ce.reweight, ce.sampler) == (
        "onehot",
        "linear",
        "ce",
        None,
        "instance",
    )
    assert (ce.constraint, ce.inference) == (None, None)
    # Each other method changes vanilla CE in at least one part.
    parts = ("target", "head", "loss", "reweight", "sampler", "constraint", "inference")
    for m in METHODS.values():
        if m.name != "ce":
            assert any(getattr(m, p) != getattr(ce, p) for p in parts), m.name


def test_hyper_names_are_keywords_of_the_functions() -> None:
    keywords = set()
    for fn in (make_loss, maxnorm_radius, inference_logits):
        keywords |= set(inspect.signature(fn).parameters)
    for m in METHODS.values():
        assert set(m.hyper) <= keywords, m.name


def test_unknown_method_lists_the_valid_names() -> None:
    with pytest.raises(InputError) as err:
        get_method("mixup")
    for name in METHODS:
        assert name in str(err.value)
    assert get_method("lort") is METHODS["lort"]


@pytest.mark.parametrize("name", ["ce", "lort", "balanced-softmax", "ldam"])
@pytest.mark.parametrize("delta", ["number", "per row"])
def test_the_analytic_logit_gradient_is_autograds(name: str, delta: str) -> None:
    """SoftmaxLoss.logit_grad (the step of a linear head without autograd) is the gradient of
    the loss's value, with shift, margins and scale, a delta per row, and a sum over ``rows``."""
    k, n = 7, 40
    counts = np.array([50, 30, 25, 15, 12, 10, 8])
    logits, labels = batch(k, n=n, seed=5)
    smooth = 0.9 if name == "lort" else 0.0
    loss = make_loss(METHODS[name], counts, smooth=smooth)
    assert isinstance(loss, SoftmaxLoss) and loss.has_logit_grad
    if delta == "per row":
        rows = torch.linspace(0.0, 0.99, n, dtype=torch.float64).unsqueeze(1)
        loss = dataclasses.replace(loss, delta=rows)
    z = logits.clone().requires_grad_()
    loss(z, labels).backward()
    torch.testing.assert_close(loss.logit_grad(logits, labels), z.grad, rtol=1e-10, atol=1e-14)
    halved = loss.logit_grad(logits, labels, rows=2 * n)
    torch.testing.assert_close(halved, z.grad / 2, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["focal", "cb-loss", "maxnorm", "cb-loss-softmax"])
def test_losses_without_an_analytic_gradient_say_so(name: str) -> None:
    loss = make_loss(METHODS[name], np.array([50, 30, 25]))
    assert isinstance(loss, SoftmaxLoss) and not loss.has_logit_grad
    logits, labels = batch(3, n=4, seed=0)
    with pytest.raises(InputError, match="logit_grad covers"):
        loss.logit_grad(logits, labels)


# ---------------------------------------------------------------------------- LORT


@pytest.mark.parametrize("k", [2, 10, 100])
@pytest.mark.parametrize("delta", [0.0, 0.1, 0.5, 0.9, 0.98])
def test_lort_loss_is_torch_label_smoothing(k: int, delta: float) -> None:
    logits, labels = batch(k, n=50, seed=k)
    loss = make_loss(METHODS["lort"], np.full(k, 10), smooth=delta)(logits, labels)
    want = F.cross_entropy(logits, labels, label_smoothing=delta)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_per_row_delta_and_class_weights_are_the_soft_target_formula(weighted: bool) -> None:
    """The loss a grid of heads uses (a delta per row, or class weights, so not torch's fused
    kernel) is -sum q log softmax(z) with q = (1 - delta) onehot + delta / K, value and
    gradient."""
    k = 7
    logits, labels = batch(k, n=40, seed=3)
    delta = torch.linspace(0.0, 0.99, 40, dtype=logits.dtype).unsqueeze(1)
    weights = torch.rand(k, dtype=logits.dtype) + 0.5 if weighted else None
    z = logits.clone().requires_grad_()
    loss = SoftmaxLoss(k, delta=delta, class_weight=weights)(z, labels)
    z_ref = logits.clone().requires_grad_()
    q = F.one_hot(labels, k).to(logits) * (1 - delta) + delta / k
    rows = -(q * F.log_softmax(z_ref, 1)).sum(1)
    w = torch.ones(k, dtype=logits.dtype) if weights is None else weights
    want = (w[labels] * rows).sum() / w[labels].sum()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    loss.backward()
    want.backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-10, atol=1e-12)


def test_lort_loss_differs_from_ce() -> None:
    logits, labels = batch()
    lort = make_loss(METHODS["lort"], COUNTS, smooth=0.9)(logits, labels)
    ce = F.cross_entropy(logits, labels)
    assert abs(float(lort - ce)) > 0.1


@pytest.mark.parametrize(("k", "delta"), [(2, 0.3), (10, 0.98), (100, 0.5), (7, 1.0)])
def test_soft_target_rows(k: int, delta: float) -> None:
    labels = torch.arange(3 * k) % k
    q = soft_target(labels, k, delta)
    torch.testing.assert_close(q.sum(1), torch.ones(3 * k), rtol=0, atol=1e-6)
    onehot = F.one_hot(labels, k).bool()
    np.testing.assert_allclose(q[onehot].numpy(), 1 - delta + delta / k, rtol=1e-6)
    np.testing.assert_allclose(q[~onehot].numpy(), delta / k, rtol=1e-6)


def test_rho() -> None:
    assert rho(100, 0.98) == pytest.approx(1 + 100 * 0.02 / 0.98, rel=1e-12)
    assert round(rho(100, 0.98), 1) == 3.0
    assert rho(10, 0.98) == pytest.approx(1.2041, abs=1e-4)
    assert rho(5, 1.0) == 1.0
    assert rho(5, 0.0) == math.inf
    q = soft_target(torch.tensor([0]), 100, 0.98)[0].double()
    assert rho(100, 0.98) == pytest.approx(float(q[0] / q[1]), rel=1e-6)


def test_target_argument_errors() -> None:
    with pytest.raises(InputError):
        soft_target(torch.tensor([0]), 3, 1.5)
    with pytest.raises(LabelError):
        soft_target(torch.tensor([3]), 3, 0.5)
    with pytest.raises(InputError):
        make_loss(METHODS["lort"], COUNTS, smooth=1.0)
    with pytest.raises(InputError, match="lort"):
        make_loss(METHODS["ce"], COUNTS, smooth=0.5)


# ---------------------------------------------------------------------------- losses


def test_focal_gamma_zero_is_ce_and_gamma_two_is_the_formula() -> None:
    logits, labels = batch()
    focal = METHODS["focal"]
    loss0 = make_loss(focal, COUNTS, focal_gamma=0.0)(logits, labels)
    torch.testing.assert_close(loss0, F.cross_entropy(logits, labels), rtol=1e-12, atol=1e-12)
    loss2 = make_loss(focal, COUNTS, focal_gamma=2.0)(logits, labels)
    p_t = logits.softmax(1)[torch.arange(len(labels)), labels]
    want = (-((1 - p_t) ** 2) * p_t.log()).mean()
    torch.testing.assert_close(loss2, want, rtol=1e-10, atol=1e-12)
    assert float(loss2) < float(loss0)


def test_focal_gradient_is_finite_when_p_is_one() -> None:
    logits = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    loss = make_loss(METHODS["focal"], np.array([5, 5, 5]), focal_gamma=0.5)(
        logits, torch.tensor([0])
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_balanced_softmax_is_ce_on_shifted_logits() -> None:
    logits, labels = batch()
    loss = make_loss(METHODS["balanced-softmax"], COUNTS)(logits, labels)
    prior = torch.from_numpy(COUNTS / COUNTS.sum())
    want = F.cross_entropy(logits + prior.log(), labels)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


def test_ldam_margins_and_loss() -> None:
    margins = ldam_margins(COUNTS, 0.5).numpy()
    assert margins.argmax() == COUNTS.argmin()
    assert margins.max() == pytest.approx(0.5)
    np.testing.assert_allclose(margins * COUNTS**0.25, 0.5 * 5**0.25, rtol=1e-12)
    assert np.all(np.diff(margins) > 0)  # counts decrease along the labels

    logits, labels = batch()
    loss = make_loss(METHODS["ldam"], COUNTS, ldam_max_margin=0.5, ldam_scale=30.0)(logits, labels)
    shifted = logits - F.one_hot(labels, K) * torch.from_numpy(margins)[labels, None]
    torch.testing.assert_close(
        loss, F.cross_entropy(30.0 * shifted, labels), rtol=1e-12, atol=1e-12
    )


def test_class_balanced_weights_formula() -> None:
    w = class_balanced_weights(np.array([100, 10, 1]), beta=0.9).numpy()
    raw = np.array([0.1 / (1 - 0.9**100), 0.1 / (1 - 0.9**10), 1.0])
    np.testing.assert_allclose(w, 3 * raw / raw.sum(), rtol=1e-12)
    assert w.sum() == pytest.approx(3.0)
    # beta = 0.9999 (the default), long-tailed counts: rarer classes weigh more, sum K.
    w = class_balanced_weights(COUNTS).numpy()
    assert w.sum() == pytest.approx(K)
    assert np.all(np.diff(w) > 0)
    eff = (1 - 0.9999**COUNTS) / (1 - 0.9999)
    np.testing.assert_allclose(w, K * (1 / eff) / (1 / eff).sum(), rtol=1e-12)


def test_cb_loss_softmax_is_the_authors_mean_of_weighted_ce() -> None:
    """CB's softmax form: TF's SUM_BY_NONZERO_WEIGHTS, i.e. sum_i w_yi l_i / B (not / sum w)."""
    logits, labels = batch()
    loss = make_loss(METHODS["cb-loss-softmax"], COUNTS, cb_beta=0.999)(logits, labels)
    w = class_balanced_weights(COUNTS, 0.999)
    per_row = F.cross_entropy(logits, labels, reduction="none")
    want = (w[labels] * per_row).sum() / len(labels)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    weighted_mean = F.cross_entropy(logits, labels, weight=w)
    assert not torch.allclose(loss, weighted_mean)


def test_cb_loss_is_the_sigmoid_bce_form() -> None:
    """CB's sigmoid form: sum_i w_yi sum_k BCE(z_ik, onehot_ik) / B."""
    logits, labels = batch()
    loss = make_loss(METHODS["cb-loss"], COUNTS, cb_beta=0.99)(logits, labels)
    w = class_balanced_weights(COUNTS, 0.99)
    onehot = F.one_hot(labels, K).to(logits)
    per_row = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1)
    torch.testing.assert_close(loss, (w[labels] * per_row).mean(), rtol=1e-12, atol=1e-12)


def test_maxnorm_trains_with_ltwbs_class_balanced_bce_on_softmax() -> None:
    """LTWB's CB 'softmax' loss: F.binary_cross_entropy(softmax(z), onehot, weight=w_y),
    mean over the B x K entries."""
    logits, labels = batch()
    loss = make_loss(METHODS["maxnorm"], COUNTS, cb_beta=0.9999)(logits, labels)
    w = class_balanced_weights(COUNTS, 0.9999)
    onehot = F.one_hot(labels, K).to(logits)
    want = F.binary_cross_entropy(
        logits.softmax(1), onehot, weight=w[labels].unsqueeze(1).expand(-1, K)
    )
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)


def test_loss_shape_mismatch_and_empty_class_are_input_errors() -> None:
    logits, labels = batch(k=K + 1)
    with pytest.raises(InputError, match=r"\(batch, 6\)"):
        make_loss(METHODS["ce"], COUNTS)(logits, labels)
    counts = COUNTS.copy()
    counts[2] = 0
    with pytest.raises(InputError, match=r"\[2\]"):
        make_loss(METHODS["balanced-softmax"], counts)
    with pytest.raises(InputError):
        make_loss(METHODS["ce"], np.array([[1, 2]]))


# ---------------------------------------------------------------------------- sampler


def test_class_balanced_sampler_weights_equalise_classes() -> None:
    labels = np.repeat(np.arange(K), COUNTS)
    np.random.default_rng(0).shuffle(labels)
    weights = make_sampler_weights(METHODS["cb-resample"], labels)
    assert weights is not None and weights.shape == labels.shape
    expected = np.bincount(labels, weights=weights) / weights.sum()
    np.testing.assert_allclose(expected, np.full(K, 1 / K), rtol=1e-12)
    np.testing.assert_allclose(weights, 1 / COUNTS[labels], rtol=0)
    assert make_sampler_weights(METHODS["ce"], labels) is None
    with pytest.raises(LabelError):
        class_balanced_sample_weights(np.array([0.5, 1.0]))


# ---------------------------------------------------------------------------- heads


def test_cosine_head_is_bounded_by_its_scale() -> None:
    head = make_head(METHODS["cosine"], D, K, init=None)
    assert isinstance(head, CosineHead)
    assert head.scale.requires_grad and float(head.scale.detach()) == 16.0
    out = head(100 * torch.randn(256, D))
    assert out.abs().max() <= 16.0 + 1e-4
    assert out.abs().max() > 8.0
    with torch.no_grad():
        head.scale.fill_(3.0)
    assert head(torch.randn(64, D)).abs().max() <= 3.0 + 1e-5


def test_ldam_head_outputs_cosines_with_a_fixed_scale() -> None:
    init = stage1_head()
    head = make_head(METHODS["ldam"], D, K, init=init)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["weight"]
    f = torch.randn(32, D)
    want = F.normalize(f, dim=1) @ F.normalize(init.weight, dim=1).T
    torch.testing.assert_close(head(f), want.detach())


def test_lws_trains_k_scales_only() -> None:
    init = stage1_head()
    head = make_head(METHODS["lws"], D, K, init=init)
    assert isinstance(head, LWSHead)
    trainable = [p for p in head.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == K
    torch.testing.assert_close(head.scales.detach(), torch.ones(K))
    f = torch.randn(32, D)
    torch.testing.assert_close(head(f), init(f).detach())  # scale 1 = the stage-1 head
    with torch.no_grad():
        head.scales.copy_(torch.arange(1.0, K + 1))
    # The scale multiplies the whole stage-1 logit, bias included (Kang et al.'s LWS).
    torch.testing.assert_close(head(f), (init(f) * torch.arange(1.0, K + 1)).detach())
    with torch.no_grad():
        head.scales.fill_(1.0)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    F.cross_entropy(head(f), torch.randint(0, K, (32,))).backward()
    opt.step()
    assert not torch.equal(head.scales.detach(), torch.ones(K))
    torch.testing.assert_close(head.weight, init.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(head.bias, init.bias.detach(), rtol=0, atol=0)
    with pytest.raises(InputError, match="init"):
        make_head(METHODS["lws"], D, K, init=None)


def test_linear_head_copies_its_init() -> None:
    init = stage1_head()
    head = make_head(METHODS["ce"], D, K, init=init)
    assert isinstance(head, LinearHead)
    torch.testing.assert_close(head.weight.detach(), init.weight.detach(), rtol=0, atol=0)
    with torch.no_grad():
        head.weight.zero_()
    assert init.weight.abs().sum() > 0  # a copy, not the same tensor
    with pytest.raises(InputError):
        make_head(METHODS["ce"], D + 1, K, init=init)


# ---------------------------------------------------------------------------- MaxNorm


def test_maxnorm_radius_is_relative_to_the_stage1_norms() -> None:
    """LTWB's setPerLayerThresh: min + thresh (max - min) of the starting class norms."""
    w = torch.zeros(3, 4, dtype=torch.float64)
    w[0, 0], w[1, 1], w[2, 2] = 1.0, 2.0, 5.0
    assert maxnorm_radius(w, 0.1) == pytest.approx(1.4)
    assert maxnorm_radius(w, 0.0) == pytest.approx(1.0)
    assert maxnorm_radius(w, 1.0) == pytest.approx(5.0)
    with pytest.raises(InputError, match="threshold"):
        maxnorm_radius(w, -0.1)


def test_maxnorm_projects_long_vectors_only() -> None:
    head = make_head(METHODS["maxnorm"], D, K, init=None)
    with torch.no_grad():
        head.weight.copy_(torch.randn(K, D))
        head.weight[:3] *= 0.05 / head.weight[:3].norm(dim=1, keepdim=True)  # inside the ball
    before = head.weight.detach().clone()
    apply_constraint(METHODS["maxnorm"], head, 0.1)
    after = head.weight.detach()
    norms = after.norm(dim=1)
    assert torch.all(norms <= 0.1 + 1e-6)
    torch.testing.assert_close(after[:3], before[:3], rtol=0, atol=0)
    torch.testing.assert_close(norms[3:], torch.full((K - 3,), 0.1))
    cos = F.cosine_similarity(after[3:], before[3:], dim=1)
    torch.testing.assert_close(cos, torch.ones(K - 3))
    # Other methods leave the weights alone.
    head.weight.data.mul_(10)
    apply_constraint(METHODS["ce"], head, 0.1)
    assert head.weight.norm(dim=1).max() > 0.5


# ---------------------------------------------------------------------------- inference


def test_tau_norm_formula_and_tau_zero() -> None:
    head = make_head(METHODS["tau-norm"], D, K, init=stage1_head())
    f = torch.randn(20, D)
    w, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    assert np.abs(b).max() > 0
    for tau in (0.5, 1.0, 2.0):
        got = inference_logits(METHODS["tau-norm"], head, f, COUNTS, tau=tau)
        ws = w / np.linalg.norm(w, axis=1, keepdims=True) ** tau
        # Decoupling's tau_norm.py drops the bias.
        np.testing.assert_allclose(got.numpy(), f.numpy() @ ws.T, rtol=1e-5, atol=1e-6)
    plain = inference_logits(METHODS["tau-norm"], head, f, COUNTS, tau=0.0)
    torch.testing.assert_close(plain, head(f).detach() - head.bias.detach())
    assert not torch.allclose(plain, inference_logits(METHODS["tau-norm"], head, f, COUNTS))


def test_logit_adjust_formula() -> None:
    head = make_head(METHODS["logit-adjust"], D, K, init=stage1_head())
    f = torch.randn(20, D)
    z = head(f).detach().numpy()
    prior = COUNTS / COUNTS.sum()
    for tau in (0.0, 1.0, 1.5):
        got = inference_logits(METHODS["logit-adjust"], head, f, COUNTS, tau=tau)
        np.testing.assert_allclose(got.numpy(), z - tau * np.log(prior), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError):
        inference_logits(METHODS["logit-adjust"], head, f, COUNTS[:-1])


def test_tau_norm_needs_a_linear_head() -> None:
    head = make_head(METHODS["cosine"], D, K)
    with pytest.raises(InputError):
        inference_logits(METHODS["tau-norm"], head, torch.randn(2, D), COUNTS)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_takes_a_step(name: str) -> None:
    method = get_method(name)
    torch.manual_seed(1)
    labels_np = np.repeat(np.arange(K), COUNTS)
    features = torch.randn(labels_np.size, D) + 2 * torch.eye(K, D)[labels_np]
    labels = torch.from_numpy(labels_np)
    head = make_head(method, D, K, init=stage1_head())
    loss_fn = make_loss(method, COUNTS, smooth=0.5 if method.target == "smooth" else 0.0)
    weights = make_sampler_weights(method, labels_np)
    idx = torch.arange(labels_np.size)
    if weights is not None:
        idx = torch.multinomial(torch.from_numpy(weights), 128, replacement=True)
    params = [p for p in head.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    loss = loss_fn(head(features[idx]), labels[idx])
    assert loss.ndim == 0 and torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    apply_constraint(method, head, 0.1)
    assert any(not torch.equal(p, q) for p, q in zip(params, before, strict=True))
    logits = inference_logits(method, head, features[:10], COUNTS)
    assert logits.shape == (10, K) and not logits.requires_grad
    assert torch.isfinite(logits).all()
    if method.constraint == "maxnorm":
        assert head.weight.norm(dim=1).max() <= 0.1 + 1e-6


# ---------------------------------------------------------------------------- stage 1


def test_stage1_losses() -> None:
    assert STAGE1_LOSSES == ("ce", "ce-drw", "ldam-drw", "bs")
    assert drw_epoch(200) == 160
    logits, labels = batch()
    ce = F.cross_entropy(logits, labels)
    for epoch in (0, 159):
        got = make_stage1_loss("ce-drw", COUNTS, epoch, 200)(logits, labels)
        torch.testing.assert_close(got, ce, rtol=1e-12, atol=1e-12)
    w = class_balanced_weights(COUNTS, 0.9999)
    for epoch in (160, 199):
        got = make_stage1_loss("ce-drw", COUNTS, epoch, 200)(logits, labels)
        torch.testing.assert_close(got, F.cross_entropy(logits, labels, weight=w))
    got = make_stage1_loss("ce", COUNTS, 199, 200)(logits, labels)
    torch.testing.assert_close(got, ce, rtol=1e-12, atol=1e-12)
    got = make_stage1_loss("bs", COUNTS, 0, 200)(logits, labels)
    prior = torch.from_numpy(COUNTS / COUNTS.sum())
    torch.testing.assert_close(got, F.cross_entropy(logits + prior.log(), labels))
    m = ldam_margins(COUNTS, 0.5)
    shifted = 30 * (logits - F.one_hot(labels, K) * m[labels, None])
    got = make_stage1_loss("ldam-drw", COUNTS, 180, 200, ldam_scale=30.0)(logits, labels)
    torch.testing.assert_close(got, F.cross_entropy(shifted, labels, weight=w))
    with pytest.raises(InputError, match="ce-drw"):
        make_stage1_loss("mixup", COUNTS, 0, 200)
    with pytest.raises(InputError):
        make_stage1_loss("ce", COUNTS, 200, 200)


def test_maxnorm_projects_once_per_epoch_as_ltwbs_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """LTWB's utils/trainval.py projects after each epoch's train phase, not every step."""
    import lort.stage2.loop
    from lort.optim import StageConfig

    calls: list[float] = []
    real = lort.stage2.loop.apply_constraint

    def counting(method: object, head: nn.Module, radius: float) -> None:
        calls.append(radius)
        real(method, head, radius)  # type: ignore[arg-type]

    monkeypatch.setattr(lort.stage2.loop, "apply_constraint", counting)
    labels = torch.from_numpy(np.repeat(np.arange(K), COUNTS))
    feats = torch.randn(len(labels), D)
    init = stage1_head()
    head = lort.stage2.loop.train_head_cached(
        METHODS["maxnorm"], feats, None, labels, COUNTS, init, StageConfig(3, 0.5, 0.0, 8),
        smooth=0.0, seed=0,
    )  # fmt: skip
    assert len(calls) == 3  # epochs, while each epoch has many steps
    assert calls[0] == pytest.approx(maxnorm_radius(init.weight, 0.1))
    assert head.weight.norm(dim=1).max() <= calls[0] * (1 + 1e-6)
