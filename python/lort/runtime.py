"""Where a run executes: the device, and its rank under torch.distributed.

``torchrun --nproc_per_node N -m lort fit ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; the process group then uses NCCL on CUDA and gloo on the CPU.
Only rank 0 logs and writes."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from lort.errors import InputError
from lort.limits import MAX_THREADS, check_option_count, env_threads


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {
            "device": str(self.device),
            "world_size": self.world,
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return provenance() | info  # torch.__version__ names the build (+cu132)


def _git_commit(source: Path) -> str | None:
    """The commit of the checkout lort runs from (an editable install), None elsewhere."""
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    if done.returncode != 0 or len(commit) != 40:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, object]:
    """What made a result: lort's version (and commit, run from a checkout) and the versions
    of Python and the libraries the numbers depend on."""
    from lort import __version__

    versions: dict[str, object] = {"lort": __version__, "python": platform.python_version()}
    source = Path(__file__).resolve().parents[2]
    if (source / ".git").exists():
        versions["lort_commit"] = _git_commit(source)
    for name in ("torch", "torchvision", "numpy", "timm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads: ``threads``, else LORT_NUM_THREADS, else torch's default."""
    if threads is None:
        threads = env_threads()
    if threads is not None:
        check_option_count(threads, "threads", 1, MAX_THREADS)
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def threads_line() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY", "unset").lower()
    return f"{torch.get_num_threads()} (torch intra-op), OpenMP wait policy {policy}"


def pick_device(flag: str, local_rank: int = 0) -> torch.device:
    if flag == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    if flag == "cuda" or (flag == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start(device_flag: str) -> Runtime:
    """The runtime of this process; joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(pick_device(device_flag))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_flag, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def stop(rt: Runtime, *, together: bool = True) -> None:
    """Leave the process group; after a run that went well, all ranks together (a rank that
    tears gloo down while another still writes can abort at exit: "terminate called without
    an active exception"). After a failure no rank waits for the others."""
    if rt.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


Progress = Callable[[str, int, int, float, float], None]
"""progress(phase, step, total_steps, loss, accuracy) after every step."""
