"""Results tables: one CSV per device, one row per measured kernel; atomic appends and resume."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from profiler.errors import UserError
from profiler.kernel import FIELDS, KernelSpec

# Device state while measuring, where the device reports it (adb phones); tables written before them read as empty.
OPTIONAL = {"governor": "", "freq_mhz": float("nan"), "temp_c": float("nan"), "throttled": False}
COLUMNS = ["device", "runtime", "flavour", *FIELDS, "latency_ms", "iqr_ms", "cv", "model_ms", "baseline_ms",
           "runs", "timestamp", "version", *OPTIONAL]


class ResultsStore:
    """The measurements of one device, kept in `path`; rows are never lost or overwritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._table = self._read() if self.path.exists() else pd.DataFrame(columns=COLUMNS)

    def _read(self) -> pd.DataFrame:
        try:
            table = pd.read_csv(self.path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{self.path}: corrupt results table ({err}); it was left untouched: "
                            "fix it or move it aside to start a new one") from None
        missing = [c for c in COLUMNS if c not in table.columns and c not in OPTIONAL]
        if missing:
            raise UserError(f"{self.path}: not a results table, missing columns {missing}; it was left untouched")
        for column, default in OPTIONAL.items():
            if column not in table.columns:
                table[column] = default
        if table[["latency_ms", *FIELDS]].isna().any().any():
            bad = table.index[table[["latency_ms", *FIELDS]].isna().any(axis=1)].tolist()
            raise UserError(f"{self.path}: corrupt results table, empty cells in rows {bad[:10]}; left untouched")
        return table

    @property
    def table(self) -> pd.DataFrame:
        return self._table.copy()

    def measured(self) -> set[tuple]:
        """Keys (KernelSpec.key) of the kernels already in the table."""
        return {KernelSpec.from_row(row).key() for row in self._table[list(FIELDS)].to_dict("records")}

    def append(self, rows: list[dict]) -> None:
        """Add rows, rewriting the file through a temporary file and an atomic rename."""
        if not rows:
            return
        new = pd.DataFrame(rows, columns=COLUMNS)
        table = new if self._table.empty else pd.concat([self._table, new], ignore_index=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                table.to_csv(f, index=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._table = table
