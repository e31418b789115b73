"""`lort compare --protocol paper` and `paper-test-selected`: the paper's Table 1 row by row
(each formula alone, one 20-epoch fine-tune of the stage-1 head, lr and weight decay searched,
chosen on validation), and the paper's own reporting (chosen on test, best of the seeds),
labelled."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.experiments.compare import _no_test_curve_note, _paper_columns
from lort.experiments.protocols import CURVE_TOLERANCE, plan, run_plan
from lort.methods import TABLE1, get_method, ldam_margins, make_head, make_loss
from lort.methods.paper import (
    PAPER_EPOCHS,
    PAPER_LR_FACTORS,
    PAPER_WEIGHT_DECAYS,
    ROWS,
    paper_row,
)
from lort.methods.sampling import make_sampler_weights
from lort.run.finished import open_run

pytestmark = pytest.mark.usefixtures("one_thread")

COUNTS = np.array([40, 20, 10, 5], dtype=np.int64)

# Table 1 of arXiv 2403.00250v1 (All, Many, Medium, Few), CIFAR100-LT IR 100; LORT's All from
# Table 2.
TABLE1_NUMBERS = {
    "ce": (48.44, 78.74, 47.37, 14.33),
    "cosine": (51.66, 77.77, 49.60, 23.60),
    "lws": (48.99, 78.51, 47.51, 16.26),
    "ldam": (52.94, 72.37, 54.31, 28.67),
    "balanced-softmax": (52.23, 77.63, 50.74, 24.33),
    "cb-resample": (48.44, 78.74, 47.37, 14.33),
    "focal": (50.94, 78.00, 49.97, 20.50),
    "cb-loss": (54.30, 71.71, 51.25, 37.53),
    "maxnorm": (51.64, 77.60, 49.37, 23.99),
    "tau-norm": (53.01, 74.74, 47.31, 34.30),
    "logit-adjust": (52.45, 75.57, 47.71, 31.00),
    "lort": (54.9, None, None, None),
}


# ------------------------------------------------------------------- the rows' formulas


def test_every_row_of_table_1_and_its_numbers() -> None:
    assert tuple(ROWS) == TABLE1
    for name, row in ROWS.items():
        assert row.reported == TABLE1_NUMBERS[name], name
        assert row.method.name == name and row.formula and row.source
        recipe = row.recipe("cifar100-lt")
        assert recipe.init == "stage1", name  # one shared fine-tune of the stage-1 head
        assert recipe.epochs == (PAPER_EPOCHS if row.retrains else 0), name
        assert recipe.lr is None and recipe.weight_decay is None and not recipe.search
    # Vanilla FC, tau-norm and post-hoc LA are the stage-1 classifier, tau held at 1.
    assert [n for n, r in ROWS.items() if not r.retrains] == ["ce", "tau-norm", "logit-adjust"]
    assert ROWS["tau-norm"].hyper == {"tau": 1.0} == ROWS["logit-adjust"].hyper


def test_delta_is_the_papers_constant() -> None:
    assert paper_row("lort").recipe("cifar100-lt").hyper == {"smooth": 0.98}
    assert paper_row("lort").recipe("imagenet-lt").hyper == {"smooth": 0.99}
    assert paper_row("lort").recipe("inat2018").hyper == {"smooth": 0.99}
    assert paper_row("lort").recipe("digits-lt").hyper == {"smooth": 0.98}


def test_lws_samples_instances_and_resampling_balances_classes() -> None:
    labels = np.repeat(np.arange(4), COUNTS)
    lws = paper_row("lws").method
    assert lws.head == "lws" and make_sampler_weights(lws, labels) is None
    assert get_method("lws").sampler == "class-balanced"  # the authors' recipe differs
    w = make_sampler_weights(paper_row("cb-resample").method, labels)
    assert w is not None
    per_class = np.bincount(labels, weights=w)
    np.testing.assert_allclose(per_class, per_class[0])  # r_s(i) proportional to 1 / n_i


def logits_labels() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 4, generator=g, dtype=torch.float64) * 3, torch.arange(32) % 4


def test_ldam_is_the_margin_on_the_linear_head_without_a_scale() -> None:
    row = paper_row("ldam")
    assert row.method.head == "linear" and row.hyper["ldam_scale"] == 1.0
    z, y = logits_labels()
    loss = make_loss(row.method, COUNTS, **row.hyper)(z, y)
    # g_i = W_i f(x) - 1{i=y} C / n_i^(1/4), cross-entropy
    m = ldam_margins(COUNTS, row.hyper["ldam_max_margin"])
    np.testing.assert_allclose(m / m.max(), (COUNTS**-0.25) / (COUNTS**-0.25).max())
    want = F.cross_entropy(z - F.one_hot(y, 4) * m[y].unsqueeze(1), y)
    torch.testing.assert_close(loss, want)


def test_maxnorm_is_the_constraint_with_plain_cross_entropy() -> None:
    row = paper_row("maxnorm")
    assert row.method.constraint == "maxnorm" and row.hyper == {"threshold": 0.1}
    z, y = logits_labels()
    torch.testing.assert_close(make_loss(row.method, COUNTS)(z, y), F.cross_entropy(z, y))
    assert get_method("maxnorm").loss == "softmax-bce"  # LTWB's recipe adds its CB loss


def test_the_loss_rows_are_their_formulas() -> None:
    z, y = logits_labels()
    prior = torch.from_numpy(COUNTS / COUNTS.sum())
    bs = make_loss(paper_row("balanced-softmax").method, COUNTS)(z, y)
    torch.testing.assert_close(bs, F.cross_entropy(z + prior.log(), y))
    focal = paper_row("focal")
    p_y = F.softmax(z, 1)[torch.arange(32), y]
    want = (-((1 - p_y) ** focal.hyper["focal_gamma"]) * p_y.log()).mean()
    torch.testing.assert_close(make_loss(focal.method, COUNTS, **focal.hyper)(z, y), want)
    cb = paper_row("cb-loss")
    beta = cb.hyper["cb_beta"]
    w = (1 - beta) / (1 - beta ** torch.from_numpy(COUNTS).double())
    w = w * 4 / w.sum()
    bce = F.binary_cross_entropy_with_logits(z, F.one_hot(y, 4).double(), reduction="none")
    torch.testing.assert_close(
        make_loss(cb.method, COUNTS, **cb.hyper)(z, y), (w[y] * bce.sum(1)).mean()
    )


def test_only_table_1_rows_run_under_the_paper_protocol() -> None:
    for name in ("cb-loss-softmax", "lort+logit-adjust"):
        with pytest.raises(Exception, match="not a row of the paper's Table 1"):
            paper_row(name)


def test_the_papers_numbers_only_beside_its_setting() -> None:
    def run(dataset: str, ratio: float | None) -> Any:
        data = SimpleNamespace(manifest={"imbalance_ratio": ratio})
        return SimpleNamespace(
            cfg=SimpleNamespace(dataset=dataset), problem=SimpleNamespace(data=data)
        )

    cols = _paper_columns("cb-loss", run("cifar100-lt", 100.0))
    assert cols["paper"] == pytest.approx(
        {"all": 0.543, "many": 0.7171, "medium": 0.5125, "few": 0.3753}
    )
    assert _paper_columns("lort", run("cifar100-lt", 100.0))["paper"]["many"] is None
    assert _paper_columns("cb-loss", run("cifar100-lt", 50.0))["paper"] is None
    assert _paper_columns("cb-loss", run("cifar10-lt", 100.0))["paper"] is None


# ------------------------------------------------------------------------ on a real run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paper") / "run"
    ok("fit", "--out", out, "--epochs1", "4", "--epochs2", "6")
    return out


@pytest.fixture(scope="module")
def paper(run: Path) -> Any:
    return ok("compare", run, "--protocol", "paper", "--seeds", "2")


def points(run: Path, method: str, protocol: str) -> list[dict[str, Any]]:
    return [
        json.loads((run / "compare" / f"{method}-seed{s}-protocol-{protocol}.json").read_text())[
            "result"
        ]
        for s in (0, 1)
    ]


def test_one_shared_fine_tune_searched_over_lr_and_weight_decay(run: Path, paper: Any) -> None:
    cfg = json.loads((run / "report.json").read_text())["config"]["stage2"]
    grid = {(cfg["lr"] * f, wd) for f in PAPER_LR_FACTORS for wd in PAPER_WEIGHT_DECAYS}
    for name, row in ROWS.items():
        for p in points(run, name, "paper"):
            assert p["chosen"]["init"] == "stage1" and p["chosen"]["chosen_on"] == "val"
            tried = p["candidates"]
            if not row.retrains:
                assert len(tried) == 1 and p["stage2"] is None and p["epoch"] == 0
                continue
            assert {(c["lr"], c["weight_decay"]) for c in tried} == grid, name
            assert p["stage2"]["epochs"] == PAPER_EPOCHS == 20
            assert p["stage2"]["batch_size"] == cfg["batch_size"]
            assert all(c["hyper"] == dict(row.recipe("digits-lt").hyper) for c in tried)
            # the (grid point, epoch) kept is the best on validation
            best = max(c["val_balanced_accuracy"] for c in tried)
            assert p["val_balanced_accuracy"] == pytest.approx(best, abs=1e-12), name


def test_vanilla_fc_is_the_stage1_classifier(run: Path, paper: Any) -> None:
    finished = open_run(run)
    problem = finished.problem
    ce = get_method("ce")
    head = make_head(ce, problem.init.in_features, problem.k, problem.init)
    acc = problem.evaluate(problem.logits(ce, head, "test")).accuracy
    assert all(p["test"]["all"] == acc for p in points(run, "ce", "paper"))


def test_the_table_says_what_it_is(run: Path, paper: Any) -> None:
    out = flat(paper.stdout)
    assert "the paper's protocol" in out and "TEST-SELECTED" not in out
    assert "g = W f(x) - 1{i=y} C / n_i^(1/4)" in out  # each row's formula
    assert "no paper numbers are shown" in out  # digits is not the paper's dataset
    assert "temperature fitted on validation" in out
    assert "NLL, ECE and class-wise ECE before -> after" in out
    data = json.loads((run / "compare-paper.json").read_text())
    assert data["protocol"] == "paper" and "Appendix B" in data["definitions"]["protocol"]
    assert all(r["paper"] is None and r["formula"] for r in data["rows"])


def test_paper_test_selected_reports_the_best_seed_chosen_on_test(run: Path, paper: Any) -> None:
    result = ok("compare", run, "--protocol", "paper-test-selected", "--seeds", "2")
    out = flat(result.stdout)
    assert "TEST-SELECTED" in out and "not which method is better" in out
    assert "All..Few, delta, epoch and settings: the best seed's" in out
    data = json.loads((run / "compare-paper-test-selected.json").read_text())
    assert "not a fair comparison" in data["definitions"]["protocol"]
    for row in data["rows"]:
        name = row["method"]
        chosen = points(run, name, "paper-test-selected")
        assert all(p["chosen"]["chosen_on"] == "test" for p in chosen)
        best = max(chosen, key=lambda p: p["test"]["all"])
        assert row["best_trial"]["seed"] == best["seed"]
        assert row["best_trial"]["all"] == best["test"]["all"]
        # the same search chosen on test is never below the fair choice there, seed by seed
        for got, want in zip(chosen, points(run, name, "paper"), strict=True):
            assert got["test"]["balanced_accuracy"] >= want["test"]["balanced_accuracy"] - 1e-12


def test_what_the_paper_protocol_refuses(run: Path, paper: Any) -> None:
    before = sorted(p.name for p in run.iterdir())
    result = run_cli("compare", run, "--protocol", "paper", "--methods", "lort+logit-adjust")
    one_line_error(result, "not a row of the paper's Table 1")
    for protocol in ("paper", "paper-test-selected"):
        one_line_error(run_cli("keep", run, "--protocol", protocol), "a classifier is kept from")
        assert run_cli("compare", run, "--protocol", protocol, "--keep").exit_code != 0
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_second_paper_compare_reuses_its_points(run: Path, paper: Any) -> None:
    result = ok("compare", run, "--protocol", "paper", "--seeds", "2")
    assert f"0 re-trained, {2 * len(TABLE1)} reused" in flat(result.stderr)


def test_a_test_curve_only_where_it_is_the_kept_heads(
    run: Path, paper: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every searched point's curve, trained again alone, is the kept head's at the kept epoch.
    for name, row in ROWS.items():
        for p in points(run, name, "paper") if row.retrains else []:
            (at,) = [e["test_accuracy"] for e in p["curve"] if e["epoch"] == p["epoch"]]
            want = p["test"]["balanced_accuracy"]
            assert at is None or abs(at - want) <= CURVE_TOLERANCE, name
    finished = open_run(run)
    kept = run_plan(finished, plan(finished, "lws", 0, "paper"))
    assert all(e["test_accuracy"] is not None for e in kept.curve)
    # A re-training alone that does not follow the search (a chaotic learning rate): the
    # validation curves part, so no test curve, and the compare's note names the seed.
    problem = finished.problem
    real = type(problem).train_stopped

    def drifting(self: Any, method: Any, configs: Any, **kw: Any) -> Any:
        results = real(self, method, configs, **kw)
        for r in results if len(configs) == 1 else []:
            r.history = [
                dataclasses.replace(e, val_accuracy=e.val_accuracy + 0.01) for e in r.history
            ]
        return results

    monkeypatch.setattr(type(problem), "train_stopped", drifting)
    parted = run_plan(finished, plan(finished, "lws", 0, "paper"))
    assert [e["val_accuracy"] for e in parted.curve] == [e["val_accuracy"] for e in kept.curve]
    assert all(e["test_accuracy"] is None for e in parted.curve)
    note = _no_test_curve_note("lws", [{"seed": 0, "curve": parted.curve}])
    assert note is not None and "no test curve for seed 0" in note
    assert _no_test_curve_note("lws", [{"seed": 0, "curve": kept.curve}]) is None
