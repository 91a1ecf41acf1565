"""Read, validate and normalise kernel tables (CSV or Parquet) into KernelSpec columns."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path

import numpy as np
import pandas as pd

from profiler.errors import UserError
from profiler.kernel import FIELDS, KernelSpec
from profiler.store import CONTEXT, upgrade_columns  # CONTEXT: where a kernel ran, empty when a table does not say

SHAPE_COLUMNS = ("k", "stride", "cin", "cout", "density")
TARGET = "latency_ms"
DEFAULTS = {"op": "conv", "groups": 1, "block": "1x4", "activation": "none", "layout": "nhwc"}
INT_FIELDS = ("h", "w", "cin", "cout", "k", "stride", "groups")
STR_FIELDS = ("op", "block", "activation", "layout", *CONTEXT)


def read_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV or Parquet file as it is (Parquet by suffix .parquet/.pq, CSV otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"table {path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise UserError(f"table {path}: cannot be read ({err})") from err


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table as Parquet (suffix .parquet/.pq) or CSV: pandas' header, then the rows by pyarrow's CSV writer
    (numbers shortest round trip, 1.0 as 1; five times pandas' speed), or by pandas' when a value needs quotes."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
        return
    try:
        with path.open("w", encoding="utf-8", newline="") as out:
            df.head(0).to_csv(out, index=False, lineterminator="\n")
            out.flush()
            pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), out.buffer,
                             pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowException:  # a text cell holding a comma, quote or line break; or a column pyarrow cannot type
        df.to_csv(path, index=False)


def _rows(mask: np.ndarray) -> str:
    """Name the offending rows, counting data rows from 1 (the header is not a row)."""
    rows = (np.flatnonzero(mask) + 1).tolist()
    shown = ", ".join(map(str, rows[:10]))
    return f"row{'s' if len(rows) > 1 else ''} {shown}{f' and {len(rows) - 10} more' if len(rows) > 10 else ''}"


def normalise(df: pd.DataFrame, source: str = "table", need_latency: bool = True) -> pd.DataFrame:
    """Return the KernelSpec fields (+ context, + latency_ms) of a raw table, checked and typed.

    Accepts `hw` for square inputs, fills optional columns with their defaults, and raises
    a UserError naming the file and rows for anything the predictor cannot use.
    """
    out = typed(df, source, need_latency)
    check_specs(out, source)
    return out


def typed(df: pd.DataFrame, source: str = "table", need_latency: bool = True) -> pd.DataFrame:
    """normalise without the KernelSpec check of each kernel: for a caller that checks its distinct kernels itself
    (check_specs)."""
    if len(df) == 0:
        raise UserError(f"{source}: the table is empty (no rows)")
    df = upgrade_columns(df)
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    if "h" in df.columns and "w" in df.columns:
        out["h"], out["w"] = df["h"].to_numpy(), df["w"].to_numpy()
    elif "hw" in df.columns:
        out["h"] = out["w"] = df["hw"].to_numpy()
    else:
        raise UserError(f"{source}: missing column 'hw' (or both 'h' and 'w'); columns are {list(df.columns)}")
    required = SHAPE_COLUMNS + ((TARGET,) if need_latency else ())
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{source}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for c in required:
        out[c] = df[c].to_numpy()
    for c, default in DEFAULTS.items():
        out[c] = df[c].fillna(default).to_numpy() if c in df.columns else default
    for c in CONTEXT:
        out[c] = df[c].fillna("").astype(str).to_numpy() if c in df.columns else ""

    values = {c: pd.to_numeric(out[c], errors="coerce") for c in (*INT_FIELDS, "density")}  # column by column: fast
    bad = np.logical_or.reduce([v.isna().to_numpy() for v in values.values()])
    if bad.any():
        raise UserError(f"{source}: missing or non-numeric shape values in {_rows(bad)}")
    frac = np.logical_or.reduce([(values[c] % 1 != 0).to_numpy(bool) for c in INT_FIELDS])
    if frac.any():
        raise UserError(f"{source}: non-integer sizes in {_rows(frac)}")
    for c in INT_FIELDS:
        out[c] = values[c].astype(np.int64)
    out["density"] = values["density"].astype(np.float64)
    for c in STR_FIELDS:
        out[c] = out[c].astype(str)
    if need_latency:
        lat = pd.to_numeric(out[TARGET], errors="coerce").astype(np.float64)
        bad = ~(np.isfinite(lat) & (lat > 0)).to_numpy()
        if bad.any():
            raise UserError(f"{source}: latency_ms must be a finite positive number; text, empty, infinite or <= 0 "
                            f"in {_rows(bad)}")
        out[TARGET] = lat
    return out


def check_specs(df: pd.DataFrame, source: str, rows: np.ndarray | None = None) -> None:
    """Validate each distinct kernel of a typed frame with KernelSpec itself, so the predictor accepts what the pruner
    can ask: the rows at `rows` (positions holding every distinct kernel), by default each kernel's first row. The
    UserError names every row of a kernel refused."""
    specs = df[list(FIELDS)]
    distinct = specs.iloc[np.flatnonzero(~specs.duplicated().to_numpy()) if rows is None else rows]
    fields = zip(*(column.tolist() for _, column in distinct.items()), strict=True)  # KernelSpec's fields, in order
    for i, values in enumerate(fields):
        try:
            KernelSpec(*values)
        except UserError as err:
            same = (specs == distinct.iloc[i]).all(axis=1).to_numpy()
            raise UserError(f"{source}: {_rows(same)}: {err}") from err


def load(paths: str | Path | Sequence[str | Path], need_latency: bool = True) -> pd.DataFrame:
    """Read and normalise one or more tables into one frame (rows in file order)."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    return pd.concat([normalise(read_table(p), str(p), need_latency) for p in paths], ignore_index=True)


def specs_frame(specs: Sequence[KernelSpec]) -> pd.DataFrame:
    """KernelSpecs as a frame of their fields, built column by column (fast for large batches)."""
    if not specs:
        raise UserError("no kernels to predict")
    df = pd.DataFrame(list(map(attrgetter(*FIELDS), specs)), columns=list(FIELDS))
    for c in CONTEXT:
        df[c] = ""
    return df
