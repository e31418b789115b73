"""A run folder travels: its config names the data absolutely, and data that moved is
re-pointed by the run's config (or `fit --resume --data-root`), checked by the manifest's hashes
rather than by the path's spelling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cli_helpers import flat, ok, run_cli

SMALL = ("--arch", "resnet8", "--epochs1", "1", "--epochs2", "1", "--smooth", "0.5")


def test_a_run_made_with_a_relative_data_root_travels(
    small_cifar_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(small_cifar_folder, home / "data")
    monkeypatch.chdir(home)
    ok("fit", "--dataset", "imagefolder", "--data-root", "data", "--out", "run", *SMALL)
    config = yaml.safe_load((home / "run/config.yaml").read_text())
    assert config["data_root"] == str(home / "data")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ok("compare", home / "run", "--methods", "ce", "--protocol", "authors")

    # The data moves: compare and sweep go on from the feature cache and the saved labels,
    # with the same numbers, and say so; what needs the images says where it looked.
    before = json.loads((home / "run/compare-authors-ce.json").read_text())["rows"]
    moved = tmp_path / "moved"
    (home / "data").rename(moved)
    (home / "run/compare-authors-ce.json").unlink()
    shutil.rmtree(home / "run/compare")
    result = ok("compare", home / "run", "--methods", "ce", "--protocol", "authors")
    assert "re-training on the run's feature cache" in flat(result.output)
    assert str(home / "data") in flat(result.output)
    assert json.loads((home / "run/compare-authors-ce.json").read_text())["rows"] == before
    ok("sweep", home / "run", "--smooth", "0.5")
    result = run_cli("fit", "--resume", "--out", home / "run", "--method", "ce")
    assert result.exit_code != 0 and str(home / "data") in flat(result.output)
    # Damaged saved labels are never trained on.
    labels = home / "run/split_labels.npz"
    good = labels.read_bytes()
    labels.write_bytes(good[:-20])
    result = run_cli("compare", home / "run", "--methods", "lws", "--protocol", "authors")
    assert result.exit_code == 1 and "split_labels.npz" in flat(result.stderr)
    assert not (home / "run/compare-authors-lws.json").exists()
    labels.write_bytes(good)
    # Re-pointed in config.yaml, everything works again.
    config["data_root"] = str(moved)
    (home / "run/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ok("compare", home / "run", "--methods", "ce", "--protocol", "authors")
    ok("fit", "--resume", "--out", home / "run", "--data-root", moved, "--method", "ce")

    # Other data under the run's name is refused by the manifest's hashes.
    first = sorted((moved / "train").iterdir())[0]
    sorted(first.iterdir())[-1].unlink()
    result = run_cli("compare", home / "run", "--methods", "ce", "--protocol", "authors")
    assert result.exit_code != 0
    assert "differs from the one it was trained on" in flat(result.output)
