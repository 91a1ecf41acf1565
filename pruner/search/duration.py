"""How long a search runs: its size before it starts (methods x generations x population evaluations), and, after
its first generation, an estimate of the rest, said above the progress bars so a user can stop and shrink it early."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def readable(seconds: float) -> str:
    """A duration as a person says it: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Duration:
    """A search's size, said at once, and its remaining time, said once after the first generation it runs.

    `generations` and `population` are per method; the joint method's weight stage spends its share of the same
    budget. `clock` gives seconds (time.monotonic; tests pass their own), `say` prints a line.
    """

    def __init__(self, methods: Sequence[str], generations: int, population: int, uniform: int,
                 say: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.methods, self.generations, self.population, self.uniform = list(methods), generations, population, uniform
        self.say, self.clock = say, clock
        self.started: float | None = None
        self.estimated = False

    def size(self) -> None:
        """Say how many candidates the search scores at most."""
        evaluations = len(self.methods) * self.generations * self.population
        self.say(f"search: {len(self.methods)} methods ({', '.join(self.methods)}) x {self.generations} generations "
                 f"x {self.population} candidates = {evaluations:,} evaluations at most (a candidate seen before is "
                 f"not scored again), then {self.uniform} uniform width multipliers")

    def method_started(self) -> None:
        """Mark the start of a method's generations run in this process (a resumed run replays the others)."""
        self.started = self.clock()

    def generation_done(self, method: str, done: int, new: int) -> None:
        """After a generation: `done` generations of `method` finished, `new` of them run in this process. The first
        time, say the time it took and the estimated time left."""
        if self.estimated or self.started is None or new < 1:
            return
        self.estimated = True
        per_generation = (self.clock() - self.started) / new
        left = (len(self.methods) - self.methods.index(method)) * self.generations - done
        self.say(f"search: a generation takes about {readable(per_generation)}; about "
                 f"{readable(per_generation * left)} for the {left} generations left")
