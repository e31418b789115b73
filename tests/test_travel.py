"""A run folder travels: its config names the data absolutely, and data that moved is
re-pointed by the run's config (or `fit --resume --data-root`), checked by the manifest's hashes
rather than by the path's spelling."""

from __future__ import annotations

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

    # The data moves: the run says where it looked; re-pointed in config.yaml, it works again.
    moved = tmp_path / "moved"
    (home / "data").rename(moved)
    result = run_cli("compare", home / "run", "--methods", "ce", "--protocol", "authors")
    assert result.exit_code != 0 and str(home / "data") in flat(result.output)
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
