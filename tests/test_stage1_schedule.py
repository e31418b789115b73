"""Stage-1 LDAM-DRW with its authors' optimiser and schedule (kaidic/LDAM-DRW cifar_train.py):
the lr rule epoch by epoch, what ``resolve`` gives ``--stage1-loss ldam-drw`` with and without
the stage-1 flags, and what the run records (config.yaml and the stage-1 checkpoint alike)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import flat, ok, run_cli
from lort.config import resolve
from lort.errors import OptionError
from lort.optim import LDAM_DRW_OPTIM, ldam_drw_factor, ldam_drw_schedule
from lort.stage1.losses import drw_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def authors_lr(lr: float, epoch: int) -> float:
    """``adjust_learning_rate`` of cifar_train.py (lines 366-376), for their 200 epochs."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


def test_the_schedule_is_the_authors_rule_at_200_epochs() -> None:
    assert LDAM_DRW_OPTIM == {"lr": 0.1, "weight_decay": 2e-4, "batch_size": 128}
    for epoch in range(200):
        assert ldam_drw_factor(epoch, 200) * 0.1 == pytest.approx(authors_lr(0.1, epoch)), epoch
    # warm-up, then each side of each step
    got = {e: 0.1 * ldam_drw_factor(e, 200) for e in (0, 1, 4, 5, 159, 160, 179, 180, 199)}
    want = {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 159: 0.1, 160: 1e-3, 179: 1e-3, 180: 1e-5, 199: 1e-5}
    assert got == pytest.approx(want)
    # the first step falls where DRW switches its weights, at any length
    for epochs in (10, 30, 200, 400):
        first = next(e for e in range(epochs) if e >= 5 and ldam_drw_factor(e, epochs) < 1)
        assert first == drw_epoch(epochs), epochs


def test_the_scheduler_holds_each_epochs_lr_for_all_its_batches() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    per_epoch = 3
    sched = ldam_drw_schedule(opt, 200, per_epoch)
    for epoch in range(200):
        for _ in range(per_epoch):
            assert opt.param_groups[0]["lr"] == pytest.approx(authors_lr(0.1, epoch)), epoch
            opt.step()
            sched.step()


def test_ldam_drw_resolves_to_the_authors_optimiser_unless_given() -> None:
    cfg = resolve({"dataset": "cifar100-lt"}, {"stage1_loss": "ldam-drw"})
    assert cfg.stage1_schedule == "ldam-drw"
    s1 = cfg.stage1
    assert (s1.lr, s1.weight_decay, s1.batch_size, s1.epochs) == (0.1, 2e-4, 128, 200)
    assert any("LDAM-DRW's optimiser and schedule" in n for n in cfg.notes)
    assert cfg.to_dict()["stage1_schedule"] == "ldam-drw"

    cfg = resolve({"dataset": "cifar100-lt"}, {"stage1_loss": "ldam-drw", "lr1": 0.05})
    s1 = cfg.stage1
    assert cfg.stage1_schedule == "ldam-drw"
    assert (s1.lr, s1.weight_decay, s1.batch_size) == (0.05, 2e-4, 128)
    given = {"stage1": {"lr": 0.02, "weight_decay": 1e-3, "batch_size": 32}}
    cfg = resolve({"dataset": "cifar100-lt", **given}, {"stage1_loss": "ldam-drw"})
    assert (cfg.stage1.lr, cfg.stage1.weight_decay, cfg.stage1.batch_size) == (0.02, 1e-3, 32)
    assert cfg.stage1_schedule == "ldam-drw" and not cfg.notes

    # lort's cosine schedule and the dataset's recipe, on request
    flags = {"stage1_loss": "ldam-drw", "stage1_schedule": "cosine"}
    cfg = resolve({"dataset": "cifar100-lt"}, flags)
    assert (cfg.stage1.lr, cfg.stage1.weight_decay, cfg.stage1.batch_size) == (0.01, 5e-3, 64)
    assert "stage1_schedule" not in cfg.to_dict()


def test_every_other_stage1_loss_keeps_the_cosine_recipe() -> None:
    for loss in ("ce", "ce-drw", "bs"):
        cfg = resolve({"dataset": "cifar100-lt"}, {"stage1_loss": loss})
        assert cfg.stage1_schedule == "cosine" and not cfg.notes
        assert (cfg.stage1.lr, cfg.stage1.weight_decay, cfg.stage1.batch_size) == (0.01, 5e-3, 64)
        assert "stage1_schedule" not in cfg.to_dict()  # config.yaml as before the option
    # a features run's stage 1 is a linear head: cosine whatever the loss
    features = {"dataset": "features", "data_root": "x"}
    assert resolve(features, {"stage1_loss": "ldam-drw"}).stage1_schedule == "cosine"
    with pytest.raises(OptionError, match="cosine schedule"):
        resolve(features, {"stage1_schedule": "ldam-drw"})


def test_fit_records_the_schedule_it_trained_with(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = ok("fit", "--out", run, "--stage1-loss", "ldam-drw", "--dry-run")
    text = flat(result.stderr)
    assert "lr 0.1, wd 0.0002, batch 128" in text and "LDAM-DRW's schedule" in text
    saved = yaml.safe_load(result.stdout)  # a dry run prints the config it would save
    assert saved["stage1_schedule"] == "ldam-drw"
    assert saved["stage1"] | {"epochs": 0} == {**LDAM_DRW_OPTIM, "epochs": 0}

    run = tmp_path / "given"
    result = ok("fit", "--out", run, "--stage1-loss", "ldam-drw", "--lr1", "0.03", "--dry-run")
    saved = yaml.safe_load(result.stdout)
    assert saved["stage1"]["lr"] == 0.03 and saved["stage1"]["batch_size"] == 128

    # a resumed run keeps what stage 1 was trained with, and may not change it
    run = tmp_path / "trained"
    ok("fit", "--out", run, "--stage1-loss", "ldam-drw", "--epochs1", "2", "--epochs2", "1")
    ckpt = torch.load(run / "stage1.ckpt", weights_only=False)
    assert ckpt["config"] == yaml.safe_load((run / "config.yaml").read_text())
    group = ckpt["state"]["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 0.1 and group["weight_decay"] == 2e-4
    assert group["lr"] == pytest.approx(0.1 * 2 / 5)  # still warming up after 2 epochs
    ok("fit", "--resume", "--out", run, "--method", "ce")
    result = run_cli("fit", "--resume", "--out", run, "--stage1-schedule", "cosine")
    assert result.exit_code != 0 and "stage1_schedule" in flat(result.output)
