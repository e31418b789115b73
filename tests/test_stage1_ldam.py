"""Stage-1 LDAM-DRW as its authors ran it: the normalised last layer (cosine logits, no bias)
with LDAM at s = 30, and the stage-1 classifier stage 2 starts from (``stage1_init``), for new
runs and for run folders written when ldam-drw trained a linear head."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lort.run.fit
import lort.stage1.loop
from cli_helpers import ok
from lort.methods import SoftmaxLoss, class_balanced_weights
from lort.models import NormedLinear, build_model
from lort.run.finished import open_run
from lort.run.trained import open_trained
from lort.stage1.losses import LDAM_SCALE, make_stage1_loss, stage1_head, stage1_init

COUNTS = np.array([500, 200, 80, 30, 12, 5], dtype=np.int64)
K = COUNTS.size
SMALL = ("--stage1-loss", "ldam-drw", "--epochs1", "2", "--epochs2", "2", "--stage2-stop", "last")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ldam_drw_trains_the_normed_head_at_s_30() -> None:
    assert stage1_head("ldam-drw") == "normed"
    assert {stage1_head(loss) for loss in ("ce", "ce-drw", "bs")} == {"linear"}
    torch.manual_seed(0)
    model = build_model("small-cnn", K, 1, head=stage1_head("ldam-drw"))
    assert isinstance(model.head, NormedLinear)
    assert set(model.head.state_dict()) == {"weight"}  # no bias
    # LDAM-DRW's initialisation: unit class vectors
    torch.testing.assert_close(model.head.weight.norm(dim=1), torch.ones(K))

    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % K
    logits = model(x)
    f, w = model.backbone(x), model.head.weight
    cos = (f @ w.T) / (f.norm(dim=1, keepdim=True) * w.norm(dim=1))
    torch.testing.assert_close(logits, cos)

    m = 0.5 * COUNTS**-0.25 / (COUNTS**-0.25).max()
    u = LDAM_SCALE * (cos - torch.from_numpy(m).float()[y, None] * F.one_hot(y, K))
    assert LDAM_SCALE == 30.0
    before = make_stage1_loss("ldam-drw", COUNTS, 159, 200)(logits, y)
    torch.testing.assert_close(before, F.cross_entropy(u, y))
    weight = class_balanced_weights(COUNTS, 0.9999).float()
    after = make_stage1_loss("ldam-drw", COUNTS, 160, 200)(logits, y)
    torch.testing.assert_close(after, F.cross_entropy(u, y, weight=weight))


def test_stage1_init_reads_either_head() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    init = stage1_init({"head.weight": linear.weight, "head.bias": linear.bias})
    assert torch.equal(init.weight, linear.weight) and torch.equal(init.bias, linear.bias)

    normed = NormedLinear(5, 3)
    with torch.no_grad():
        normed.weight.mul_(torch.tensor([[0.5], [2.0], [7.0]]))  # norms carry no meaning
    init = stage1_init({"head.weight": normed.weight})
    assert torch.equal(init.bias, torch.zeros(3))
    f = torch.randn(4, 5)
    unit = F.normalize(f, dim=1)
    # exactly stage 1's s * cos on unit features; times ||f|| on the features as they are
    torch.testing.assert_close(init(unit), LDAM_SCALE * normed(f))
    torch.testing.assert_close(init(f), LDAM_SCALE * normed(f) * f.norm(dim=1, keepdim=True))


def test_ldam_drw_run_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, *SMALL, "--method", "lws")
    state = torch.load(run / "stage1.ckpt", weights_only=False)["state"]["model"]
    assert "head.weight" in state and "head.bias" not in state

    ok("compare", run, "--protocol", "shared", "--methods", "ce,lws")
    report = json.loads((run / "report.json").read_text())
    rows = json.loads((run / "compare-shared-ce_lws.json").read_text())["rows"]
    lws = next(r for r in rows if r["method"] == "lws")
    # compare starts from the checkpoint's head as fit started from the trained model's
    assert lws["all"]["mean"] == report["results"]["overall"]["accuracy"]

    opened = open_run(run)
    torch.testing.assert_close(
        opened.problem.init.weight, LDAM_SCALE * F.normalize(state["head.weight"], dim=1)
    )
    trained = open_trained(run)
    assert trained.backbone is not None
    feats = torch.from_numpy(np.load(run / "features" / "test.npy"))
    np.testing.assert_allclose(
        trained.logits(feats, None).numpy(), np.load(run / "logits.npy"), rtol=1e-5
    )


def test_a_run_from_before_the_normed_head_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ldam-drw run as lort wrote it with the linear head (LDAM at s = 1) and the cosine
    schedule (its config has no stage1_schedule)."""
    old = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(lort.run.fit, "stage1_head", lambda loss: "linear")
        old_loss = functools.partial(lort.stage1.loop.make_stage1_loss, ldam_scale=1.0)
        m.setattr(lort.stage1.loop, "make_stage1_loss", old_loss)
        ok("fit", "--out", old, *SMALL, "--stage1-schedule", "cosine")
    state = torch.load(old / "stage1.ckpt", weights_only=False)["state"]["model"]
    assert "head.bias" in state
    assert "stage1_schedule" not in (old / "config.yaml").read_text()

    run = open_run(old)
    assert torch.equal(run.problem.init.weight, state["head.weight"])
    assert torch.equal(run.problem.init.bias, state["head.bias"])
    digest = hashlib.sha256()
    for t in (state["head.weight"], state["head.bias"]):
        digest.update(t.numpy().tobytes())
    assert run.identity["stage1_head_sha256"] == digest.hexdigest()  # compare's points stay
    ok("compare", old, "--protocol", "shared", "--methods", "ce,lws")
    assert open_trained(old).backbone is not None  # predict and export

    again = tmp_path / "again"
    shutil.copytree(old, again)
    ok("fit", "--resume", "--out", again, "--method", "lws")  # stage 2 on the old stage 1


def test_maxnorm_loss_keeps_a_finite_gradient_where_p_rounds_to_1() -> None:
    """MaxNorm's softmax-BCE on the saturated logits a normalised stage-1 head starts from:
    log(1 - p) is held at its floor where p rounds to 1, with no gradient (it was NaN)."""
    loss_fn = SoftmaxLoss(3, form="softmax-bce")
    logits = torch.tensor([[200.0, 0.0, -3.0], [1.0, 2.0, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = loss_fn(logits, labels)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    p = torch.softmax(logits.detach(), dim=1)
    q = F.one_hot(labels, 3).float()
    log_not_p = torch.log1p(-p).clamp_min(-100.0)
    want = -(q * p.log().clamp_min(-100.0) + (1 - q) * log_not_p).mean(dim=1).mean()
    torch.testing.assert_close(loss.detach(), want)
