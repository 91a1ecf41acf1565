"""`jcw report RUN_DIR` (and the end of `jcw search`): a user's search run as RUN_DIR/report.md, the kind of report the
demo writes. How far its latencies can be trusted (the predictor's held-out accuracy, its table's noise, the device's
repeatability, the per-network overhead), the fronts and their hypervolumes, the pick under each budget with its
predicted latency, its measured latency where the user measured it (`jcw measure --out` files in RUN_DIR, or the
export sidecars there) and XNNPACK's verdict, and every warning with its likely cause and fix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MEASURED_TOLERANCE = 0.10  # a pick measured further than this from its prediction is warned about


def register(sub: argparse._SubParsersAction) -> None:
    """Add `jcw report` to the jcw parser."""
    p = sub.add_parser("report", help="write a search run's report (RUN_DIR/report.md): trust, fronts, picks, warnings")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished search's run directory (jcw search --out)")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    path, found = write_run_report(Path(args.run_dir))
    print(f"wrote {path} ({len(found)} warning{'s' if len(found) != 1 else ''})")
    return 0


def write_run_report(run_dir: Path) -> tuple[Path, list]:
    """Write run_dir/report.md from the run's files; returns its path and its warnings (profiler.advice.Advice)."""
    import pandas as pd

    from profiler.errors import UserError

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{run_dir}: no readable summary.json ({err}); report a finished jcw search's --out") from None
    budgets = run_dir / "budgets.csv"
    picks = pd.read_csv(budgets) if budgets.is_file() and budgets.stat().st_size > 1 else pd.DataFrame()
    trust, found = _trust(summary.get("predictor"))
    rows, measured_advice = _picks(picks, _measurements(run_dir))
    found += measured_advice
    lines = [f"# JCW run report: {run_dir}", "", *_inputs(summary), "", "## Warnings", ""]
    lines += [f"- {advice}" for advice in found] or ["None: the predictor, the device and the measured picks gave "
                                                     "no reason for doubt."]
    lines += ["", "## How far the latencies can be trusted", "", *trust, "", *_fronts(summary), "", "## Picks", ""]
    lines += _picks_section(picks, rows, summary)
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path, found


def _inputs(summary: dict) -> list[str]:
    from pruner.data.loading import describe

    model = summary.get("model") or {}
    origin = model.get("model") or {}
    if origin.get("kind") in ("file", "module"):
        name = f"{origin.get('path') or origin.get('module')}:{origin.get('factory')}"
        weights = f", weights {origin['weights']}" if origin.get("weights") else ""
    else:
        name, weights = f"{origin.get('arch', origin.get('kind', '?'))} {origin.get('kwargs', '')}".strip(), ""
    checkpoint = (model.get("checkpoint") or {}).get("path")
    shape = "x".join(map(str, model.get("input_shape") or origin.get("input_shape") or ()))
    predictor = summary.get("predictor") or {}
    return [f"- model: {name}{weights}{f' (checkpoint {checkpoint})' if checkpoint else ''}, input {shape}",
            f"- data: {describe(summary.get('data'))}",
            f"- device: `{summary.get('device')}`; predictor: {predictor.get('path')}"]


