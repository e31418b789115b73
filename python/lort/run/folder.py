"""A run folder: the files a ``lort fit`` run owns, the state file that says which phases
are done and what every file held when lort wrote it, the lock that keeps two commands from
writing one folder, and the rules for reusing a folder (``--resume``, ``--overwrite``).

What lort promises about a run folder:

- every file is written through a temp file and a rename (:mod:`lort.files`), and its size and
  sha256 are recorded in ``state.json``; every file lort reads back is checked against that
  record first, so a damaged or missing file is an error naming it (or, where lort can derive
  it again, rebuilt with a note), never a number computed from it; a folder without
  ``state.json``, or a file it holds no record of, is read by no command; a file's new record
  is written as pending before its rename, so a kill between the two leaves it vouched for;
- the outputs of one stage 2 (:data:`STAGE2_OUTPUTS`) are one unit: while a write of them is
  unfinished, every one of them is refused (:meth:`RunFolder.stage2_outputs`);
- the checkpoints are data: they are loaded as tensors and plain values only, so a file that
  would build any other object (and could so run code) is refused;
- one command writes a folder at a time (``.lort.lock``, held with an exclusive flock, holds
  its pid; a lock left by a process that no longer runs is taken over with a note, by one
  command only);
- ``--overwrite`` removes only a lort run (recognised by ``state.json``) and only when every
  entry in it is one lort writes; anything else in the folder is never touched;
- a command that fails on bad input changes nothing: everything is checked before the first
  byte is written; temp files a kill left behind are removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lort import files
from lort.config import FitConfig, load_yaml, resolve, run_values
from lort.errors import DamagedFileError, InputError

STATE = "state.json"
LOCK = ".lort.lock"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
STAGE1 = "stage1.ckpt"
# The feature cache: one .npy per split and view in features/ (``train.npy``, ``train_flip.npy``
# ...), which readers map instead of loading, listed by its index, written after them
# (:mod:`lort.stage1.features`).
FEATURES = "features/index.json"
FEATURES_DIR = "features"
# The cache of runs made before that: one npz, loaded whole. Still read.
OLD_FEATURES = "features.npz"
# The labels of every split, aligned with the feature cache's rows: what compare and sweep need
# of the data when its images are gone.
SPLIT_LABELS = "split_labels.npz"
REPORT = "report.json"
HISTORY = "history.csv"
RELIABILITY = "figures/reliability.png"
# The files a finished run owns besides the state file, in the order report.json lists them.
RUN_FILES = (
    CONFIG,
    MANIFEST,
    STAGE1,
    FEATURES,
    SPLIT_LABELS,
    "stage2.pt",
    "logits.npy",
    "labels.npy",
    "train_counts.npy",
    HISTORY,
    REPORT,
)
# Names no other program gives its files: a folder holding one of them is a lort run.
LORT_ONLY = (STAGE1, "stage2.pt")
# Everything lort writes into a run folder (glob patterns relative to it): the run's files,
# then what `lort compare` and `lort sweep` add (their points are named by lort.experiments.points).
OWNED = (
    STATE,
    LOCK,
    *RUN_FILES,
    "compare.json",
    "compare.csv",
    "compare-*.json",
    "compare-*.csv",
    "sweep-*.json",
    "sweep-*.csv",
    "compare/*.json",
    "compare/*.head.pt",
    "sweep/*.json",
    "figures/*.png",
    "tensorboard/*.lort",
    f"{FEATURES_DIR}/*.npy",
    OLD_FEATURES,
)
OWNED_DIRS = ("compare", "sweep", "figures", "tensorboard", FEATURES_DIR)
# Files a user may edit (the resolved options): not hash-recorded; their content is checked
# instead (types, and what stage 1 was trained with against the stage-1 checkpoint).
EDITABLE = (CONFIG,)
# What a stage-2 re-training on a finished run reads (``lort compare`` / ``lort sweep``).
RETRAIN_NEEDS = (CONFIG, MANIFEST, STAGE1, FEATURES, REPORT)
# What `lort predict` and `lort export` read: the trained classifier, no data or cache.
INFERENCE_NEEDS = (CONFIG, MANIFEST, STAGE1, "stage2.pt", "train_counts.npy", REPORT)
# What one stage 2 writes, as one unit (:meth:`RunFolder.stage2_outputs`), with RELIABILITY.
STAGE2_OUTPUTS = ("stage2.pt", "logits.npy", "labels.npy", "train_counts.npy", HISTORY, REPORT)
# Files lort can make again from the others: fit rebuilds them with a note when damaged.
DERIVABLE = tuple(f for f in RUN_FILES if f not in (CONFIG, MANIFEST, STAGE1))


def derivable(name: str) -> bool:
    """Whether fit can make ``name`` again (:data:`DERIVABLE`, the feature cache's arrays)."""
    return name in DERIVABLE or name == OLD_FEATURES or name.startswith(f"{FEATURES_DIR}/")


def present(root: Path, name: str) -> bool:
    """Whether the run in ``root`` holds ``name`` (the feature cache in either layout)."""
    return (root / name).is_file() or (name == FEATURES and (root / OLD_FEATURES).is_file())


# Options that shape stage 1 and the feature cache: a resumed run must keep them. Not
# ``data_root``: the data may move (a run folder travels); the split rebuilt from wherever it
# now is must match the manifest's hashes (:data:`SPLIT_KEYS`), which is what stage 1 depends on.
FROZEN = (
    "dataset",
    "imbalance_ratio",
    "lt_split",
    "val_split",
    "val_fraction",
    "seed",
    "arch",
    "stage1_loss",
    "stage1_schedule",
    "stage1",
    "pretrained",
    "weights",
    "freeze_backbone",
    "backbone_lr_scale",
    "cache_dtype",
)

# What state.json holds (:func:`lort.files.check_shape`): the phases done, what each file held
# when lort wrote it (and, between a temp file's record and its rename, what it is to hold),
# each phase's information and the unit being written.
_HELD = {"size": int, "sha256": str}
STATE_SHAPE = {
    "done": [str],
    "?files": {"*": {"?size": int, "?sha256": str, "?pending": _HELD}},
    "?info": {"*": dict},
    "?writing": str,
}
_NONE = type(None)
MANIFEST_SHAPE = {
    "?num_classes": int,
    "?class_names": [str],
    "?train_counts": [int],
    "?test_total": int,
    "?kept_sha256": (str, _NONE),
    "?val_sha256": (str, _NONE),  # None: no validation split
    "?labels_sha256": (str, _NONE),
}
# report.json as its readers use it (the rest is shown as it is).
REPORT_SHAPE = {
    "method": {"name": str},
    "?config": dict,
    "?smooth": (dict, _NONE),
    "?hyper": (dict, _NONE),
    "?stage2_epoch": (dict, _NONE),
    "?baselines": dict,
    "?results": dict,
    "?calibration": (dict, _NONE),
    "?timings": dict,
    "?input": (dict, _NONE),
    "?flip_tta": bool,
    "?notes": [str],
    "?files": [str],
}

Note = Callable[[str], None]


def read_config(folder: RunFolder) -> dict[str, Any]:
    """The run's saved options (config.yaml), keys it predates filled in as runs made before
    them had them (:func:`lort.config.run_values`)."""

    return run_values(load_yaml(folder.verify(CONFIG)))


def resume_values(out: Path, file_values: dict[str, Any]) -> dict[str, Any]:
    """The option values a resumed run starts from: its saved config, then the config file
    given now. Flags still override both (e.g. ``--method``)."""
    if not (out / CONFIG).is_file() or not (out / STATE).is_file():
        return file_values  # (no run to resume: fit says so, naming what is missing)
    return read_config(RunFolder(out)) | file_values


def changed_frozen(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """What ``now`` changes of the options stage 1 was trained with (``saved``, a run's saved
    config, read as :func:`lort.config.run_values` says), if anything."""

    saved, now = run_values(saved), run_values(now)
    changed = [k for k in FROZEN if saved.get(k) != now.get(k)]
    if not changed:
        return None
    return "; ".join(f"{k}: run has {saved.get(k)!r}, asked {now.get(k)!r}" for k in changed)


def require_finished(root: Path, needs: tuple[str, ...]) -> None:
    """InputError saying what to do unless ``root`` is a run folder holding ``needs`` (and
    the ``state.json`` they are checked against)."""
    if not root.is_dir():
        why = "not a directory" if root.exists() else "no such directory"
        raise InputError(
            f"{root} is not a run folder ({why}); make one with `lort fit --out NEW_FOLDER`"
        )
    missing = [n for n in needs if not present(root, n)]
    if not (root / STATE).is_file() and len(missing) < len(needs):
        raise InputError(no_state(root))
    if missing:
        raise InputError(
            f"{root} is not a finished lort run (no {', '.join(missing)}); run "
            f"`lort fit --out {root}` first (or `lort fit --resume --out {root}` to finish it)"
        )


def check_config_matches_stage1(root: Path, stage1: dict[str, Any], now: dict[str, Any]) -> None:
    """A finished run's config.yaml (``now``) against the config its stage-1 checkpoint was
    trained with: config.yaml may be edited, but not in what stage 1 depends on."""
    changed = changed_frozen(stage1, now)
    if changed:
        raise InputError(
            f"{root}/config.yaml no longer matches what stage 1 was trained with ({changed}); "
            "put those values back (the run's report.json holds its config)"
        )


def check_resume(root: Path, now: dict[str, Any]) -> None:
    """Before anything is written: a resumed run may change stage 2 and the evaluation, not
    what stage 1 was trained with (as its checkpoint records it, else its saved config)."""
    if not (root / STATE).is_file():  # nothing to resume, or no lort run: one line, here
        check_for_fit(root, resume=True, overwrite=False)
        raise InputError(no_state(root))
    folder = RunFolder(root)
    st = folder.state()
    if not (root / CONFIG).exists() and (st["done"] or st.get("files")):
        # config.yaml holds the run's method and stage-2 settings: without it a resumed run
        # would go on with the defaults, another run than this one
        raise InputError(
            f"--resume: {root / CONFIG} is missing, and it holds the options the run was made "
            f"with (its method among them); put it back (the run's report.json holds them "
            "under config), or start a new run with another --out"
        )
    if (root / STAGE1).is_file() or folder.done("stage1"):
        saved = folder.load_torch(STAGE1)["config"]
    elif (root / CONFIG).exists():
        saved = read_config(folder)
    else:
        return
    what = changed_frozen(saved, now)
    if what:
        raise InputError(
            f"--resume cannot change what stage 1 was trained with ({what}); drop those "
            "options, or start a new run with another --out"
        )


# The manifest's record of the split: what stage 1 and the feature cache were made from.
SPLIT_KEYS = ("kept_sha256", "val_sha256", "labels_sha256", "train_counts", "test_total")


def split_changed(stored: dict[str, Any], rebuilt: dict[str, Any]) -> str | None:
    """Which of :data:`SPLIT_KEYS` the manifest ``rebuilt`` from the data now differs in from
    the run's ``stored`` one, if any."""
    changed = [k for k in SPLIT_KEYS if stored.get(k) != rebuilt.get(k)]
    return ", ".join(changed) if changed else None


def check_manifest(root: Path, rebuilt: dict[str, Any]) -> bool:
    """Before a resumed run writes anything: whether the run holds its manifest (which is
    then never written again), after checking that the split rebuilt from the data now
    (``rebuilt``) is the one it records. A damaged manifest, or another split (the training
    images changed), is an InputError: stage 1 was trained on the recorded split."""
    folder = RunFolder(root)
    st = folder.state()
    if (
        not folder.path(MANIFEST).exists()
        and "size" not in st.get("files", {}).get(MANIFEST, {})
        and not st["done"]
    ):
        # a run stopped before it wrote one (a kill may have left its pending record, but
        # never a file): it is written now
        return False
    stored = folder.read_json(MANIFEST, MANIFEST_SHAPE)  # missing or damaged: one line
    changed = split_changed(stored, rebuilt)
    if changed:
        raise InputError(
            f"--resume: the data now gives another split than {folder.path(MANIFEST)} records "
            f"({changed} changed), and stage 1 was trained on the recorded one; put the data "
            f"back as it was, or start again with `lort fit --out {root} --overwrite`"
        )
    return True


@dataclass
class SavedRun:
    """A finished run as its folder holds it: the saved config (as saved, and resolved), the
    report and the manifest, each read through :meth:`RunFolder.verify`. The one reader of a
    finished run: re-training (:mod:`lort.run.finished`), inference (:mod:`lort.run.trained`)
    and pooling (``lort compare RUN1 RUN2``) all open runs through :func:`open_saved`."""

    root: Path
    folder: RunFolder
    raw_config: dict[str, Any]
    cfg: FitConfig
    report: dict[str, Any]
    manifest: dict[str, Any]

    def stage1(self) -> dict[str, Any]:
        """The stage-1 checkpoint, checked against config.yaml (which may be edited, but not
        in what stage 1 depends on)."""
        saved = self.folder.load_torch(STAGE1)
        check_config_matches_stage1(self.root, saved["config"], self.cfg.to_dict())
        return saved


def open_saved(root: Path, needs: tuple[str, ...]) -> SavedRun:
    """The finished run in ``root``, holding ``needs``; InputError saying what to do when it is
    not one."""

    root = Path(root)
    require_finished(root, needs)
    folder = RunFolder(root)
    raw = read_config(folder)
    cfg = resolve(raw, {})
    return SavedRun(
        root,
        folder,
        raw,
        cfg,
        folder.read_json(REPORT, REPORT_SHAPE),
        folder.read_json(MANIFEST, MANIFEST_SHAPE),
    )


def no_state(root: Path) -> str:
    """The one line for a folder without ``state.json``."""
    return (
        f"{root} is not a lort run: it has no {STATE}, the record every file lort reads is "
        "checked against, so lort reads nothing in it; put its state.json back, or make the "
        f"run again with `lort fit --out NEW_FOLDER`"
    )


def _not_regular_advice(root: Path) -> str:
    return (
        f"lort makes no links, pipes or devices in a run folder and reads none in {root}: "
        "put the file lort wrote back in its place (or move the run away), then run the "
        "command again"
    )


def _unreadable(p: Path, e: OSError) -> str:
    """A file lort cannot open (its permissions, say): nothing about the run is wrong."""
    return (
        f"cannot read {p} ({e.strerror or e}); make it readable to you, then run the "
        "command again (nothing in the run was changed)"
    )


def _advice(root: Path, name: str) -> str:
    if derivable(name):
        return f"`lort fit --resume --out {root}` makes it again"
    return f"the run cannot go on from it: start again with `lort fit --out {root} --overwrite`"


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def inside(self, name: str) -> Path:
        """The path lort writes ``name`` to, once no folder between the run and it is a
        symbolic link (lort makes none: a write through one would land outside the run)."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(f"{name!r} is no file of a run folder; lort reads none outside it")
        p = self.path(name)
        for below in reversed(Path(name).parents[:-1]):  # the run folder itself is the user's
            folder = self.root / below
            if folder.is_symlink():
                raise InputError(
                    f"{folder} is a symbolic link; lort writes only inside its run folder: "
                    "replace the link by a folder (or move it away) and run the command again"
                )
        return p

    # -- state ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What ``state.json`` holds: the phases done and the record of every file lort
        wrote. A folder without one is no lort run (DamagedFileError): nothing in it is
        read as lort's."""
        p = self.path(STATE)
        try:
            st: dict[str, Any] = files.read_json(p, STATE_SHAPE, follow=False)
        except FileNotFoundError:
            raise DamagedFileError(no_state(self.root), STATE) from None
        except files.NotRegularFile as e:
            raise DamagedFileError(f"{e}; {_not_regular_advice(self.root)}", STATE) from None
        except OSError as e:
            raise DamagedFileError(_unreadable(p, e), STATE) from None
        except ValueError as e:
            raise DamagedFileError(
                f"{p} is damaged ({e}); it records what the run has done and what its files "
                f"hold: start again with `lort fit --out {self.root} --overwrite`",
                STATE,
            ) from None
        return st

    def done(self, phase: str) -> bool:
        return phase in self.state()["done"]

    def mark_done(self, phase: str, **info: Any) -> None:
        st = self.state()
        if phase not in st["done"]:
            st["done"].append(phase)
        st.setdefault("info", {})[phase] = info
        files.write_json(self.path(STATE), st)

    def undo(self, phase: str) -> None:
        """Mark ``phase`` as not done (its output is to be made again)."""
        st = self.state()
        if phase in st["done"]:
            st["done"].remove(phase)
            files.write_json(self.path(STATE), st)

    # -- integrity -------------------------------------------------------------
    def _write(
        self, name: str, write: Callable[[files.BeforeRename | None], files.Written]
    ) -> None:
        """Write ``name`` (``write`` renames a temp file onto it) and record what it holds.
        The new content is recorded as pending just before the rename and as the file's
        after it: a kill between the two leaves a file that its record still vouches for."""
        self.inside(name)
        if name in EDITABLE:
            write(None)
            return
        self._record(name, write(self._pending(name)))

    def _pending(self, name: str) -> files.BeforeRename:
        """The hook that records ``name``'s new content as pending, just before its rename."""

        def pending(written: files.Written) -> None:
            st = self.state()
            entry = st.setdefault("files", {}).setdefault(name, {})
            entry["pending"] = {"size": written.size, "sha256": written.sha256}
            files.write_json(self.path(STATE), st)

        return pending

    def _record(self, name: str, written: files.Written) -> None:
        st = self.state()
        st.setdefault("files", {})[name] = {"size": written.size, "sha256": written.sha256}
        files.write_json(self.path(STATE), st)

    @contextmanager
    def write_arrays(
        self, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
    ) -> Iterator[dict[str, np.ndarray]]:
        """``.npy`` files (name: shape and dtype) filled in place by the block, through the
        memmaps it is given (:func:`lort.files.atomic_npy`), then renamed and recorded as
        :meth:`_write` does each file; none is renamed if the block fails."""
        with ExitStack() as stack:
            targets = {
                name: stack.enter_context(
                    files.atomic_npy(self.inside(name), shape, dtype, self._pending(name))
                )
                for name, (shape, dtype) in shapes.items()
            }
            yield {name: t.array for name, t in targets.items()}
        for name, t in targets.items():
            assert t.written is not None
            self._record(name, t.written)

    @contextmanager
    def stage2_outputs(self) -> Iterator[None]:
        """Write the outputs of one stage 2 (:data:`STAGE2_OUTPUTS` and the reliability
        figure) in the block, as one unit: ``state.json`` says they are being written until
        the block ends, and until then (a kill, an error) :meth:`verify` refuses every one of
        them, so that a reader never takes one stage 2's logits beside another's head or
        report."""
        for name in (*STAGE2_OUTPUTS, RELIABILITY):  # refused before the run is marked
            self.inside(name)
        st = self.state()
        st["writing"] = "stage2"
        files.write_json(self.path(STATE), st)
        # the figure of an earlier stage 2 is not this one's (a new one is drawn when calibrated)
        self.path(RELIABILITY).unlink(missing_ok=True)
        yield
        st = self.state()
        st.pop("writing", None)
        files.write_json(self.path(STATE), st)

    @contextmanager
    def consistent(self, names: tuple[str, ...]) -> Iterator[None]:
        """Read ``names`` in the block as one set: each read is checked against the record as
        it then is (:meth:`verify`), and the records of all of them must be the same after the
        block as before it, with no unit being written; else a DamagedFileError says another
        command (``lort keep``, a resumed fit) wrote the run while it was read, so that a
        reader never takes one stage 2's head beside another's report."""

        def records() -> tuple[Any, ...]:
            st = self.state()
            return st.get("writing"), [st.get("files", {}).get(n) for n in names]

        before = records()
        yield
        if before[0] is not None or records() != before:
            raise DamagedFileError(
                f"{self.root} was being written by another lort command (keep, or a resumed "
                "fit) while this one read it, so what it read may not belong together; run "
                "the command again once that one has finished",
                STATE,
            )

    def verify(self, name: str) -> Path:
        """The path of ``name`` once it matches what lort recorded writing (size, sha256; or
        the content recorded as pending, written but not yet recorded when a kill came);
        DamagedFileError naming it and saying what to do otherwise: when the folder has no
        ``state.json`` (then nothing in it is taken as lort's), when the record does not
        hold the file, and when it is one of the stage-2 outputs of a write that did not
        finish. Only :data:`EDITABLE` files are taken as they are (checked by content)."""
        st = self.state()
        p = self.inside(name)
        try:
            mode = p.lstat().st_mode
        except FileNotFoundError:
            raise DamagedFileError(f"{p} is missing; {_advice(self.root, name)}", name) from None
        except OSError as e:
            raise DamagedFileError(_unreadable(p, e), name) from None
        if not stat.S_ISREG(mode):
            raise DamagedFileError(
                f"{files.not_regular(p, mode)}; {_not_regular_advice(self.root)}", name
            )
        if name in EDITABLE:
            return p
        if name in STAGE2_OUTPUTS and st.get("writing") == "stage2":
            raise DamagedFileError(
                f"{p} is one of the stage-2 outputs ({', '.join(STAGE2_OUTPUTS)}) of a write "
                "that did not finish, so they may not belong together; re-run "
                f"`lort fit --resume --out {self.root}` to write them again",
                name,
            )
        record = st.get("files", {}).get(name)
        if not isinstance(record, dict):
            raise DamagedFileError(
                f"{p} is not in the run's record ({self.path(STATE)} holds no size and sha256 "
                f"for it), so lort cannot tell it is the file it wrote; "
                f"{_advice(self.root, name)}",
                name,
            )
        try:
            found = files.digest(p, follow=False)
        except files.NotRegularFile as e:
            raise DamagedFileError(f"{e}; {_not_regular_advice(self.root)}", name) from None
        except OSError as e:
            raise DamagedFileError(_unreadable(p, e), name) from None
        vouched = [(r.get("size"), r.get("sha256")) for r in (record, record.get("pending") or {})]
        if (found.size, found.sha256) not in vouched:
            what = "size" if found.size not in [v[0] for v in vouched] else "sha256"
            raise DamagedFileError(
                f"{p} is damaged: its {what} differs from what lort wrote; "
                f"{_advice(self.root, name)}",
                name,
            )
        return p

    def settle(self) -> None:
        """Finish the records of writes a kill interrupted between a file's rename and its
        record (call with the lock held): a file that holds its pending content is recorded
        as holding it; one that still holds its recorded content drops the pending one."""
        st = self.state()
        records = st.get("files", {})
        changed = False
        for name, record in list(records.items()):
            pending = record.get("pending") if isinstance(record, dict) else None
            if not pending:
                continue
            if "size" not in record and not self.path(name).exists():
                del records[name]  # killed before its first rename: the file was never there
                changed = True
                continue
            try:
                found = files.digest(self.path(name), follow=False)
            except (OSError, files.NotRegularFile):
                continue  # missing, unreadable or no regular file: verify says so when read
            now = {"size": found.size, "sha256": found.sha256}
            if now in (pending, {"size": record.get("size"), "sha256": record.get("sha256")}):
                records[name] = now
                changed = True
        if changed:
            files.write_json(self.path(STATE), st)

    def remove_leftovers(self, note: Note) -> None:
        """Remove the temp files of writes a kill interrupted (call with the lock held)."""
        found = [
            p
            for d in (self.root, *(self.root / s for s in OWNED_DIRS))
            if d.is_dir() and not d.is_symlink()
            for p in d.iterdir()
            if not p.is_symlink() and p.is_file() and files.TEMP_FILE.match(p.name)
        ]
        for p in found:
            p.unlink(missing_ok=True)
        if found:
            note(f"removed {len(found)} temp file(s) left by an interrupted write")

    # -- files ---------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        self._write(name, lambda hook: files.write_json(self.path(name), data, hook))

    def read_json(self, name: str, shape: files.Shape = dict) -> Any:
        """``name``, once verified, as JSON of ``shape`` (:func:`lort.files.read_json`)."""
        p = self.verify(name)
        try:
            return files.read_json(p, shape, follow=False)
        except files.NotRegularFile as e:
            raise DamagedFileError(f"{e}; {_not_regular_advice(self.root)}", name) from None
        except OSError as e:
            raise DamagedFileError(_unreadable(p, e), name) from None
        except ValueError as e:
            raise DamagedFileError(
                f"{p} is damaged ({e}); {_advice(self.root, name)}", name
            ) from None

    def write_yaml(self, name: str, data: Any) -> None:
        self._write(name, lambda hook: files.write_yaml(self.path(name), data, hook))

    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        self._write(name, lambda hook: files.write_csv(self.path(name), header, rows, hook))

    def write_npy(self, name: str, array: np.ndarray) -> None:
        self._write(name, lambda hook: files.write_npy(self.path(name), array, hook))

    def write_npz(self, name: str, **arrays: np.ndarray) -> None:
        self._write(name, lambda hook: files.write_npz(self.path(name), arrays, hook))

    def save_torch(self, name: str, obj: Any) -> None:
        self._write(name, lambda hook: files.save_torch(self.path(name), obj, hook))

    def load_torch(self, name: str) -> Any:
        p = self.verify(name)
        try:
            with files.open_regular(p, follow=False) as f:
                return files.torch_data(f)
        except files.NotPlainData as e:
            raise DamagedFileError(f"{p}: {e}; {_advice(self.root, name)}", name) from None
        except Exception as e:  # torch raises several kinds on a damaged file
            raise DamagedFileError(
                f"{p} is damaged ({type(e).__name__}); {_advice(self.root, name)}", name
            ) from None

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        p = self.verify(name)
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # zipfile and numpy raise several kinds on a damaged file
            raise DamagedFileError(
                f"{p} is damaged ({type(e).__name__}); {_advice(self.root, name)}", name
            ) from None

    def load_npy(self, name: str, mmap: bool = False, writable: bool = False) -> np.ndarray:
        """The array, mapped with ``mmap`` (copy on write with ``writable``: torch wraps it
        without a warning, and the file is never changed)."""
        p = self.verify(name)
        mode = ("c" if writable else "r") if mmap else None
        try:
            return files.load_npy(p, mmap_mode=mode, follow=False)
        except (OSError, ValueError) as e:
            raise DamagedFileError(
                f"{p} is damaged ({e}); {_advice(self.root, name)}", name
            ) from None

    # -- reuse rules ----------------------------------------------------------
    def unowned(self) -> list[str]:
        """Entries of the folder lort does not write (relative paths, sorted)."""
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_symlink():  # lort makes none: whatever it points to is not lort's
                out.append(f"{p.name} (a symbolic link)")
            elif p.is_dir() and p.name in OWNED_DIRS:
                for q in sorted(p.iterdir()):
                    rel = f"{p.name}/{q.name}"
                    if q.is_symlink():
                        out.append(f"{rel} (a symbolic link)")
                    elif not (q.is_file() and _owned(rel)):
                        out.append(rel + ("/" if q.is_dir() else ""))
            elif not (p.is_file() and _owned(p.name)):
                out.append(p.name + ("/" if p.is_dir() else ""))
        return out

    def clear(self) -> None:
        """Remove what lort wrote, except the lock the caller holds; an InputError, before
        anything is removed, if the folder holds anything else (:meth:`unowned`: symbolic
        links included, which are never followed)."""
        foreign = self.unowned()
        if foreign:
            listed = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise InputError(
                f"--overwrite removes only what lort wrote, but {self.root} also holds "
                f"{listed}; move those away or choose another --out"
            )
        for d in OWNED_DIRS:
            sub = self.root / d
            if sub.is_dir() and not sub.is_symlink():
                for q in sub.iterdir():
                    q.unlink()
                sub.rmdir()
        for p in self.root.iterdir():
            if p.name != LOCK:
                p.unlink()


def check_output(option: str, path: Path) -> None:
    """InputError unless ``path``, an output a command was asked to write, is a file no lort
    run owns: followed through its links, it must not be one of :data:`OWNED` of a folder
    holding ``state.json`` (writing it would destroy that run)."""
    target = Path(path).expanduser().resolve()
    for folder in list(target.parents)[:2]:  # OWNED names files at most one folder deep
        rel = target.relative_to(folder).as_posix()
        if (folder / STATE).is_file() and _owned(rel):
            via = "" if target == Path(path).absolute() else f" (it leads to {target})"
            raise InputError(
                f"{option} {path}{via} is the file {rel} of the lort run {folder}: writing it "
                "would destroy the run; choose a path outside the run's own files"
            )


def verify_given(path: Path) -> None:
    """A file a command was given by path (``lort analyze RUN/logits.npy``): when it is a file
    of a lort run (``state.json`` beside it, and a name lort writes or a record of it there),
    checked against the run's record first (:meth:`RunFolder.verify`), so that a damaged
    one is one line, never numbers."""
    target = Path(path).expanduser().resolve()
    root = target.parent
    if not (root / STATE).exists():
        # lort's own names beside it: a run that lost its record, whose files vouch for nothing
        if target.name in RUN_FILES and any((root / n).exists() for n in LORT_ONLY):
            raise InputError(no_state(root))
        return
    folder = RunFolder(root)
    if _owned(target.name) or target.name in folder.state().get("files", {}):
        folder.verify(target.name)


def _owned(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return files.TEMP_FILE.match(name) is not None or any(
        fnmatch.fnmatchcase(rel, pattern) for pattern in OWNED
    )


# --------------------------------------------------------------------------------------
# The lock, and opening a folder for `lort fit`.


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


@contextmanager
def locked(root: Path, note: Note) -> Iterator[None]:
    """Hold ``root/.lort.lock`` for the block: an exclusive ``flock`` on it (which the kernel
    releases when the process ends, however it ends), and this pid written in it. The file's
    flock is what makes taking over exclusive: two commands that find a lock left by a
    process that no longer runs cannot both take it. A lock held by another command, or
    naming a live process (a lort from before the flock), is an InputError."""
    lock = root / LOCK
    for _ in range(10):  # a lock removed between our open and our flock: open it again
        fd = _open_lock(root, lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _lock_pid(fd)
            os.close(fd)
            _in_use(root, lock, pid)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise InputError(f"cannot lock {root}: its lock file keeps changing; try again")
    try:
        pid = _lock_pid(fd)
        if pid > 0 and pid != os.getpid():
            if _pid_alive(pid):
                _in_use(root, lock, pid)
            note(f"took over the lock of {root}, left by process {pid}, which no longer runs")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a waiter then sees a new file
        os.close(fd)


def _open_lock(root: Path, lock: Path) -> int:
    """The lock file opened for reading and writing (made if missing), once it is a regular
    file: never through a symbolic link (which would truncate the file it leads to), never
    blocking on a FIFO."""
    flags = os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP and lock.is_symlink():
            mode = stat.S_IFLNK
        elif e.errno == errno.ENXIO:  # a FIFO no one reads
            mode = stat.S_IFIFO
        else:
            raise InputError(f"cannot lock {root}: {e.strerror}; choose another folder") from None
    else:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    raise InputError(
        f"cannot lock {root}: {files.not_regular(lock, mode)}, and lort makes its lock a plain "
        f"file; remove {lock} (lort never writes through it) and run the command again"
    )


def _lock_pid(fd: int) -> int:
    """The pid the open lock file holds; 0 when it holds none (or cannot be read)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0")
    except (OSError, ValueError):
        return 0


def _in_use(root: Path, lock: Path, pid: int) -> NoReturn:
    who = f"process {pid}" if pid > 0 else "another lort command"
    raise InputError(
        f"{root} is in use by {who} (lock file {lock}); wait for it to finish, or "
        f"remove {lock} if no lort command is running"
    )


def _make_dir(root: Path) -> bool:
    """Create ``root`` (and its parents); True if this call created it."""
    if root.is_dir():
        return False
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        if not root.is_dir():
            raise InputError(
                f"--out {root} is a file, not a folder; choose another --out"
            ) from None
        return False
    except OSError as e:
        why = "a part of it is a file" if e.errno == errno.ENOTDIR else e.strerror
        raise InputError(f"cannot create run folder {root}: {why}; choose another --out") from None
    return True


def check_out(root: Path) -> None:
    """What :func:`_make_dir` would say of ``root``, with nothing made (``lort fit
    --dry-run``): the folder, or the nearest folder above it that exists, must take a new entry.
    That is tried with an empty folder made and removed at once: the permission bits do not
    tell (root ignores them; a read-only file system does not show in them)."""
    if root.exists():
        if not root.is_dir():
            raise InputError(f"--out {root} is a file, not a folder; choose another --out")
        return
    above = root.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise InputError(
            f"cannot create run folder {root}: a part of it is a file; choose another --out"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lort-dry-run-", dir=above))
    except OSError as e:
        raise InputError(
            f"cannot create run folder {root}: {e.strerror}; choose another --out"
        ) from None


def check_for_fit(root: Path, *, resume: bool, overwrite: bool) -> None:
    """Whether a ``lort fit`` may use ``root`` (an existing folder or none) as its run folder,
    with nothing written: an existing, non-empty folder only with ``resume`` (a lort run whose
    state reads) or ``overwrite`` (a lort run holding only what lort writes)."""
    present = root.is_dir() and any(p.name != LOCK for p in root.iterdir())
    if not present:
        if resume:
            raise InputError(f"nothing to resume: {root} does not exist or is empty")
        return
    folder = RunFolder(root)
    if not (root / STATE).exists():
        raise InputError(
            f"{root} already exists and is not a lort run folder (no {STATE}); "
            "lort leaves it alone: choose another --out"
        )
    if resume:
        folder.state()  # readable, or a clear error
    elif overwrite:
        foreign = folder.unowned()
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise InputError(
                f"--overwrite removes only what lort wrote, but {root} also holds "
                f"{shown}; move those away or choose another --out"
            )
    else:
        raise InputError(
            f"run folder {root} already exists; pass --resume to continue it, "
            "--overwrite to start again, or choose another --out"
        )


@contextmanager
def open_for_fit(root: Path, *, resume: bool, overwrite: bool, note: Note) -> Iterator[RunFolder]:
    """The run folder of a ``lort fit``, locked for the block. An existing, non-empty folder is
    reused only with ``resume`` (a lort run) or ``overwrite`` (a lort run holding only what
    lort writes, which is removed): :func:`check_for_fit`. A folder this call created and left
    empty is removed."""
    created = _make_dir(root)
    try:
        with locked(root, note):
            folder = RunFolder(root)
            check_for_fit(root, resume=resume, overwrite=overwrite)
            if resume:
                folder.remove_leftovers(note)
                folder.settle()
            elif overwrite and (root / STATE).exists():
                folder.clear()
            if not (root / STATE).exists():
                files.write_json(root / STATE, {"done": []})
            yield folder
    finally:
        if created and not any(root.iterdir()):
            root.rmdir()
