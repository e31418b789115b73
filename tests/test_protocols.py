"""Each method as its authors ran it (lort.methods.recipes) and the protocols of `lort compare`:
tuned (every setting and the epoch chosen on validation), authors (the recipes untuned, last
epoch) and test-selected (the published habit, labelled)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_helpers import PNG, flat, ok, run_cli
from lort import files
from lort.methods import METHODS, TABLE1, get_method, maxnorm_radius
from lort.methods.recipes import LR_FACTORS, RECIPES, recipe_for
from lort.optim import StageConfig
from lort.stage2.select import halving_rungs

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in json.loads(path.read_text())["rows"]}


def point(run: Path, method: str, protocol: str, seed: int = 0) -> dict[str, Any]:
    path = run / "compare" / f"{method}-seed{seed}-protocol-{protocol}.json"
    return json.loads(path.read_text())["result"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protocols") / "run"
    ok("fit", "--out", out, "--epochs1", "4", "--epochs2", "6")
    return out


@pytest.fixture(scope="module")
def tuned(run: Path) -> Any:
    return ok("compare", run)


@pytest.fixture(scope="module")
def authors(run: Path) -> Any:
    return ok("compare", run, "--protocol", "authors")


# ------------------------------------------------------------------------------ recipes


def test_every_method_has_a_recipe_with_a_source() -> None:
    assert set(RECIPES) == set(METHODS)
    for name, recipe in RECIPES.items():
        assert recipe.source, name
        assert set(recipe.hyper) | set(recipe.search) <= set(get_method(name).hyper), name


def test_recipes_are_the_authors() -> None:
    run = StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64)
    # LORT and CE keep the run's own (LOS) recipe
    assert RECIPES["lort"].stage(run, 10_000) == run
    # LWS and cRT: Decoupling's cls_lws.yaml / cls_crt.yaml; cRT re-initialises
    assert RECIPES["lws"].stage(run, 10_000) == StageConfig(5, 0.2, 5e-4, 512)
    assert RECIPES["lws"].init == "stage1" and METHODS["lws"].sampler == "class-balanced"
    assert RECIPES["cb-resample"].stage(run, 10_000) == StageConfig(10, 0.2, 5e-4, 512)
    assert RECIPES["cb-resample"].init == "fresh"
    # balanced softmax: BALMS, re-initialised, 2,000 iterations at batch 512
    bs = RECIPES["balanced-softmax"]
    assert bs.init == "fresh" and bs.stage(run, 12_406) == StageConfig(
        math.ceil(2000 / math.ceil(12_406 / 512)), 0.1, 5e-4, 512
    )
    # MaxNorm: LTWB's relative threshold, CB loss, weight decay 0.1
    mn = RECIPES["maxnorm"]
    assert mn.stage(run, 10_000) == StageConfig(10, 0.01, 0.1, 64)
    assert mn.hyper["threshold"] == 0.1 and METHODS["maxnorm"].reweight == "class-balanced"
    assert METHODS["maxnorm"].loss == "softmax-bce"
    # tau-norm and logit adjustment are post hoc on the stage-1 classifier
    assert RECIPES["tau-norm"].stage(run, 10_000) is None
    assert RECIPES["logit-adjust"].stage(run, 10_000) is None
    assert RECIPES["tau-norm"].search["tau"] == tuple(round(0.1 * i, 1) for i in range(21))


def test_a_composition_takes_the_recipe_of_its_retraining_part() -> None:
    r = recipe_for("lws+tau-norm")
    assert (r.lr, r.epochs, r.init) == (0.2, 5, "stage1")
    assert set(r.search) == {"tau"} and r.hyper["tau"] == 1.0
    assert "lws" in r.source


# ------------------------------------------------------------------------------ tuned


def test_tuned_is_the_default_and_chooses_everything_on_validation(run: Path, tuned: Any) -> None:
    data = json.loads((run / "compare.json").read_text())
    assert data["protocol"] == "tuned" and [r["method"] for r in data["rows"]] == list(TABLE1)
    assert "validation" in data["definitions"]["protocol"]
    for m in TABLE1:
        p = point(run, m, "tuned")
        table = p["candidates"]
        assert p["chosen"]["chosen_on"] == "val" and len(table) > 1, m
        best = max(c["val_balanced_accuracy"] for c in table)
        kept = [c for c in table if c["val_balanced_accuracy"] == best]
        chosen = min(kept, key=lambda c: c["val_nll"])  # the tie-break
        assert p["chosen"]["hyper"] == chosen["hyper"] and p["epoch"] == chosen["epoch"], m
        # the kept head's validation score is the one it was chosen by
        assert p["val_balanced_accuracy"] == pytest.approx(best, abs=1e-9), m
        if RECIPES[m].stage(StageConfig(6, 0.05, 0.0, 64), 1) is not None:
            lrs = {c["lr"] for c in table}
            assert len(lrs) == len(LR_FACTORS), m
            assert p["curve"] and all(e["test_accuracy"] is not None for e in p["curve"]), m
    # LORT's delta is searched over the run's grid
    assert len({c["hyper"]["smooth"] for c in point(run, "lort", "tuned")["candidates"]}) == 10
    assert "chosen" in flat(tuned.stdout) and "TEST-SELECTED" not in tuned.stdout


def test_tuned_compare_draws_the_epoch_curves(run: Path, tuned: Any) -> None:
    for name in ("epoch_curves.png", "group_metrics.png", "logit_histograms.png"):
        path = run / "figures" / name
        assert path.read_bytes()[:8] == PNG and str(path) in flat(tuned.stderr), name


def test_the_tuned_figures_show_every_method(
    run: Path, tuned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lort import plots

    drawn: dict[str, list[str]] = {}

    def spy(name: str, read: Any) -> None:
        real = getattr(plots, name)

        def figure(*args: Any, **kwargs: Any) -> Any:
            fig = real(*args, **kwargs)
            drawn[name] = read(fig)
            return fig

        monkeypatch.setattr(plots, name, figure)

    spy("epoch_curves_figure", lambda f: [ax.get_title() for ax in f.axes if ax.get_visible()])
    spy("group_metrics_figure", lambda f: [t.get_text() for t in f.legends[0].get_texts()])
    ok("compare", run)  # every point reused: the figures drawn again
    assert drawn["group_metrics_figure"] == list(TABLE1)
    panels = [title.split(" (")[0] for title in drawn["epoch_curves_figure"]]
    assert panels == list(TABLE1)
    for m in ("tau-norm", "logit-adjust"):  # post-hoc: no epochs, still shown
        assert f"{m} (post-hoc: no epochs)" in drawn["epoch_curves_figure"]


def test_a_compare_of_some_methods_leaves_the_twelve_methods_files_alone(
    run: Path, tuned: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    full = ("compare.json", "compare.csv", "figures/group_metrics.png", "figures/epoch_curves.png")
    before = {name: (copy / name).read_bytes() for name in full}
    result = ok("compare", copy, "--methods", "lort,ce")
    assert {name: (copy / name).read_bytes() for name in full} == before
    assert json.loads((copy / "compare-lort_ce.json").read_text())["methods"] == ["lort", "ce"]
    assert "/compare-lort_ce.json," in "".join(result.stderr.split())  # paths fold on wrap
    for name in ("group_metrics-lort_ce.png", "epoch_curves-lort_ce.png"):
        assert (copy / "figures" / name).read_bytes()[:8] == PNG, name
    # all twelve again, in another order: the full table's names
    ok("compare", copy, "--methods", ",".join(reversed(TABLE1)))
    assert json.loads((copy / "compare.json").read_text())["methods"] == list(reversed(TABLE1))


def test_fresh_initialisation_and_post_hoc_rules(run: Path, tuned: Any) -> None:
    assert point(run, "cb-resample", "tuned")["chosen"]["init"] == "fresh"
    assert point(run, "balanced-softmax", "tuned")["chosen"]["init"] == "fresh"
    tau = point(run, "tau-norm", "tuned")
    assert tau["epoch"] == 0 and tau["stage2"] is None and len(tau["candidates"]) == 21
    assert tau["chosen"]["hyper"]["tau"] in RECIPES["tau-norm"].search["tau"]


# ------------------------------------------------------------------------------ authors


def test_authors_protocol_runs_each_recipe_untuned_to_its_last_epoch(
    run: Path, authors: Any
) -> None:
    data = json.loads((run / "compare-authors.json").read_text())
    assert data["protocol"] == "authors"
    assert point(run, "lws", "authors")["epoch"] == 5
    assert point(run, "maxnorm", "authors")["epoch"] == 10
    assert point(run, "cb-resample", "authors")["stage2"]["lr"] == 0.2
    assert point(run, "tau-norm", "authors")["chosen"]["hyper"] == {"tau": 1.0}
    # MaxNorm projects onto LTWB's radius relative to the stage-1 norms, not a fixed 0.1
    stage1 = torch.load(run / "stage1.ckpt", weights_only=False)["state"]["model"]
    radius = maxnorm_radius(stage1["head.weight"], 0.1)
    norms = point(run, "maxnorm", "authors")["per_class"]["weight_norm"]
    assert radius > 0.5 and max(norms) <= radius * (1 + 1e-6) and max(norms) > 0.1
    assert "authors' recipe" in flat(authors.stdout)


# --------------------------------------------------------------------------- test-selected


def test_test_selected_is_labelled_and_never_below_tuned_on_test(run: Path, tuned: Any) -> None:
    result = ok("compare", run, "--protocol", "test-selected", "--methods", "lort,ce,tau-norm")
    out = flat(result.stdout)
    assert "TEST-SELECTED" in out and "not which method is better" in out
    data = json.loads((run / "compare-test-selected-lort_ce_tau-norm.json").read_text())
    assert data["protocol"] == "test-selected"
    assert "not a fair comparison" in data["definitions"]["protocol"]
    chosen = rows(run / "compare-test-selected-lort_ce_tau-norm.json")
    fair = rows(run / "compare.json")
    for m in ("lort", "ce", "tau-norm"):
        assert point(run, m, "test-selected")["chosen"]["chosen_on"] == "test"
        # the same search, chosen on test: never below the fair choice there
        got, want = chosen[m]["balanced_accuracy"]["mean"], fair[m]["balanced_accuracy"]["mean"]
        assert got >= want - 1e-12, m


def test_a_second_compare_reuses_the_protocol_points(run: Path, tuned: Any) -> None:
    result = ok("compare", run)
    assert f"0 re-trained, {len(TABLE1)} reused" in flat(result.stderr)


def test_protocol_options_that_do_not_belong_are_refused(run: Path) -> None:
    for extra in (("--epoch", "val"), ("--select-on", "none")):
        result = run_cli("compare", run, "--methods", "ce", *extra)
        assert result.exit_code == 1 and "--protocol shared" in result.stderr, extra


def test_a_run_without_validation_can_still_run_the_authors_recipes(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    ok("fit", "--out", bare, "--epochs1", "2", "--epochs2", "2", "--method", "ce",
       "--val-fraction", "0")  # fmt: skip
    result = run_cli("compare", bare, "--methods", "ce")
    assert result.exit_code == 1 and "no validation split" in result.stderr
    ok("compare", bare, "--protocol", "authors", "--methods", "ce,lws")
    assert point(bare, "lws", "authors")["chosen"]["chosen_on"] is None


def test_a_choice_at_the_edge_of_the_search_is_noted() -> None:
    from lort.experiments.compare import _edge_notes

    def result(lr: float, tau: float) -> dict[str, Any]:
        table = [{"lr": x, "hyper": {"tau": t}} for x in (0.01, 0.1, 1.0) for t in (0.5, 1.0, 1.5)]
        return {"stage2": {"lr": lr}, "chosen": {"hyper": {"tau": tau}}, "candidates": table}

    assert _edge_notes("m", [result(0.1, 1.0)]) == []
    notes = _edge_notes("m", [result(1.0, 1.0), result(0.1, 0.5)])
    assert len(notes) == 2 and "chosen lr (1)" in notes[0] and "chosen tau (0.5)" in notes[1]
    # a post-hoc rule has no lr
    posthoc = {"stage2": None, "chosen": {"hyper": {"tau": 1.5}}, "candidates": []}
    posthoc["candidates"] = [{"lr": None, "hyper": {"tau": t}} for t in (0.5, 1.0, 1.5)]
    assert _edge_notes("m", [posthoc]) == [
        "m: the chosen tau (1.5) is at the edge of the values searched; the best may lie "
        "beyond them"
    ]


def test_the_default_search_halves_and_counts_its_head_epochs(run: Path, tuned: Any) -> None:
    """The tuned search stops the configurations validation rules out (successive halving) and
    says what it trained against the full search, per point, per row and in a note."""
    data = json.loads((run / "compare.json").read_text())
    assert data["search"] == "halving" and "halving" in data["definitions"]["search"]
    trained = full = 0
    for row in data["rows"]:
        m = row["method"]
        p = point(run, m, "tuned")
        assert p["search"]["name"] == row["search"], m
        assert row["head_epochs"] == [p["search"]["head_epochs"]], m
        trained += p["search"]["head_epochs"]
        full += p["search"]["full_head_epochs"]
        if not RECIPES[m].retrains:
            assert p["search"] == {"name": "full", "head_epochs": 0, "full_head_epochs": 0}, m
            continue
        assert p["search"]["name"] == "halving", m
        assert p["search"]["head_epochs"] < p["search"]["full_head_epochs"], m
        epochs = (
            p["candidates"][0]["epochs_trained"]
            if len(p["candidates"]) == 1
            else max(c["epochs_trained"] for c in p["candidates"])
        )
        rungs = halving_rungs(len(p["candidates"]), epochs)
        stopped = sorted({c["epochs_trained"] for c in p["candidates"]} - {epochs})
        assert stopped and set(stopped) <= {e for e, _ in rungs}, m
        assert all(c["epoch"] <= c["epochs_trained"] for c in p["candidates"]), m
    assert f"halving search: {trained:,} head-epochs trained, the full search's {full:,}" in flat(
        tuned.stdout
    )


def test_the_full_search_stays_available_and_old_tables_are_kept_from(
    run: Path, tuned: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    halved = point(copy, "lort", "tuned")
    real = files.write_json

    def as_before(path: Any, data: Any, *rest: Any) -> files.Written:
        """A table as lort wrote it before the halving search: it names no search."""
        if Path(path).name == "compare-lort_ce.json":
            assert data.pop("search") == "full"
        return real(path, data, *rest)

    with monkeypatch.context() as m:
        m.setattr(files, "write_json", as_before)
        result = ok("compare", copy, "--methods", "lort,ce", "--search", "full")
    assert "0 reused" in flat(result.stderr)  # the search is part of a point's fingerprint
    full = point(copy, "lort", "tuned")
    assert full["search"]["name"] == "full" and "full search:" in flat(result.stdout)
    assert full["search"]["head_epochs"] == full["search"]["full_head_epochs"]
    assert full["search"]["full_head_epochs"] == halved["search"]["full_head_epochs"]
    assert len(full["candidates"]) == len(halved["candidates"])
    assert {c["epochs_trained"] for c in full["candidates"]} == {6}
    # A table that names no search was made by the full one: its points are kept from.
    assert "search" not in json.loads((copy / "compare-lort_ce.json").read_text())
    assert "lort" in flat(ok("keep", copy, "--methods", "lort,ce", "--method", "lort").stdout)
    authors = ok("compare", copy, "--methods", "lort,ce", "--protocol", "authors")
    assert "full search:" in flat(authors.stdout) and "halving" not in flat(authors.stdout)
    result = run_cli("compare", copy, "--methods", "ce", "--search", "some")
    assert result.exit_code == 2 and "--search" in result.stderr
