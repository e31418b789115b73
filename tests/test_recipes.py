"""The recipes under recipes/: each resolves to a valid config, carries the paper's setup, says
where its numbers come from, and the CPU recipe runs end to end (shortened) on real JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import ok
from conftest import CLASS_TEST
from lort.config import load_yaml, resolve

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Linear probe + LORT re-training on pretrained backbones (written offline, never run here).
PRETRAINED = tuple(
    f"{data}-{net}"
    for data in ("imagenet-lt", "inat2018", "imagefolder")
    for net in ("resnet50-probe", "clip-vit-b16")
)
NAMES = (
    "cifar100-lt-ir100",
    "cifar100-lt-ir50",
    "cifar100-lt-ir10",
    "imagenet-lt",
    "inat2018",
    "cifar10-lt-ir100",
    "cifar10-lt-ir100-cpu",
    *PRETRAINED,
)


def recipe(name: str) -> Path:
    return RECIPES / f"{name}.yaml"


def test_the_recipe_folder_holds_exactly_the_benchmarks() -> None:
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_resolves_and_says_where_its_numbers_come_from(name: str) -> None:
    text = recipe(name).read_text()
    header = text[: text.index("\ndataset:")]
    assert all(line.startswith("#") for line in header.splitlines())
    assert "Where the numbers come from" in header
    assert "report" in header  # what the paper (or the literature) reports for it
    assert "lort fit --config recipes/" in header
    if "timm:" in recipe(name).read_text():
        pytest.importorskip("timm")
    cfg = resolve(load_yaml(recipe(name)), {})
    assert cfg.method == "lort" and cfg.stage2_mode == "cached"


@pytest.mark.parametrize("ratio", [100, 50, 10])
def test_cifar100_recipes_are_the_papers_setup(ratio: int) -> None:
    cfg = resolve(load_yaml(recipe(f"cifar100-lt-ir{ratio}")), {})
    assert cfg.dataset == "cifar100-lt" and cfg.imbalance_ratio == ratio
    assert cfg.arch == "resnet34-cifar" and cfg.stage1_loss == "ce"
    s1, s2 = cfg.stage1, cfg.stage2
    assert s1 is not None and s2 is not None
    assert (s1.epochs, s1.batch_size, s1.lr, s1.weight_decay) == (200, 64, 0.01, 5e-3)
    assert (s2.epochs, s2.batch_size) == (20, 64)
    assert cfg.smooth == 0.98


def test_large_dataset_recipes() -> None:
    inet = resolve(load_yaml(recipe("imagenet-lt")), {})
    assert (inet.dataset, inet.arch, inet.smooth) == ("imagenet-lt", "resnext50", 0.99)
    assert inet.stage1 is not None and (inet.stage1.batch_size, inet.stage1.lr) == (128, 0.03)
    inat = resolve(load_yaml(recipe("inat2018")), {})
    assert (inat.dataset, inat.arch, inat.smooth) == ("inat2018", "resnet50", 0.99)
    assert inat.stage1 is not None and (inat.stage1.batch_size, inat.stage1.lr) == (256, 0.1)


def test_cifar10_recipes() -> None:
    full = resolve(load_yaml(recipe("cifar10-lt-ir100")), {})
    cpu = resolve(load_yaml(recipe("cifar10-lt-ir100-cpu")), {})
    assert full.dataset == cpu.dataset == "imagefolder"
    assert full.imbalance_ratio == cpu.imbalance_ratio == 100
    assert (full.arch, cpu.arch) == ("resnet32", "resnet8")
    assert full.stage1 is not None and cpu.stage1 is not None
    assert (full.stage1.epochs, cpu.stage1.epochs) == (200, 20)
    assert full.stage2 == cpu.stage2 and full.smooth == cpu.smooth


def test_cpu_recipe_runs_on_real_jpegs(small_cifar_folder: Path, tmp_path: Path) -> None:
    """The CPU recipe as a user runs it, shortened to one epoch per stage (the small folder
    holds 40 down to 4 images per class, hence IR 10)."""
    run = tmp_path / "run"
    ok(
        "fit",
        "--config",
        recipe("cifar10-lt-ir100-cpu"),
        "--data-root",
        small_cifar_folder,
        "--imbalance-ratio",
        "10",
        "--epochs1",
        "1",
        "--epochs2",
        "1",
        "--out",
        run,
    )
    report = json.loads((run / "report.json").read_text())
    assert report["config"]["arch"] == "resnet8" and report["config"]["smooth"] == 0.83
    assert report["results"]["rows"] == 10 * CLASS_TEST
    assert report["timings"]["stage1_images_per_s"] > 0


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_recipes_probe_then_retrain(name: str) -> None:
    text = recipe(name).read_text()
    if "timm:" in text:
        pytest.importorskip("timm")
    cfg = resolve(load_yaml(recipe(name)), {})
    assert cfg.pretrained and cfg.freeze_backbone and cfg.weights is None
    assert cfg.arch in ("resnet50", "timm:vit_base_patch16_clip_224.openai")
    assert cfg.stage1.epochs > 0  # a trained linear head for LORT to re-train
    assert (cfg.stage2.epochs, cfg.stage2.lr, cfg.stage2.weight_decay) == (20, 5e-4, 0.0)
    assert "has not run this recipe" in text


def test_the_recipe_is_the_one_source_of_the_authors_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loss, a constraint and a head loop given no hyperparameter take the recipe's value,
    so changing the recipe changes what they train with (no second default elsewhere)."""
    import dataclasses

    import numpy as np
    import torch

    from lort.methods import constraint_radius, get_method, make_head, make_loss
    from lort.methods import recipes as recipes_module

    counts = np.array([50, 20, 5])
    z, y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.arange(12) % 3
    focal, maxnorm = get_method("focal"), get_method("maxnorm")
    table = dict(recipes_module.RECIPES)
    table["focal"] = dataclasses.replace(table["focal"], hyper={"focal_gamma": 2.0})
    table["maxnorm"] = dataclasses.replace(
        table["maxnorm"], hyper={**table["maxnorm"].hyper, "threshold": 0.5}
    )
    monkeypatch.setattr(recipes_module, "RECIPES", table)
    assert torch.equal(
        make_loss(focal, counts)(z, y), make_loss(focal, counts, focal_gamma=2.0)(z, y)
    )
    head = make_head(maxnorm, 4, 3, None)
    assert constraint_radius(maxnorm, head) == constraint_radius(maxnorm, head, 0.5)
    assert constraint_radius(maxnorm, head) != constraint_radius(maxnorm, head, 0.1)
