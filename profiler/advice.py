"""A warning a user can act on: what is weak, its likely cause and the fix, printed as one line and kept as JSON
(predictor files, reports), so every command that finds a weakness says it the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass

NOISE_FIX = ("more repeats (devices.yaml: repeats, rounds), longer samples (min_sample_ms), a quieter machine, or, on "
             "the emulated ARM device, its instruction clock (clock: instructions)")
"""What helps a device whose measurements do not repeat, whichever check found it."""


@dataclass(frozen=True)
class Advice:
    """One warning: `what` was found (with its numbers), its likely `cause` and the `fix`."""

    what: str
    cause: str
    fix: str

    def __str__(self) -> str:
        return f"warning: {self.what}; likely cause: {self.cause}; fix: {self.fix}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> Advice:
        return cls(str(record.get("what", "")), str(record.get("cause", "")), str(record.get("fix", "")))
