"""How far a device's measurements can be trusted: the share of kernels that repeat within +-10%, the spread that
makes a table noise-bound (on injected tables), and a real profile measuring a sample of its kernels again, checked
for what it records, not for its numbers."""

from __future__ import annotations

import json

import pytest

from jcw.cli import main
from profiler.noise import noise_advice, repeatability, table_advice, table_summary


def test_repeatability_and_its_threshold(kernel_table):
    assert repeatability([1.0, 2.0, 4.0, 8.0], [1.05, 2.3, 4.0, 6.0]) == {
        "kernels": 4, "within10_pct": 50.0, "median_change_pct": pytest.approx(10.0),
        "worst_change_pct": pytest.approx(25.0)}
    assert noise_advice({"device": "d", **repeatability([1.0] * 5, [1.0] * 4 + [2.0])}) == []  # 80%: enough
    assert table_advice(table_summary(kernel_table(spread=0.19))) == []  # within +-10% of the median: not noisy
    assert len(table_advice(table_summary(kernel_table(spread=0.21)))) == 1


def test_a_profile_measures_a_sample_again_and_records_how_it_repeats(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels:\n  - op: conv\n    hw: 28\n    cin: 64\n    cout: [32, 64]\n    density: [0.2, 1.0]\n")
    capsys.readouterr()
    assert main(["profile", "--device", "local-sparse", "--plan", str(plan), "--out", str(tmp_path / "r"),
                 "--noise-kernels", "3"]) == 0
    noise = json.loads((tmp_path / "r" / "local-sparse.noise.json").read_text())
    assert noise["device"] == "local-sparse" and noise["kernels"] == 3 and 0 <= noise["within10_pct"] <= 100
    line = [line for line in capsys.readouterr().out.splitlines() if "device noise" in line][0]
    assert line.startswith("local-sparse: device noise: ") and "of 3 kernels measured again" in line
    assert line.endswith(f"wrote {tmp_path / 'r' / 'local-sparse.noise.json'}")
