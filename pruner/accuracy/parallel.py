"""Candidates' accuracy estimates scored on several worker processes (CPU cores or GPUs) at once.

Engine: a process pool from the standard library (concurrent.futures.ProcessPoolExecutor) over torch's
multiprocessing with the spawn start method, chosen over Ray (~200 MB installed) and dask[distributed] (a
scheduler and a dozen packages) because it needs no new dependency and does the one thing needed here: map
independent, seconds-long scores over a few local processes. torch's pickler hands tensors to the workers
through shared memory (CPU) or CUDA IPC, and spawn is the start method CUDA requires. Several machines would
need Ray or Dask; one machine with several GPUs does not.

Each worker receives the score (model, search space, data) once, in its initializer, then only gene vectors. A
model (or data) whose classes live in a user's file (`--model net.py:build`) unpickles in a worker because the
worker first imports the files it needs, by path and under the module names the parent gave them (UserFiles).
Results come back in submission order and each candidate's score depends on nothing but its genes, so the same
seed gives the same search with any number of workers, provided each worker runs torch with the same thread
count as a single process would (float sums differ in the last bit with the thread count): `threads` defaults
to the parent's count. With W workers on C cores pass threads=C // W to avoid oversubscribing the cores.
No GPU exists where this is developed: the one-GPU-per-worker placement is written but tested on CPU only.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from profiler.errors import UserError
from pruner.accuracy.train import Evaluation
from pruner.model.sources import import_files, imported_files

_score: Callable[[np.ndarray], Evaluation] | None = None  # a worker process's score, set by its initializer


@dataclasses.dataclass(frozen=True)
class UserFiles:
    """The user's files a score's classes and functions come from. Unpickling it imports them (its __reduce__):
    passed to a worker before the score, it makes them importable there before the score is unpickled."""

    paths: tuple[str, ...]

    @classmethod
    def of(cls, obj: object) -> UserFiles:
        """The files, among those this process imported (pruner.model.sources), that `obj` refers to."""
        names = _ModuleNames.of(obj)
        return cls(tuple(str(path) for name, path in imported_files().items() if name in names))

    def __reduce__(self):
        return _imported, (self.paths,)


def _imported(paths: tuple[str, ...]) -> UserFiles:
    import_files([Path(p) for p in paths])
    return UserFiles(paths)


class _ModuleNames(pickle.Pickler):
    """A pickling into nothing that notes the module of everything pickled (tensors' data skipped)."""

    class _Nowhere:
        def write(self, data: bytes) -> int:
            return len(data)

    def __init__(self) -> None:
        super().__init__(self._Nowhere(), protocol=pickle.HIGHEST_PROTOCOL)
        self.names: set[str] = set()

    def reducer_override(self, obj: object):
        if isinstance(obj, torch.Tensor):
            return tuple, ()
        self.names |= {getattr(obj, "__module__", None), type(obj).__module__} - {None}
        return NotImplemented

    @classmethod
    def of(cls, obj: object) -> set[str]:
        """The modules `obj` refers to; none when it cannot be pickled (ScorePool.map then says so)."""
        names = cls()
        try:
            names.dump(obj)
        except Exception:  # anything a score refuses to pickle is reported by the real pickling
            return set()
        return names.names


def _start_worker(files: UserFiles, score: Callable[[np.ndarray], Evaluation], devices: mp.Queue,
                  threads: int) -> None:
    """Worker initializer: keep the score (`files`, unpickled first, imported the user's files it needs), placed on
    the device taken from `devices`, with `threads` threads."""
    global _score
    torch.set_num_threads(threads)
    _score = score.on(devices.get())


def _score_candidate(x: np.ndarray) -> Evaluation:
    return _score(x)


def worker_devices(device: torch.device | None, workers: int) -> list[torch.device | None]:
    """One device per worker: "cuda" without an index spreads the workers over the GPUs (round robin), any
    other device (None: the model's own) is shared by all workers."""
    if device is not None and device.type == "cuda" and device.index is None:
        return [torch.device("cuda", i % torch.cuda.device_count()) for i in range(workers)]
    return [device] * workers


@dataclasses.dataclass(eq=False)
class ScorePool:
    """`workers` processes, each holding `score` placed on its device (`score.on(device)`), scoring gene vectors.

    Start it once and reuse it: starting a worker imports torch and receives the model, a few seconds each.
    """

    score: Callable[[np.ndarray], Evaluation]
    workers: int
    threads: int | None = None
    executor: ProcessPoolExecutor = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        context = mp.get_context("spawn")
        devices = context.Queue()
        for device in worker_devices(self.score.device, self.workers):
            devices.put(device)
        threads = torch.get_num_threads() if self.threads is None else self.threads
        files = UserFiles.of(self.score)
        self.executor = ProcessPoolExecutor(self.workers, context, _start_worker, (files, self.score, devices,
                                                                                   threads))

    def map(self, rows: Sequence[np.ndarray]) -> list[Evaluation]:
        """The score of each gene vector, in order."""
        try:  # the first submission starts the workers, pickling the score
            futures = [self.executor.submit(_score_candidate, x) for x in rows]
        except (pickle.PicklingError, AttributeError) as err:  # AttributeError: "Can't pickle local object"
            self.close()
            raise UserError(f"cannot send the estimator to worker processes ({err}); "
                            "define its functions at module level, or use one worker") from None
        return [future.result() for future in futures]

    def close(self) -> None:
        """Stop the worker processes."""
        self.executor.shutdown(cancel_futures=True)
