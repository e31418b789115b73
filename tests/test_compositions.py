"""Methods compose: `--method lort+logit-adjust` takes each part of the paper's formula from the
method that changes it; a combination that makes no sense is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_helpers import ok, run_cli
from lort.errors import InputError
from lort.methods import (
    fold_inference,
    get_method,
    inference_logits,
    inference_weight_norms,
    log_prior,
    make_head,
    tau_normalised_weight,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parts_come_from_the_method_that_changes_them() -> None:
    m = get_method("lort+logit-adjust")
    assert (m.target, m.inference, m.head, m.loss) == ("smooth", "logit-adjust", "linear", "ce")
    assert m.hyper == ("smooth", "tau") and m.name == "lort+logit-adjust"
    assert get_method("lort+cb-resample").sampler == "class-balanced"
    lws_tau = get_method("lws+tau-norm")
    assert (lws_tau.head, lws_tau.inference) == ("lws", "tau-norm")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tau-norm+logit-adjust", "both set the inference"),
        ("cosine+ldam", "both set the head"),
        ("cosine+tau-norm", "unit vectors"),
        ("balanced-softmax+logit-adjust", "a second time"),
        ("lort+lort", "two or more different"),
        ("lort+", "two or more different"),
        ("lort+nope", "'nope'"),
    ],
)
def test_combinations_that_make_no_sense_are_errors(name: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        get_method(name)


def test_lws_with_tau_norm_normalises_the_effective_weights() -> None:
    torch.manual_seed(0)
    init = torch.nn.Linear(6, 4)
    method = get_method("lws+tau-norm")
    head = make_head(method, 6, 4, init)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0]))
    x = torch.randn(5, 6)
    counts = np.array([40, 20, 10, 5])
    w = head.scales[:, None] * init.weight
    want = F.linear(x, tau_normalised_weight(w, 0.5))  # tau-norm drops the bias
    got = inference_logits(method, head, x, counts, tau=0.5)
    torch.testing.assert_close(got, want)
    folded = fold_inference(method, head, counts, tau=0.5)
    torch.testing.assert_close(folded(x), want)
    norms = inference_weight_norms(method, head, 1.0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)


def test_lort_with_logit_adjustment_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # tau and the epoch fixed, so the two fits train the same head
    flags = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5", "--tau", "1",
             "--stage2-stop", "last")  # fmt: skip
    ok("fit", "--out", run, *flags, "--method", "lort+logit-adjust")
    report = json.loads((run / "report.json").read_text())
    assert report["method"]["name"] == "lort+logit-adjust"
    method = report["method"]
    assert method["target"] == "smooth" and method["inference"] == "logit-adjust"
    # the same head without the inference rule: its logits, shifted by -log prior
    plain = tmp_path / "plain"
    ok("fit", "--out", plain, *flags, "--method", "lort")
    counts = np.load(run / "train_counts.npy")
    shifted = np.load(plain / "logits.npy") - log_prior(counts).numpy()
    np.testing.assert_allclose(np.load(run / "logits.npy"), shifted, rtol=1e-5, atol=1e-5)
    ok("compare", run, "--methods", "lort,lort+logit-adjust,lws+tau-norm")
    table = run / "compare-lort_lort+logit-adjust_lws+tau-norm.json"  # these methods' own
    rows = json.loads(table.read_text())["rows"]
    assert [r["method"] for r in rows] == ["lort", "lort+logit-adjust", "lws+tau-norm"]
    assert rows[1]["title"] == "LORT (logits retargeting) + Post-hoc logit adjustment"
    result = run_cli("compare", run, "--methods", "ce,tau-norm+logit-adjust")
    assert result.exit_code == 1 and "both set the inference" in result.stderr
