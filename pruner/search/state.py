"""Search checkpoints: what an interrupted search resumes from, as data only.

A checkpoint holds JSON settings and every evaluation as arrays (NPZ read with allow_pickle=False), so a run
directory from elsewhere cannot run code. Resuming replays the finished generations with the same seed, each
evaluation answered from the checkpoint (`Evaluations.replaying`); NSGA-II, deterministic given its seed and
the objectives, reaches the same state as the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from profiler.errors import UserError

CHECKPOINT = "checkpoint.npz"
OLD_CHECKPOINT = "checkpoint.pkl"  # an older jcw's pickled checkpoint: never read (unpickling can run code)
CHECKPOINT_VERSION = 3
Objectives = Callable[[np.ndarray], np.ndarray]  # X [n, d] -> F [n, 2]


class CheckpointError(UserError, ValueError):
    """A search checkpoint that cannot be read, or belongs to another run."""


@dataclass
class Evaluations:
    """Every batch of candidates the search evaluated, in order, with its objectives: what a checkpoint keeps so a
    resumed search replays its finished generations instead of evaluating them again."""

    X: list[np.ndarray] = field(default_factory=list)
    F: list[np.ndarray] = field(default_factory=list)

    def recording(self, objectives: Objectives) -> Objectives:
        """The objectives function, its evaluations appended here."""

        def evaluate(X: np.ndarray) -> np.ndarray:
            F = np.asarray(objectives(X), dtype=float)
            self.X.append(X)
            self.F.append(F)
            return F

        return evaluate

    def replaying(self, path: Path) -> Objectives:
        """An objectives function answered from these evaluations in order, each batch checked to be the one asked
        for."""
        batches = iter(list(zip(self.X, self.F, strict=True)))

        def evaluate(X: np.ndarray) -> np.ndarray:
            saved_X, saved_F = next(batches, (None, None))
            if saved_X is None or not np.array_equal(saved_X, X):
                raise CheckpointError(f"{path}: its evaluations do not replay this run's candidates; use another "
                                      "run directory")
            return saved_F

        return evaluate



def save_state(
    path: Path, settings: dict, anchors: np.ndarray | None, ref_point: np.ndarray, generations: int,
    evaluations: Evaluations,
) -> None:
    """Write the settings, anchors, reference point, generations done (JSON) and evaluations (arrays), atomically."""
    header = {
        "version": CHECKPOINT_VERSION,
        "settings": settings,
        "anchors": None if anchors is None else anchors.tolist(),
        "ref_point": ref_point.tolist(),
        "generations": generations,
    }
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, header=np.array(json.dumps(header)), X=np.vstack(evaluations.X),
                            F=np.vstack(evaluations.F), sizes=np.array([len(x) for x in evaluations.X]))
    os.replace(tmp, path)


def load_state(path: Path, settings: dict) -> tuple[np.ndarray | None, np.ndarray, int, Evaluations]:
    """Anchors, reference point, generations done and evaluations of a checkpoint whose settings are these.

    Read as data only; anything unreadable, malformed or from another run is a CheckpointError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:  # a TypeError when it is a single array, not an archive
            header = json.loads(str(z["header"][()]))
            X, F, sizes = z["X"], z["F"], z["sizes"]
    except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as err:
        why = (str(err).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable search checkpoint ({type(err).__name__}: {why}); use "
                              "another run directory") from None
    if not isinstance(header, dict) or header.get("version") != CHECKPOINT_VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise CheckpointError(f"{path}: checkpoint version {version!r}, expected {CHECKPOINT_VERSION}; use "
                              "another run directory")
    saved = header.get("settings")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: malformed checkpoint (settings); use another run directory")
    saved_config = saved["config"] if isinstance(saved.get("config"), dict) else {}
    differ = [k for k in settings["config"] if saved_config.get(k) != settings["config"][k]]
    differ += [k for k in settings if k != "config" and saved.get(k) != settings[k]]
    if differ:
        raise CheckpointError(f"{path} belongs to a run with different {', '.join(differ)}: use another run directory")
    anchors, ref_point, generations = header.get("anchors"), header.get("ref_point"), header.get("generations")
    n_free = len(settings["lower"]) - sum(settings["fixed_mask"])
    checks = {
        "anchors": anchors is None or (isinstance(anchors, list) and anchors and all(map(_finite, anchors))),
        "ref_point": isinstance(ref_point, list) and len(ref_point) == 2 and all(map(_finite, ref_point)),
        "generations": isinstance(generations, int) and not isinstance(generations, bool) and generations >= 1,
        "X": X.ndim == 2 and X.shape[1] == n_free and np.issubdtype(X.dtype, np.integer),
        "F": F.shape == (len(X), 2) and np.issubdtype(F.dtype, np.floating) and bool(np.isfinite(F).all()),
        "sizes": sizes.ndim == 1 and np.issubdtype(sizes.dtype, np.integer) and (sizes >= 0).all()
        and sizes.sum() == len(X),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise CheckpointError(f"{path}: malformed checkpoint ({', '.join(bad)}); use another run directory")
    cuts = np.cumsum(sizes)[:-1]
    evaluations = Evaluations(np.split(X.astype(int), cuts), np.split(F.astype(float), cuts))
    anchors = None if anchors is None else np.array(anchors, dtype=float)
    return anchors, np.array(ref_point, dtype=float), generations, evaluations


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)



def refuse_old_checkpoint(run_dir: Path) -> None:
    """An older jcw's pickled checkpoint in `run_dir` is refused, never read (unpickling can run code)."""
    if (run_dir / OLD_CHECKPOINT).exists():
        raise CheckpointError(f"{run_dir / OLD_CHECKPOINT}: a pickled checkpoint of an older jcw, not read "
                              "(unpickling can run code); use another run directory")


def check_run(path: Path, record: dict) -> None:
    """Record a search's inputs (`record`, JSON values) in its run directory's `path` (run.json), or refuse to resume
    a run of other inputs, naming the file."""
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: unreadable ({err}); use another run directory") from None
        differ = [key for key in record if not isinstance(saved, dict) or saved.get(key) != record[key]]
        if differ:
            raise UserError(f"{path}: this run directory holds a search of another {', '.join(differ)}; resume it "
                            "with the same settings or use another run directory")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
