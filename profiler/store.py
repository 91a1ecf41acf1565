"""Results tables: one CSV per device, one row per measured kernel; locked atomic appends and resume.

Several writers may share a table (two `jcw profile` runs of one device): each append takes the table's lock,
re-reads the file, adds its rows and atomically replaces it, so no writer's rows are lost.
"""

from __future__ import annotations

import os
import reprlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from profiler.errors import UserError
from profiler.kernel import FIELDS, KernelSpec

# Device state while measuring, where the device reports it (adb phones); tables written before them read as empty.
OPTIONAL = {"governor": "", "freq_mhz": float("nan"), "temp_c": float("nan"), "throttled": False}
NEWER_FIELDS = {"layout": "nhwc"}
"""KernelSpec fields added after tables were written: older rows read with the field's default."""
COLUMNS = ["device", "runtime", "runtime_version", *FIELDS, "latency_ms", "iqr_ms", "cv", "model_ms", "baseline_ms",
           "runs", "timestamp", "version", *OPTIONAL]
CONTEXT = ("device", "runtime", "runtime_version")
"""Where a kernel ran (the device, its runtime's name in profiler.runtimes, the runtime package's version as the
runner reported it): with its KernelSpec, a row's identity."""


def upgrade_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A table of an older toolkit with today's context columns: its `runtime` held the runner's package version
    and `flavour` the runtime's name."""
    if "flavour" not in table.columns:
        return table
    return table.rename(columns={"runtime": "runtime_version"}).rename(columns={"flavour": "runtime"})
LOCK_TIMEOUT_S = 60  # a writer holds the lock only while rewriting the file


def _rows(mask: np.ndarray) -> str:
    """The offending rows, counting data rows from 1 (the header is not a row), the first ten named."""
    rows = (np.flatnonzero(mask) + 1).tolist()
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:10]))}{more}"


def _row_key(row: dict) -> tuple[tuple, tuple]:
    """A row's identity: its kernel's KernelSpec.key and its context (empty cells read as "")."""
    context = tuple("" if pd.isna(row[c]) else str(row[c]) for c in CONTEXT)
    return KernelSpec.from_row(row).key(), context


class ResultsStore:
    """The measurements of one device, kept in `path`; rows are never lost or overwritten.

    A table that cannot be trusted (unparseable, missing columns, empty or impossible kernel cells, a latency that
    is not a finite positive number, one kernel in one context twice) is refused on read and left untouched.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = FileLock(self.path.with_name(f".{self.path.name}.lock"), timeout=LOCK_TIMEOUT_S)
        self._load()

    def _load(self) -> None:
        """(Re-)read the table from disk, with every writer's rows so far."""
        if self.path.exists():
            self._table, self._keys = self._read()
        else:
            self._table, self._keys = pd.DataFrame(columns=COLUMNS), []

    def _refuse(self, problem: str) -> UserError:
        return UserError(f"{self.path}: {problem}; the table was left untouched: fix it or move it aside")

    def _read(self) -> tuple[pd.DataFrame, list[tuple[tuple, tuple]]]:
        """The table on disk and its rows' keys, checked."""
        try:
            table = upgrade_columns(pd.read_csv(self.path))
        except (ValueError, OSError) as err:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
            raise self._refuse(f"corrupt results table ({reprlib.repr(str(err))})") from None
        missing = [c for c in COLUMNS if c not in table.columns and c not in OPTIONAL and c not in NEWER_FIELDS]
        if missing:
            raise self._refuse(f"not a results table, missing columns {missing}")
        for column, default in (OPTIONAL | NEWER_FIELDS).items():
            if column not in table.columns:
                table[column] = default
        empty = table[["latency_ms", *FIELDS]].isna().any(axis=1).to_numpy()
        if empty.any():
            raise self._refuse(f"corrupt results table, empty cells in {_rows(empty)}")
        table["latency_ms"] = self._latencies(table["latency_ms"])
        keys = [self._key(i, row) for i, row in enumerate(table[[*CONTEXT, *FIELDS]].to_dict("records"))]
        self._check_unique(keys)
        return table, keys

    def _latencies(self, column: pd.Series) -> pd.Series:
        """The latency column as floats; text, non-finite or non-positive latencies are refused."""
        latency = pd.to_numeric(column, errors="coerce").astype(np.float64)
        bad = ~(np.isfinite(latency) & (latency > 0)).to_numpy()
        if bad.any():
            first = reprlib.repr(column.tolist()[int(np.flatnonzero(bad)[0])])
            raise self._refuse(f"latency_ms must be a finite positive number, got {first} in {_rows(bad)}")
        return latency

    def _key(self, index: int, row: dict) -> tuple[tuple, tuple]:
        try:
            return _row_key(row)
        except (UserError, ValueError, TypeError, OverflowError) as err:
            raise self._refuse(f"row {index + 1} is no kernel ({reprlib.repr(str(err))})") from None

    def _check_unique(self, keys: list[tuple[tuple, tuple]]) -> None:
        """One row per kernel and context: a second would be silently averaged or picked by every reader."""
        first: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            if key in first:
                raise self._refuse(f"row {i + 1} repeats the kernel and device of row {first[key] + 1}")
            first[key] = i

    @property
    def table(self) -> pd.DataFrame:
        """The rows as of the last read or append."""
        return self._table.copy()

    def measured(self) -> set[tuple]:
        """Keys (KernelSpec.key) of the kernels in the table now, other writers' included."""
        self._load()
        return {spec_key for spec_key, _ in self._keys}

    def append(self, rows: list[dict]) -> None:
        """Add rows under the table's lock: re-read the file, add the rows, atomically replace it.

        A kernel already in the table in the same context (another writer saved it meanwhile) keeps its first row.
        """
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                self._load()
                seen, fresh, fresh_keys = set(self._keys), [], []
                for row in rows:
                    if (key := _row_key(row)) not in seen:
                        seen.add(key)
                        fresh.append(row)
                        fresh_keys.append(key)
                new = pd.DataFrame(fresh, columns=COLUMNS)
                table = new if self._table.empty else pd.concat([self._table, new], ignore_index=True)
                self._write(table)
        except Timeout:
            raise UserError(f"{self.path}: another writer held its lock {self._lock.lock_file} for "
                            f"{LOCK_TIMEOUT_S} s; if none is running, remove the lock file") from None
        self._table, self._keys = table, self._keys + fresh_keys

    def _write(self, table: pd.DataFrame) -> None:
        """Replace the file with `table` through a temporary file and an atomic rename."""
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
