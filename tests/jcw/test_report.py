"""The report's warning that the machine was busy while measuring (the demo's report itself: test_demo)."""

from __future__ import annotations

from jcw.report import busy_note


def test_busy_note_only_when_the_full_model_measures_off_its_prediction():
    quiet = {"full": {"predicted_ms": 1.0, "latency_ms": 1.05}, "joint@0.5": {"predicted_ms": 1.0, "latency_ms": 2.0}}
    assert busy_note(quiet) == ""  # a candidate off its prediction alone is the predictor's to answer for
    busy = {"full": {"predicted_ms": 1.0, "latency_ms": 1.4}}
    assert "-28.6%" in busy_note(busy) and "re-measures" in busy_note(busy)
    assert busy_note({"full": {"predicted_ms": 1.0, "latency_ms": 0.8}}) != ""  # +25%: off either way
    assert busy_note({"full": {"error": "adb: device offline"}}) == ""  # a failed measurement has its own row
