"""Temperature scaling on the validation split: the fit, and what fit, predict and export do
with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from cli_helpers import flat, ok
from lort.analysis import analyze
from lort.errors import InputError
from lort.run.trained import open_trained
from lort.stage2.calibrate import calibrate, fit_temperature
from lort.stage2.problem import load_data


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(-np.mean(log_softmax(z / t, axis=1)[np.arange(len(y)), y]))


@pytest.mark.parametrize("scale", [0.03, 1.0, 25.0])
def test_the_temperature_is_the_nll_minimum(scale: float) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 900)
    z = rng.normal(size=(900, 7))
    z[np.arange(900), y] += 1.2
    z *= scale
    t = fit_temperature(z, y)
    best = minimize_scalar(
        lambda lt: _nll(z, y, float(np.exp(lt))), bounds=(-9, 9), method="bounded",
        options={"xatol": 1e-10},
    )  # fmt: skip
    assert t == pytest.approx(float(np.exp(best.x)), rel=1e-6)
    assert _nll(z, y, t) <= _nll(z, y, 1.0)


def test_calibration_reports_both_splits_and_keeps_the_order() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    z = 0.05 * (rng.normal(size=(400, 5)) + 2.0 * np.eye(5)[y])  # flat, as LORT's
    cal = calibrate((z[:200], y[:200]), (z[200:], y[200:]))
    assert cal.temperature is not None and cal.temperature < 0.2
    after = cal.splits["test"]["after"]
    assert after["nll"] < cal.splits["test"]["before"]["nll"]
    assert after["ece"] == pytest.approx(analyze(z[200:] / cal.temperature, y[200:]).ece)
    none = calibrate(None, (z, y))
    assert none.temperature is None and "no validation split" in none.fitted_on
    with pytest.raises(InputError):
        fit_temperature(np.full((3, 2), np.nan), np.zeros(3, dtype=int))


def test_the_default_fit_is_calibrated(tmp_path: Path) -> None:
    """The README's bare run: ECE <= 0.06 on the test split after scaling, accuracy unchanged."""
    out = tmp_path / "run"
    result = ok("fit", "--out", out, "--seed", "0")
    assert "calibrated: temperature" in flat(result.output)
    report = json.loads((out / "report.json").read_text())
    cal = report["calibration"]
    assert cal["test"]["before"]["ece"] > 0.3  # LORT's flat targets
    assert cal["test"]["after"]["ece"] <= 0.06
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"]
    t = cal["temperature"]
    stage2 = torch.load(out / "stage2.pt", weights_only=True)
    assert stage2["temperature"] == t
    assert (out / "figures/reliability.png").stat().st_size > 0

    # predict's probabilities are softmax(z / T) of the run's own logits.
    data = load_data(open_trained(out).cfg)
    images = tmp_path / "test.npy"
    np.save(images, data.sources["test"][:50])
    pred = tmp_path / "p.json"
    ok("predict", out, images, "--format", "json", "--out", pred, "--top-k", "1")
    got = [p["top"][0]["probability"] for p in json.loads(pred.read_text())["predictions"]]
    z = np.load(out / "logits.npy")[:50].astype(np.float64) / t
    want = np.exp(z.max(1)) / np.exp(z).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert json.loads(pred.read_text())["temperature"] == t


def test_a_run_without_a_validation_split_says_it_is_not_calibrated(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = ok("fit", "--out", out, "--val-fraction", "0", "--smooth", "0.9", "--epochs1", "3",
                "--epochs2", "3", "--stage2-stop", "last")  # fmt: skip
    assert "no validation split" in flat(result.output)
    cal = json.loads((out / "report.json").read_text())["calibration"]
    assert cal["temperature"] is None and "after" not in cal["test"]
    assert not (out / "figures").exists()
    assert open_trained(out).temperature is None
    assert any("not calibrated" in n for n in open_trained(out).notes)
