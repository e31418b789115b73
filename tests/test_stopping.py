"""`lort compare --protocol shared --epoch`: the stage-2 epoch each re-training with the run's
stage-2 settings reports: its last (the default), its best on the validation split, or
(labelled, to measure the habit's gap) on the test set; and `lort fit --stage2-stop`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import flat, ok, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = "lort,ce,tau-norm"
OWN = "lort_ce_tau-norm"  # what the tables of these methods add to their names
SHARED = ("--protocol", "shared")


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stopping") / "run"
    ok("fit", "--out", run, "--epochs1", "3", "--epochs2", "6")
    ok("compare", run, *SHARED, "--methods", METHODS)
    return run


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in json.loads(path.read_text())["rows"]}


def test_validation_stopping_keeps_the_best_validation_epoch(compared: Path) -> None:
    result = ok("compare", compared, *SHARED, "--methods", METHODS, "--epoch", "val")
    data = json.loads((compared / f"compare-shared-val-{OWN}.json").read_text())
    assert data["epoch"] == "val" and "validation split" in data["definitions"]["protocol"]
    last, val = (
        rows(compared / f"compare-shared-{OWN}.json"),
        rows(compared / f"compare-shared-val-{OWN}.json"),
    )
    one_image = 1 / 117  # the digits validation split
    for m in METHODS.split(","):
        assert 1 <= val[m]["epoch"][0] <= 6
        best = val[m]["val_balanced_accuracy"]["mean"]
        assert best >= last[m]["val_balanced_accuracy"]["mean"] - one_image, m
    assert (compared / "compare" / "ce-seed0-val.json").is_file()
    assert last["ce"]["epoch"] == [6]  # the default table is untouched: last epoch
    assert "chosen on the validation split" in flat(result.stdout)


def test_test_selection_is_labelled_everywhere(compared: Path) -> None:
    result = ok("compare", compared, *SHARED, "--methods", METHODS, "--epoch", "test-selected")
    assert "TEST-SELECTED" in flat(result.stdout) and "not which method is better" in flat(
        result.stdout
    )
    data = json.loads((compared / f"compare-shared-test-selected-{OWN}.json").read_text())
    assert data["epoch"] == "test-selected"
    assert "not a fair comparison" in data["definitions"]["protocol"]
    last, chosen = (
        rows(compared / f"compare-shared-{OWN}.json"),
        rows(compared / f"compare-shared-test-selected-{OWN}.json"),
    )
    for m in ("ce", "tau-norm"):  # no delta to choose: only the epoch moves
        assert chosen[m]["all"]["mean"] >= last[m]["all"]["mean"] - 1 / 300, m
    assert json.loads((compared / f"compare-shared-{OWN}.json").read_text())["epoch"] == "last"


def test_validation_stopping_needs_a_validation_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "2", "--epochs2", "2", "--method", "ce",
       "--val-fraction", "0")  # fmt: skip
    result = run_cli("compare", run, *SHARED, "--methods", "ce", "--epoch", "val")
    assert result.exit_code == 1 and "no validation split" in result.stderr


def test_fit_keeps_the_best_validation_epoch_by_default(compared: Path, tmp_path: Path) -> None:
    """The bare fit's head is its best validation epoch, the same one `compare --protocol
    shared --epoch val` keeps (one code path); --stage2-stop last keeps the last."""
    report = json.loads((compared / "report.json").read_text())
    kept = report["stage2_epoch"]
    assert kept["of"] == 6 and 1 <= kept["epoch"] <= 6 and "validation" in kept["rule"]
    ok("compare", compared, *SHARED, "--methods", "lort", "--epoch", "val")
    point = json.loads((compared / "compare" / "lort-seed0-val.json").read_text())["result"]
    assert point["epoch"] == kept["epoch"]
    assert point["delta"] == report["smooth"]["delta"]
    assert point["test"]["all"] == report["results"]["overall"]["accuracy"]
    last = tmp_path / "last"
    ok("fit", "--out", last, "--epochs1", "3", "--epochs2", "6", "--stage2-stop", "last")
    assert json.loads((last / "report.json").read_text())["stage2_epoch"]["epoch"] == 6


def test_bare_digits_fit_does_not_report_plain_ce_as_lort(tmp_path: Path) -> None:
    """Issue: --smooth auto tied across delta 0..0.3 at the last epoch and took delta 0, so
    the LORT row was plain CE. Chosen with the epoch on validation, it is LORT."""
    run = tmp_path / "run"
    ok("fit", "--out", run)
    report = json.loads((run / "report.json").read_text())
    assert report["smooth"]["delta"] > 0
    assert not any("plain cross-entropy" in n for n in report["notes"])


def test_stage2_stop_options_are_checked(tmp_path: Path) -> None:
    for flags, words in (
        (("--stage2-stop", "val", "--stage2-mode", "live"), "--stage2-mode cached"),
        (("--stage2-stop", "val", "--val-fraction", "0", "--method", "ce"), "validation split"),
    ):
        run = tmp_path / "x"
        result = run_cli("fit", "--out", run, "--epochs1", "1", "--epochs2", "1", *flags)
        assert result.exit_code == 1 and words in flat(result.stderr), flags
        assert not run.exists(), flags  # checked before anything is written


def test_fit_chooses_its_methods_own_hyperparameter_with_the_epoch(tmp_path: Path) -> None:
    """focal's gamma (no option sets it) is chosen on validation with the epoch, over its
    recipe's values; `compare --protocol shared --epoch val` chooses it the same way."""
    run = tmp_path / "run"
    result = ok("fit", "--out", run, "--epochs1", "3", "--epochs2", "4", "--method", "focal")
    report = json.loads((run / "report.json").read_text())
    own = report["hyper"]
    assert own["mode"] == "auto" and own["grid"] == {"focal_gamma": [0.5, 1.0, 2.0]}
    accs, nlls = own["val_balanced_accuracy"], own["val_nll"]
    best = max(range(3), key=lambda i: (accs[i], -nlls[i], -i))
    assert own["chosen"] == own["values"][best]
    assert f"focal_gamma {own['chosen']['focal_gamma']:g} chosen" in flat(result.stdout)
    ok("compare", run, *SHARED, "--methods", "focal", "--epoch", "val")
    point = json.loads((run / "compare" / "focal-seed0-val.json").read_text())["result"]
    assert point["hyper"]["chosen"] == own["chosen"]
    assert point["test"]["all"] == report["results"]["overall"]["accuracy"]
    # kept to the last epoch, nothing is chosen: the authors' value
    last = tmp_path / "last"
    ok("fit", "--out", last, "--epochs1", "3", "--epochs2", "4", "--method", "focal",
       "--stage2-stop", "last")  # fmt: skip
    assert json.loads((last / "report.json").read_text())["hyper"]["mode"] == "authors"


def test_a_run_from_before_stage2_stop_keeps_its_last_epoch(tmp_path: Path) -> None:
    """A saved config without the key was made when lort kept the last epoch: it still does."""
    import yaml

    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "2", "--epochs2", "5", "--method", "ce")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config.pop("stage2_stop") == "auto"
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ok("fit", "--resume", "--out", run)
    kept = json.loads((run / "report.json").read_text())["stage2_epoch"]
    assert kept == {"epoch": 5, "of": 5, "rule": "the last epoch"}


def test_fit_chooses_tau_unless_it_is_given(tmp_path: Path) -> None:
    """--tau auto (the default): tau-norm's tau is chosen with the epoch on validation over
    Decoupling's linspace(0, 2, 21), kept in stage2.pt and used by predict/export; a given
    --tau is used as given."""
    import torch

    from lort.run.trained import open_trained

    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "3", "--epochs2", "4", "--method", "tau-norm")
    report = json.loads((run / "report.json").read_text())
    tau = report["hyper"]["chosen"]["tau"]
    assert report["hyper"]["grid"] == {"tau": [round(0.1 * i, 1) for i in range(21)]}
    assert torch.load(run / "stage2.pt", weights_only=False)["tau"] == tau
    assert open_trained(run).tau == tau
    fixed = tmp_path / "fixed"
    ok("fit", "--out", fixed, "--epochs1", "3", "--epochs2", "4", "--method", "tau-norm",
       "--tau", "1.5")  # fmt: skip
    assert json.loads((fixed / "report.json").read_text())["hyper"]["mode"] == "none"
    assert open_trained(fixed).tau == 1.5
    bad = run_cli("fit", "--out", tmp_path / "bad", "--tau", "wide")
    assert bad.exit_code == 1 and "--tau must be 'auto' or a number" in flat(bad.stderr)
