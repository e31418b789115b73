"""``torchrun -m lort fit``: two processes on the CPU (gloo), rank 0 writes and logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TIMEOUT_S = 180
WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    work = tmp_path_factory.mktemp("ddp")
    out = work / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(WORLD),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "lort",
        "fit",
        "--out",
        str(out),
        "--epochs1",
        "2",
        "--epochs2",
        "2",
        "--smooth",
        "0.5",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc, out


def test_ddp_run_writes_one_report_with_every_test_row(
    ddp_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    proc, out = ddp_run
    assert "Traceback" not in proc.stderr
    reports = list(out.parent.rglob("report.json"))
    assert reports == [out / "report.json"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]

    report = json.loads((out / "report.json").read_text())
    assert report["runtime"]["world_size"] == WORLD
    assert report["runtime"]["device"] == "cpu"
    test_rows = report["manifest"]["test_total"]
    assert test_rows == 300
    # each rank evaluates a shard; the merged accumulator holds every row once
    assert report["results"]["rows"] == test_rows
    assert sum(report["results"]["per_class"]["pos_count"]) == test_rows
    logits = np.load(out / "logits.npy")
    labels = np.load(out / "labels.npy")
    assert logits.shape == (test_rows, 10) and labels.shape == (test_rows,)
    accuracy = float((logits.argmax(1) == labels).mean())
    assert report["results"]["overall"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == ["stage1", "features"]


def test_ddp_only_rank0_prints(ddp_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    """README: "only rank 0 logs and writes" -- one results table, one closing line."""
    proc, _ = ddp_run
    output = proc.stdout + proc.stderr
    assert output.count("run folder") == 1, output
    assert output.count("top-1 acc") == 1, output
    assert output.count("done in") == 1, output