def _trust(predictor: dict | None) -> tuple[list[str], list]:
    """The predictor's quality record as report lines, and its warnings."""
    from predictor.persist import read_manifest
    from predictor.quality import advice, describe_held_out
    from profiler.errors import UserError
    from profiler.noise import NOISY_SPREAD, describe

    path = (predictor or {}).get("path")
    try:
        manifest = read_manifest(path) if path else None
    except UserError as err:
        manifest, missing = None, str(err)
    else:
        missing = "the run records no predictor file"
    if manifest is None:
        return [f"The predictor cannot be read ({missing}): nothing is known of its accuracy."], []
    quality, overhead = manifest.get("quality"), manifest.get("overhead") or {}
    lines = [f"- Predictor ({manifest.get('kind')}, fitted on {manifest.get('rows')} kernels of "
             f"{(manifest.get('fitted_on') or {}).get('device', 'several devices')}): "
             f"{describe_held_out((quality or {}).get('held_out')) if quality else 'no accuracy recorded'}."]
    table = (quality or {}).get("table")
    if table:
        noisy = "no spread recorded" if table.get("noisy") is None else \
            f"{table['noisy']} with a spread over {NOISY_SPREAD:.0%} of their time between repeats"
        cv = f", median cv {table['median_cv']:.3f}" if table.get("median_cv") is not None else ""
        lines.append(f"- Its table ({table.get('name')}): {table['rows']} rows, {table['clamped']} clamped to the "
                     f"floor, {noisy}{cv}.")
    noise = (quality or {}).get("device_noise")
    lines.append(f"- Device noise ({noise.get('device')}, at the end of its profile): {describe(noise)}." if noise else
                 "- Device noise: not measured (the table was profiled before `jcw profile` measured kernels again, "
                 "or not by it).")
    calibrated = (quality or {}).get("overhead")
    if any(overhead.values()):
        left_out = (f"; each network left out of the fit predicted within +-10%: {calibrated['within10_pct']:.0f}% "
                    f"of {calibrated['networks']}") if calibrated and calibrated.get("networks") else ""
        lines.append(f"- Per-network overhead (jcw calibrate): {overhead['per_network_ms']:.4f} ms + "
                     f"{overhead['per_kernel_ms']:.5f} ms per layer{left_out}.")
    else:
        lines.append("- Per-network overhead: never fitted (jcw calibrate).")
    return lines, advice(quality, overhead)


def _fronts(summary: dict) -> list[str]:
    config, estimate = summary.get("config") or {}, summary.get("estimate") or {}
    methods = [m for m in summary.get("hypervolume", {}) if m != "uniform"]
    how = (f"estimator {estimate['estimator']}, BatchNorm recalibrated on {estimate['bn_batches']} training batches, "
           f"scored on {estimate['val_images']} held-out validation images" if estimate else "estimator not recorded")
    ref = summary.get("ref_point") or {}
    sizes = summary.get("front_sizes", {})
    table = "\n".join(["| method | hypervolume | front size |", "|---|---|---|"] + [
        f"| {m} | {hv:.4g} | {sizes.get(m, '')} |" for m, hv in summary["hypervolume"].items()])
    return ["## Fronts", "",
            f"{len(methods)} methods x {config.get('n_gen')} generations x {config.get('pop_size')} candidates "
            f"({how}), and uniform width multipliers; latency as the predictor prices each candidate on the device.",
            "", "![fronts](fronts.png)", "",
            f"Hypervolume of (estimated loss, predicted latency) against one reference point fixed before the search "
            f"(loss {ref.get('loss', float('nan')):.4g}, latency {ref.get('latency_ms', float('nan')):.4g} ms); "
            "larger is better; the progress bars' `hv`:", "", table]


