"""``lort fit --log tensorboard``: the run's history.csv as TensorBoard scalars in RUN/tensorboard/.

Written once stage 2 is done, from the same rows as history.csv (so the two never disagree):
``stage1/train_loss``, ``stage1/train_accuracy``, ``stage1/lr`` and ``stage2/val_accuracy``,
``stage2/val_nll``, each at its epoch. The event file is written under a temporary name inside
the run folder and renamed into place; the event files of an earlier fit (their names end in
:data:`SUFFIX`) are removed after, nothing else in the folder.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path
from typing import Any

from lort.run.folder import RunFolder

FOLDER = "tensorboard"
SUFFIX = ".lort"  # the suffix of the event files lort writes (TensorBoard reads any name)


def write_tensorboard(folder: RunFolder, header: list[str], rows: list[list[Any]]) -> Path:
    """RUN/tensorboard/ holding one event file of ``rows`` (history.csv's); its path."""
    from torch.utils.tensorboard import SummaryWriter

    target = folder.inside(f"{FOLDER}/x").parent
    target.mkdir(exist_ok=True)
    earlier = [p for p in target.iterdir() if p.name.endswith(SUFFIX) and p.is_file()]
    temp = target / f".events.lort-{secrets.token_hex(4)}.tmp"
    temp.mkdir()
    try:
        writer = SummaryWriter(log_dir=str(temp), filename_suffix=SUFFIX)
        for row in rows:
            record = dict(zip(header, row, strict=True))
            stage, epoch = record.pop("stage"), int(record.pop("epoch"))
            for key, value in record.items():
                if value is not None and math.isfinite(float(value)):
                    writer.add_scalar(f"{stage}/{key}", float(value), epoch)
        writer.close()
        (made,) = list(temp.iterdir())
        final = target / made.name
        os.replace(made, final)
    finally:
        for p in temp.iterdir():
            p.unlink()
        temp.rmdir()
    for p in earlier:
        if p != final:
            p.unlink()
    return final
