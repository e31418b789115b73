"""``lort compare``: every stage-2 method re-trained on one run's cached features.

One small digits run (3 stage-1 epochs, 4 stage-2 epochs kept to the last, ``--smooth auto``
with its validation split) is made once for the module; ``compared`` runs ``lort compare
--protocol shared`` (every method with the run's stage-2 settings, the last epoch: what
``lort fit --resume --method M`` gives) on a copy of it. Tests that change a folder copy one
first; tests/test_protocols.py covers the other protocols.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import Result

from cli_helpers import flat, mtimes, ok, run_cli
from lort.experiments.compare import compare
from lort.methods import TABLE1, maxnorm_radius

RUN_FLAGS = ("--epochs1", "3", "--epochs2", "4", "--stage2-stop", "last")
SHARED = ("--protocol", "shared")
ACCURACY = ("all", "many", "medium", "few")


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.tmp"))


def point(folder: Path, method: str, seed: int = 0) -> dict[str, Any]:
    return json.loads((folder / "compare" / f"{method}-seed{seed}.json").read_text())["result"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "run"
    ok("fit", "--out", out, *RUN_FLAGS)
    return out


@pytest.fixture(scope="module")
def compared(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    run = tmp_path_factory.mktemp("compared") / "run"
    shutil.copytree(base_run, run)
    result = ok("compare", run, *SHARED)
    return run, result


# --------------------------------------------------------------------------------------
# The table.


def test_every_method_is_in_the_table_json_and_csv(compared: tuple[Path, Result]) -> None:
    run, result = compared
    out = result.stdout
    for name in TABLE1:
        assert name in out, name
    for header in ("All", "Many", "Medium", "Few", "L many", "r few"):
        assert header in out, header

    data = json.loads((run / "compare-shared.json").read_text())
    assert [r["method"] for r in data["rows"]] == list(TABLE1)
    assert data["seeds"] == [0] and data["select_on"] == "val"
    for row in data["rows"]:
        for key in (*ACCURACY, "L_many", "r_many", "w_many", "w_few"):
            assert row[key]["values"] and len(row[key]["values"]) == 1, (row["method"], key)
            assert row[key]["std"] is None
        assert 0.0 <= row["all"]["mean"] <= 1.0

    with (run / "compare-shared.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(TABLE1)
    assert {"method", "seed", "delta", "all", "many", "medium", "few", "w_few"} <= set(rows[0])
    by_method = {r["method"]: r for r in rows}
    for row in data["rows"]:
        assert float(by_method[row["method"]]["all"]) == row["all"]["mean"]

    for name in TABLE1:
        assert (run / "compare" / f"{name}-seed0.json").is_file()
    assert temp_files(run) == []
    assert "12 re-trained, 0 reused" in flat(result.stderr)


def test_weight_norms_are_those_applied_at_inference(compared: tuple[Path, Result]) -> None:
    run, _ = compared
    tau = yaml.safe_load((run / "config.yaml").read_text())["tau"]
    assert tau == "auto"  # at the last epoch nothing chooses it: the authors' 1
    # tau-norm with tau = 1 and LDAM's normed layer use unit-norm class weights; MaxNorm's
    # are at most its radius; a cosine head's are its one learnt scale.
    for name in ("tau-norm", "ldam"):
        norms = point(run, name)["per_class"]["weight_norm"]
        assert norms == pytest.approx([1.0] * 10), name
    # MaxNorm's radius is relative to the stage-1 class norms (LTWB's threshold 0.1)
    stage1 = torch.load(run / "stage1.ckpt", weights_only=False)["state"]["model"]
    radius = maxnorm_radius(stage1["head.weight"], 0.1)
    assert max(point(run, "maxnorm")["per_class"]["weight_norm"]) <= radius * (1 + 1e-6)
    assert len(set(point(run, "cosine")["per_class"]["weight_norm"])) == 1
    # plain CE keeps the head's long-tail imbalance: many classes have the longer weights
    ce = point(run, "ce")["test"]
    assert ce["w_many"] > ce["w_few"]


# --------------------------------------------------------------------------------------
# The numbers are those of a single-method `lort fit` run on the same cache.


@pytest.mark.parametrize("method", ["lort", "ce", "lws", "tau-norm", "cb-resample"])
def test_numbers_equal_fit_resume_with_that_method(
    method: str, compared: tuple[Path, Result], base_run: Path, tmp_path: Path
) -> None:
    run, _ = compared
    single = tmp_path / "single"
    shutil.copytree(base_run, single)
    ok("fit", "--resume", "--out", single, "--method", method)
    report = json.loads((single / "report.json").read_text())
    assert report["method"]["name"] == method
    want = report["results"]
    got = point(run, method)

    assert got["test"]["all"] == want["overall"]["accuracy"]
    assert got["test"]["balanced_accuracy"] == want["overall"]["balanced_accuracy"]
    assert got["test"]["L_all"] == want["overall"]["mean_magnitude"]
    assert got["test"]["r_all"] == want["overall"]["mean_rstd"]
    for g in ("many", "medium", "few"):
        assert got["test"][g] == want["groups"][g]["accuracy"], g
        assert got["test"][f"L_{g}"] == want["groups"][g]["mean_magnitude"], g
        assert got["test"][f"r_{g}"] == want["groups"][g]["mean_rstd"], g
    for key in ("accuracy", "magnitude", "rstd"):
        assert got["per_class"][key] == want["per_class"][key], key
    if method == "lort":
        assert report["smooth"]["mode"] == "auto"
        assert got["smooth"] == report["smooth"]
        assert got["delta"] == report["smooth"]["delta"]
    else:
        assert got["delta"] is None
    # and the row of compare-shared.json is that point (one seed)
    row = next(
        r
        for r in json.loads((run / "compare-shared.json").read_text())["rows"]
        if r["method"] == method
    )
    assert row["all"]["mean"] == want["overall"]["accuracy"]


# --------------------------------------------------------------------------------------
# Seeds, resume, settings.


def test_two_seeds_give_mean_and_std(compared: tuple[Path, Result], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared[0], run)
    before = mtimes(run / "compare")
    result = ok("compare", run, *SHARED, "--methods", "lort,ce", "--seeds", "2")
    data = json.loads((run / "compare-shared-lort_ce.json").read_text())
    assert data["seeds"] == [0, 1] and [r["method"] for r in data["rows"]] == ["lort", "ce"]
    for row in data["rows"]:
        assert row["seeds"] == [0, 1]
        for key in (*ACCURACY, "L_few", "r_few", "w_few"):
            stats = row[key]
            assert len(stats["values"]) == 2, key
            assert stats["std"] is not None and stats["std"] >= 0.0
            assert stats["mean"] == pytest.approx(sum(stats["values"]) / 2)
    assert "±" in result.stdout
    # seed 0 was computed by the first compare and reused; seed 1 is new
    after = mtimes(run / "compare")
    for name in ("lort-seed0.json", "ce-seed0.json"):
        assert after[name] == before[name], name
    assert {"lort-seed1.json", "ce-seed1.json"} <= set(after)
    assert "2 re-trained, 2 reused" in flat(result.stderr)
    with (run / "compare-shared-lort_ce.csv").open() as f:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(f)] == [
            ("lort", "0"),
            ("lort", "1"),
            ("ce", "0"),
            ("ce", "1"),
        ]


def test_second_compare_reuses_every_point(compared: tuple[Path, Result], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared[0], run)
    before = mtimes(run / "compare")
    result = ok("compare", run, *SHARED)
    assert mtimes(run / "compare") == before
    assert "0 re-trained, 12 reused" in flat(result.stderr)
    assert (
        json.loads((run / "compare-shared.json").read_text())["rows"]
        == json.loads((compared[0] / "compare-shared.json").read_text())["rows"]
    )


def test_a_changed_setting_recomputes_only_what_it_affects(
    compared: tuple[Path, Result], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared[0], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["tau"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = mtimes(run / "compare")
    old_tau = point(run, "tau-norm")
    result = ok("compare", run, *SHARED, "--methods", "ce,tau-norm,logit-adjust")
    after = mtimes(run / "compare")
    assert after["ce-seed0.json"] == before["ce-seed0.json"]  # tau does not touch CE
    for name in ("tau-norm-seed0.json", "logit-adjust-seed0.json"):
        assert after[name] != before[name], name
    assert point(run, "tau-norm")["per_class"]["weight_norm"] != old_tau["per_class"]["weight_norm"]
    assert "2 re-trained, 1 reused" in flat(result.stderr)

    # --select-on none: LORT takes the delta the run chose instead of choosing again; a
    # different setting, so the point is recomputed (to the same numbers: the same delta)
    chosen = point(run, "lort")
    result = ok("compare", run, *SHARED, "--methods", "lort,ce", "--select-on", "none")
    fixed = point(run, "lort")
    assert fixed["smooth"]["mode"] == "fixed" and fixed["delta"] == chosen["delta"]
    assert fixed["test"] == chosen["test"]
    assert "1 re-trained, 1 reused" in flat(result.stderr)


def test_an_interrupted_compare_keeps_the_finished_points(base_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base_run, run)

    def interrupt(done: int, total: int, label: str, reused: bool) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(run, ["ce", "cosine", "lws"], on_point=interrupt, figures=False, protocol="shared")
    assert sorted(os.listdir(run / "compare")) == ["ce-seed0.json", "cosine-seed0.json"]
    assert not (run / "compare-shared-ce_cosine_lws.json").exists()
    assert temp_files(run) == []
    res = compare(run, ["ce", "cosine", "lws"], figures=False, protocol="shared")
    assert res.reused == 2
    assert [r["method"] for r in res.rows] == ["ce", "cosine", "lws"]


# --------------------------------------------------------------------------------------
# Bad input.


def test_not_a_finished_run_says_run_fit_first(base_run: Path, tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        result = run_cli("compare", folder)
        assert result.exit_code == 1, result.output
        assert "lort fit" in result.stderr and result.stderr.startswith("Error:")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(base_run, unfinished)
    (unfinished / "report.json").unlink()
    result = run_cli("compare", unfinished)
    assert result.exit_code == 1
    assert "report.json" in result.stderr and "lort fit --resume" in flat(result.stderr)
    assert not (unfinished / "compare").exists()


def test_unknown_method_lists_the_valid_ones(base_run: Path) -> None:
    result = run_cli("compare", base_run, "--methods", "ce,nope")
    assert result.exit_code == 1
    for name in ("'nope'", *TABLE1):
        assert name in result.stderr, name
    assert not (base_run / "compare").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(("--seeds", "0"), "--seeds"), (("--select-on", "test"), "--select-on")],
    ids=["seeds", "select-on"],
)
def test_bad_options_are_usage_errors(
    flags: tuple[str, ...], expected: str, base_run: Path
) -> None:
    result = run_cli("compare", base_run, *flags)
    assert result.exit_code == 2 and expected in result.stderr
