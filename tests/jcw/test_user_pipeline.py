"""A user's own model and images through the whole command line, on this machine as the device:
plan -> profile -> fit -> search -> finetune -> export -> measure.

The model is not built in: a MobileNetV3-style net (hardswish, a 5x5 depthwise conv, squeeze-and-excite, a residual
add; 3 input channels, 5 classes) in a Python file of its own, its weights in a state_dict file. The data is an
ImageFolder of PNG files (both written by the conftest). Every step's files must say where the model, the data, the
search space and the latency model came from."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pruner.model.checkpoint import load_checkpoint


def test_a_users_model_and_images_go_from_plan_to_measured_file(jcw, user, user_classes, tmp_path, capsys):
    model = ["--model", f"{user / 'net.py'}:build", "--weights", user / "weights.pt", "--input-shape", "3,32,32"]
    on_device = ["--device", "local-sparse", "--keep", "stem.*"]
    data = ["--data", f"imagefolder:{user / 'images'}", "--torch-device", "cpu", "--threads", 1]
    plan, results, pred = tmp_path / "plan.yaml", tmp_path / "results", tmp_path / "pred.jcwm"

    assert jcw("plan", *model, *on_device, "--candidates", 2, "--out", plan) == 0
    assert str(user / "net.py") in plan.read_text().splitlines()[0]
    assert jcw("profile", "--device", "local-sparse", "--plan", plan, "--out", results) == 0
    assert jcw("fit", "--table", results / "local-sparse.csv", "--out", pred) == 0

    search = tmp_path / "search"
    assert jcw("search", *model, *on_device, *data, "--predictor", pred, "--out", search, "--generations", 1,
               "--population", 6, "--val-size", 8, "--budgets", 100) == 0
    summary = json.loads((search / "summary.json").read_text())
    assert summary["device"] == "local-sparse"
    assert summary["predictor"] == {"path": str(pred.resolve()), "fitted_on": {
        "device": "local-sparse", "runtime": "builtin",
        "runtime_version": summary["predictor"]["fitted_on"]["runtime_version"], "block": "4x1"}}
    assert summary["model"]["model"]["kind"] == "file" and summary["model"]["model"]["factory"] == "build"
    assert summary["model"]["model"]["weights"] == str((user / "weights.pt").resolve())
    assert summary["data"]["kind"] == "imagefolder" and summary["data"]["classes"] == list(user_classes)
    assert summary["space"]["keep"] == ["stem.*"]
    assert json.loads((search / "run.json").read_text())["space"] == summary["space"]
    pareto = pd.read_csv(search / "pareto.csv")
    assert {"joint", "channel-only", "weight-only", "uniform"} == set(pareto.method)

    capsys.readouterr()  # resuming with other layers kept is refused, naming the file that records the first run
    assert jcw("search", *model, "--device", "local-sparse", *data, "--predictor", pred, "--out", search,
               "--generations", 1, "--population", 6, "--val-size", 8) == 3
    assert f"{search / 'run.json'}: this run directory holds a search of another space" in capsys.readouterr().err

    joint = pareto[pareto.method == "joint"].sort_values("latency_ms").iloc[0]
    tuned = tmp_path / "tuned.pt"
    assert jcw("finetune", *model, *on_device, *data, "--candidate", joint.genes, "--out", tuned) == 0
    pruned = load_checkpoint(tuned, factory=f"{user / 'net.py'}:build")
    assert pruned.genes == tuple(int(g) for g in joint.genes.split(","))
    assert pruned.source["path"] == str(user / "net.py") and pruned.space_settings["keep"] == ["stem.*"]
    record = json.loads((tmp_path / "tuned.pt.json").read_text())
    assert record["data"] == summary["data"] and record["model"] == summary["model"]
    assert set(record["validation"]) == {"before", "after", "after_all"}

    exported = tmp_path / "tuned.tflite"
    assert jcw("export", "--model", tuned, "--device", "local-sparse", "--out", exported) == 3  # names code: refused
    assert "name it yourself" in capsys.readouterr().err
    assert jcw("export", "--model", f"{user / 'net.py'}:build", "--weights", tuned, "--device", "local-sparse",
               "--predictor", pred, "--out", exported) == 0
    sidecar = json.loads((tmp_path / "tuned.tflite.json").read_text())
    assert sidecar["model"]["model"] == summary["model"]["model"] and sidecar["model"]["checkpoint"]["path"] == str(
        tuned)
    assert sidecar["genes"] == list(pruned.genes) and sidecar["space"]["keep"] == ["stem.*"]
    assert sidecar["data"] == summary["data"] and sidecar["predictor"] == summary["predictor"]
    assert sidecar["predicted_ms"] > 0

    measured = tmp_path / "measured.json"
    assert jcw("measure", "--device", "local-sparse", "--predictor", pred, "--passes", 1, "--out", measured,
               exported) == 0
    (row,) = json.loads(measured.read_text())["results"]
    assert row["file"] == str(exported) and row["latency_ms"] > 0
    assert row["predicted_ms"] == pytest.approx(sidecar["predicted_ms"])


def test_a_head_that_does_not_fit_the_data_is_refused_before_any_work(jcw, user, tmp_path, capsys):
    code = jcw("finetune", "--model", f"{user / 'net.py'}:build_seven", "--input-shape", "3,32,32", "--candidate",
               "0", "--device", "local-sparse", "--data", f"imagefolder:{user / 'images'}", "--out",
               tmp_path / "tuned.pt")
    assert code == 3 and not (tmp_path / "tuned.pt").exists()
    assert "the model's head gives 7 classes but the data has 5" in capsys.readouterr().err


@pytest.fixture(scope="module")
def formula_predictor(user, tmp_path_factory, device_table):
    """A local-sparse predictor of the user's model, fitted on its plan's kernels with made-up latencies (the workers
    test needs a predictor, not a profile)."""
    from predictor import persist
    from predictor.latency import LatencyModel
    from pruner.model.checkpoint import load_model

    ckpt = load_model(f"{user / 'net.py'}:build", user / "weights.pt", "3,32,32")
    path = tmp_path_factory.mktemp("predictor") / "formula.jcwm"
    persist.save(LatencyModel.fit(device_table(ckpt, "local-sparse")), path)
    return path


def test_workers_import_only_the_files_their_score_refers_to(user, tmp_path):
    from pruner.accuracy.estimate import ProxyData, ProxyScore
    from pruner.accuracy.parallel import UserFiles
    from pruner.model.checkpoint import load_model
    from pruner.model.sources import factory_source, import_factory

    gone = tmp_path / "gone.py"  # a file imported earlier in this process, then deleted: no worker may need it
    gone.write_text("def build():\n    return None\n")
    import_factory(factory_source(f"{gone}:build"))
    gone.unlink()
    ckpt = load_model(f"{user / 'net.py'}:build", user / "weights.pt", "3,32,32")
    score = ProxyScore(ckpt.model, ckpt.space("builtin"), ProxyData([], []))
    assert UserFiles.of(score).paths == (str(user / "net.py"),)


def test_two_workers_import_a_model_from_its_file_and_find_the_same_fronts_as_one(jcw, user, formula_predictor,
                                                                                  tmp_path):
    searched = {}
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        assert jcw("search", "--model", f"{user / 'net.py'}:build", "--weights", user / "weights.pt", "--input-shape",
                   "3,32,32", "--device", "local-sparse", "--predictor", formula_predictor, "--data",
                   f"imagefolder:{user / 'images'}", "--torch-device", "cpu", "--threads", 1, "--workers", workers,
                   "--generations", 2, "--population", 6, "--val-size", 8, "--out", out) == 0
        searched[workers] = pd.read_csv(out / "pareto.csv")
    pd.testing.assert_frame_equal(searched[1], searched[2], check_exact=True)
    assert len(searched[2][searched[2].method == "joint"]) > 1


def test_finetune_reports_the_searchs_estimate_of_the_candidate_as_before(jcw, user, formula_predictor, tmp_path):
    model = ["--model", f"{user / 'net.py'}:build", "--weights", user / "weights.pt", "--input-shape", "3,32,32"]
    data = ["--data", f"imagefolder:{user / 'images'}", "--resize", 36, "--mean", "0.5,0.5,0.5", "--std",
            "0.25,0.25,0.25", "--augment", "flip", "--torch-device", "cpu", "--threads", 1, "--val-size", 8,
            "--bn-batches", 2, "--seed", 1]
    search = tmp_path / "search"
    assert jcw("search", *model, *data, "--device", "local-sparse", "--predictor", formula_predictor, "--out",
               search, "--generations", 1, "--population", 6) == 0
    summary = json.loads((search / "summary.json").read_text())
    assert {k: summary["data"][k] for k in ("resize", "mean", "std", "augment")} == {
        "resize": 36, "mean": [0.5] * 3, "std": [0.25] * 3, "augment": "flip"}
    pareto = pd.read_csv(search / "pareto.csv")
    row = pareto[pareto.method == "joint"].sort_values("latency_ms").iloc[0]
    assert jcw("finetune", *model, *data, "--device", "local-sparse", "--candidate", row.genes, "--out",
               tmp_path / "tuned.pt") == 0
    record = json.loads((tmp_path / "tuned.pt.json").read_text())
    before = record["validation"]["before"]
    assert (before["loss"], before["top1"]) == pytest.approx((row.loss, row.top1), abs=1e-9)
    assert before["images"] == 8 and before["as"].startswith("the search's estimate: l1 block masks, BatchNorm "
                                                             "recalibrated on 2 training batches (seed 1)")
    assert record["validation"]["after"]["images"] == 8 and record["validation"]["after_all"]["images"] == 10
    assert record["data"] == summary["data"]
