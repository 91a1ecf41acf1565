"""Channel-multiple benchmark: what rounding a pruned layer's channels to multiples of 4, 8 or 16
(`--channel-multiple N`) costs on arm-emu, per layer kind and precision.

    .venv/bin/python bench/channel_multiple_bench.py      (or: make bench; needs make arm-emu)

Profiles a few layers at channel counts 48..80 in steps of 4 (every multiple of 4 there; 48, 56, 64, 72, 80 are
multiples of 8, 48, 64, 80 of 16) on arm-emu (FP32), arm-emu-fp16 and arm-emu-int8, timed by the instruction clock
(executed ARM instructions as ms at one per ns: deterministic, but blind to memory stalls and SIMD width, so compare
counts, not a phone's milliseconds). Writes bench/results/channel_multiple.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from profiler.devices import get_device
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.store import ResultsStore

DEVICES = ("arm-emu", "arm-emu-fp16", "arm-emu-int8")
COUNTS = tuple(range(48, 81, 4))
LAYERS = {
    "1x1 conv 28x28, cin = cout = c (a channel group read and written)": lambda c: KernelSpec("conv", 28, 28, c, c),
    "1x1 conv 28x28, cin 64, cout = c": lambda c: KernelSpec("conv", 28, 28, 64, c),
    "3x3 depthwise 28x28, c channels": lambda c: KernelSpec("dwconv", 28, 28, c, c, k=3, groups=c),
    "3x3 conv 14x14, cin = cout = c": lambda c: KernelSpec("conv", 14, 14, c, c, k=3),
}
OUT = Path(__file__).parent / "results"


def multiple_of(c: int) -> int:
    """The largest of 16, 8 and 4 that divides c."""
    return next(m for m in (16, 8, 4) if c % m == 0)


def _ratio(ms: pd.Series, multiple: int, step: int) -> float:
    """Median of cost(c) / cost(c + step) over the counts c that are `step` past a multiple of `multiple`."""
    counts = [c for c in ms.index if c % multiple == step and c + step in ms.index]
    return float(np.median(ms[counts].to_numpy() / ms[[c + step for c in counts]].to_numpy()))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    specs = [make(c) for make in LAYERS.values() for c in COUNTS]
    tables = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in DEVICES:
            store = ResultsStore(Path(tmp) / f"{name}.csv")
            result = profile_device(get_device(name, "devices.yaml"), specs, store)
            if result.failed:
                raise SystemExit(f"{name}: {len(result.failed)} kernels failed: {result.failed[0][1]}")
            tables[name] = store.table
    minutes = (time.perf_counter() - start) / 60
    lines = ["# Channel multiples on arm-emu", "",
             f"`.venv/bin/python bench/channel_multiple_bench.py` on {time.strftime('%Y-%m-%d')} ({minutes:.1f} min): "
             "each layer at every channel count from 48 to 80 in steps of 4, on arm-emu (FP32), arm-emu-fp16 and "
             "arm-emu-int8. Cost in instruction-clock ms (executed ARM instructions, one per ns, minus the empty "
             "harness): deterministic, blind to memory stalls and SIMD width; under qemu FP16 and INT8 counts are no "
             "phone's ratios to FP32. `mult` is the largest of 16, 8, 4 dividing c; `/c` the cost per channel "
             "(us); `vs -4` the cost over the count 4 below.", ""]
    sections, summary = [], []
    costs = {name: {KernelSpec.from_row(row).key(): row["latency_ms"] for row in table.to_dict("records")}
             for name, table in tables.items()}
    for label, make in LAYERS.items():
        rows = pd.DataFrame({"c": COUNTS, "mult": [multiple_of(c) for c in COUNTS]}).set_index("c")
        for name in DEVICES:
            ms = pd.Series([costs[name][make(c).key()] for c in COUNTS], index=COUNTS)
            rows[f"{name} ms"] = ms.round(4)
            rows[f"{name} /c"] = (1e3 * ms / ms.index.to_numpy()).round(2)
            rows[f"{name} vs -4"] = (ms / ms.shift(1)).round(3)
            summary.append({"layer": label.split(" (")[0], "device": name,
                            "c = 4 (mod 8) over c + 4": _ratio(ms, 8, 4),
                            "c = 8 (mod 16) over c + 8": _ratio(ms, 16, 8)})
        sections += [f"## {label}", "", rows.reset_index().to_markdown(index=False), ""]
    lines += ["## What a finer multiple buys", "",
              "Median cost of a count that a multiple of 4 allows but 8 does not (52, 60, 68, 76) over the next "
              "multiple of 8, and of a multiple of 8 that 16 does not allow (56, 72) over the next multiple of 16: "
              "below 1.0 the narrower layer is cheaper, at or above 1.0 it is no cheaper (or dearer) than the wider "
              "one.", "",
              pd.DataFrame(summary).round(3).to_markdown(index=False), "", *sections]
    (OUT / "channel_multiple.md").write_text("\n".join(lines))
    print(f"wrote {OUT / 'channel_multiple.md'}")


if __name__ == "__main__":
    main()