def _measurements(run_dir: Path) -> dict[str, dict]:
    """Measured picks found in the run directory, by their genes: export sidecars that `jcw measure` wrote its
    measurement into, and `jcw measure --out` files (CSV or JSON) whose files have sidecars naming their genes."""
    import pandas as pd

    found: dict[str, dict] = {}

    def add(file: str, latency_ms: float, source: str) -> None:
        try:
            sidecar = json.loads(Path(f"{file}.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(sidecar, dict) and sidecar.get("genes") and pd.notna(latency_ms):
            genes = ",".join(map(str, sidecar["genes"]))
            found[genes] = {"file": file, "latency_ms": float(latency_ms), "source": source,
                            "predicted_ms": sidecar.get("predicted_ms"), "xnnpack": sidecar.get("xnnpack")}

    for path in sorted(run_dir.rglob("*.json")):
        record = _read_json(path)
        if isinstance(record, dict) and isinstance(record.get("results"), list):  # jcw measure --out X.json
            for row in record["results"]:
                if isinstance(row, dict) and row.get("latency_ms") is not None:
                    add(str(row.get("file")), row["latency_ms"], str(path))
        elif isinstance(record, dict) and "layers" in record and isinstance(record.get("measured"), dict):
            add(str(path)[: -len(".json")], record["measured"].get("latency_ms"), str(path))
    for path in sorted(run_dir.rglob("*.csv")):
        try:
            table = pd.read_csv(path)
        except (ValueError, OSError):
            continue
        if {"file", "latency_ms"} <= set(table.columns):  # jcw measure --out X.csv
            for row in table.itertuples():
                add(str(row.file), row.latency_ms, str(path))
    return found


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _picks(picks, measured: dict[str, dict]) -> tuple[list[dict], list]:
    """The report's rows for the picks, and a warning for each measured far from its prediction."""
    from profiler.advice import Advice

    rows, found = [], []
    for pick in picks.to_dict("records") if len(picks) else []:
        if not pick.get("found"):
            rows.append({"budget ms": f"{pick['budget_ms']:g}", "note": pick.get("note", "")})
            continue
        m = measured.get(pick["genes"])
        gap = pick["latency_ms"] / m["latency_ms"] - 1 if m else None
        verdict = pick.get("xnnpack") if isinstance(pick.get("xnnpack"), str) and pick.get("xnnpack") else "-"
        rows.append({"budget ms": f"{pick['budget_ms']:g}", "predicted ms": f"{pick['latency_ms']:.4f}",
                     "estimated top-1": f"{pick['top1']:.2%}", "estimated loss": f"{pick['loss']:.4f}",
                     "measured ms": f"{m['latency_ms']:.4f}" if m else "not measured",
                     "gap": f"{gap:+.1%}" if m else "", "XNNPACK": verdict, "genes": f"`{pick['genes']}`"})
        if m and abs(gap) > MEASURED_TOLERANCE and not any(m["file"] in str(advice) for advice in found):
            found.append(Advice(
                f"the pick under {pick['budget_ms']:g} ms was predicted at {pick['latency_ms']:.4f} ms, {gap:+.1%} "
                f"off its measured {m['latency_ms']:.4f} ms ({m['file']})",
                "the device was busy while it was measured, or the predictor or its per-network overhead is off "
                "for this network (see how far the latencies can be trusted)",
                "measure it again with more --passes on a quieter device; if it stays off, calibrate the overhead "
                "with it among the networks (jcw calibrate)"))
    return rows, found


def _picks_section(picks, rows: list[dict], summary: dict) -> list[str]:
    import pandas as pd

    if not rows:
        return ["No latency budgets were given (jcw search --budgets MS,MS): pick from pareto.csv."]
    lines = ["The best joint candidate under each budget (budgets.csv): its predicted latency and estimated accuracy "
             "(before fine-tuning), its latency where it was measured, and whether XNNPACK runs it sparse.", "",
             pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True), ""]
    reasons = {r["xnnpack"]: r["xnnpack_reason"] for r in picks.to_dict("records")
               if isinstance(r.get("xnnpack"), str) and r.get("xnnpack")} if "xnnpack" in picks else {}
    if reasons:
        lines += [f"- XNNPACK runs a pick {mode}: {reason}" for mode, reason in reasons.items()] + [""]
    else:
        runtime = ((summary.get("predictor") or {}).get("fitted_on") or {}).get("runtime", "its runtime")
        lines += [f"XNNPACK's verdict: none, the device runs {runtime}, not XNNPACK.", ""]
    if not any(r.get("measured ms", "not measured") != "not measured" for r in rows):
        lines += ["No pick is measured yet: `jcw export --candidate GENES --out RUN_DIR/pick.tflite` (with the run's "
                  "--model, --device and --predictor), then `jcw measure --out RUN_DIR/measured.csv` on it, and "
                  "`jcw report RUN_DIR` again."]
    return lines
