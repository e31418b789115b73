"""Pretrained backbones without a network: a timm model created with random weights, saved to a
temp file and loaded through ``--weights``; linear probing (``--epochs1 0``); fine-tuning with a
frozen backbone or a lower backbone learning rate; the network's own input config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import flat, ok, run_cli
from lort.errors import InputError
from lort.models import build_model, input_spec, load_backbone_weights, read_state_dict
from lort.optim import StageConfig
from lort.stage1.loop import stage1_params

timm = pytest.importorskip("timm")

ARCH = "timm:test_efficientnet"  # about 0.1 M parameters, 160-pixel input


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm model's full state_dict (classifier included), as timm users save it."""
    torch.manual_seed(1)
    net = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "effnet.pth"
    torch.save(net.state_dict(), path)
    return path


def backbone_state(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "stage1.ckpt", weights_only=False)["state"]["model"]
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def test_input_config_comes_from_the_model() -> None:
    spec = input_spec(ARCH, pretrained=False, weights=None, in_channels=3, mirror=True)
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("test_efficientnet"))
    assert spec is not None and spec.kind == "resized"
    assert spec.image_size == cfg["input_size"][-1] == 160
    assert spec.mean == cfg["mean"] and spec.std == cfg["std"]
    assert spec.resize == int(160 / cfg["crop_pct"]) and spec.interpolation == "bicubic"
    tv = input_spec("resnet50", pretrained=True, weights=None, in_channels=3, mirror=True)
    assert tv is not None and (tv.image_size, tv.resize) == (224, 232)
    # lort's own networks read the dataset's pipeline; so does a fresh torchvision one
    assert (
        input_spec("resnet32", pretrained=False, weights="x.pt", in_channels=3, mirror=True) is None
    )
    assert (
        input_spec("resnet50", pretrained=False, weights=None, in_channels=3, mirror=True) is None
    )


def test_linear_probe_with_weights_from_a_file(
    timm_weights: Path, small_cifar_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = ok(
        "fit", "--dataset", "imagefolder", "--data-root", small_cifar_folder, "--arch", ARCH,
        "--weights", timm_weights, "--epochs1", "0", "--epochs2", "1", "--smooth", "0.5",
        "--out", out,
    )  # fmt: skip
    text = flat(result.output)
    assert "linear probing" in text and "160px" in text
    assert "ignored its classifier.bias, classifier.weight" in text
    assert "--epochs1 0: lort re-trains the stage-1 classifier" in text
    rep = json.loads((out / "report.json").read_text())
    assert rep["input"]["kind"] == "resized" and rep["input"]["image_size"] == 160
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["weights"] == str(timm_weights) and "pretrained" not in cfg
    # linear probing leaves the loaded backbone as it is
    saved = torch.load(timm_weights)
    for k, v in backbone_state(out).items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    assert np.load(out / "features" / "train.npy").shape[1] == 256


def test_weights_as_safetensors_and_lort_checkpoints(timm_weights: Path, tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    state = torch.load(timm_weights)
    st = tmp_path / "w.safetensors"
    safetensors.save_file(state, str(st))
    model = build_model(ARCH, 4)
    assert load_backbone_weights(model.backbone, st) == ["classifier.bias", "classifier.weight"]
    nested = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, nested)
    assert read_state_dict(nested).keys() == state.keys()
    lort_ckpt = tmp_path / "stage1.ckpt"
    torch.save({"state": {"model": model.state_dict()}, "config": {}}, lort_ckpt)
    other = build_model(ARCH, 4)
    assert load_backbone_weights(other.backbone, lort_ckpt) == ["head.bias", "head.weight"]
    for k, v in other.backbone.state_dict().items():
        torch.testing.assert_close(v, model.backbone.state_dict()[k])


def test_weights_of_another_network_are_one_clean_error(
    timm_weights: Path, small_cifar_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "fit", "--dataset", "imagefolder", "--data-root", small_cifar_folder,
        "--arch", "timm:test_resnet", "--weights", timm_weights, "--out", out,
    )  # fmt: skip
    assert result.exit_code != 0
    assert "does not fit this backbone" in flat(result.output)
    assert flat(result.output).count("Error:") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--arch", "timm:no_such_net"), "timm has no model 'no_such_net'"),
        (("--arch", "resnet32", "--pretrained"), "lort's resnet32 has no pretrained weights"),
        (("--weights", "nowhere.pt"), "--weights nowhere.pt: no such file"),
        (("--arch", "resnet50", "--pretrained", "--weights", "x.pt"), "not both"),
        (("--freeze-backbone", "--backbone-lr-scale", "0.1"), "drop --backbone-lr-scale"),
        (("--backbone-lr-scale", "0"), "must be > 0"),
        (("--arch", "none"), "--arch none is for --dataset features"),
    ],
)
def test_bad_backbone_options(flags: tuple[str, ...], expected: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("fit", "--out", out, *flags)
    assert result.exit_code != 0
    assert expected in flat(result.output)
    assert not out.exists()


def test_frozen_backbone_fine_tuning_trains_the_head_alone(
    timm_weights: Path, small_cifar_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    ok(
        "fit", "--dataset", "imagefolder", "--data-root", small_cifar_folder, "--arch", ARCH,
        "--weights", timm_weights, "--freeze-backbone", "--epochs1", "1", "--epochs2", "1",
        "--smooth", "0.5", "--out", out,
    )  # fmt: skip
    saved = torch.load(timm_weights)
    for k, v in backbone_state(out).items():  # BatchNorm statistics included
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["freeze_backbone"] is True


def test_backbone_learning_rate_scale() -> None:
    model = build_model("resnet8", 3)
    st = StageConfig(epochs=1, lr=0.1, weight_decay=0.0, batch_size=4)
    groups = stage1_params(model, st, False, 0.1)
    assert [g.get("lr", st.lr) for g in groups] == [0.1, pytest.approx(0.01)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [len(g["params"]) for g in stage1_params(model, st, True, 1.0)] == [2]
    assert not isinstance(stage1_params(model, st, False, 1.0), list)  # as before: one group


def test_timm_missing_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(InputError, match=r"needs timm.*pip install 'lort\[timm\]'"):
        build_model(ARCH, 3)
