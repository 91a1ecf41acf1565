"""The adb transport against a SIMULATED phone: no Android device or emulator can run here.

tests/profiler/fake_device/adb stands in for the adb client (push/shell/devices mapped onto a temp dir that
plays the phone's filesystem, with the real client's error messages) and tests/profiler/fake_device/
benchmark_model prints benchmark_model's real output text in its three generations (see their
docstrings). The transport's own code, its shell script, the markers and the parser run for real.
The parser is also tested on output texts written exactly in benchmark_model's documented formats.
"""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from profiler.devices import load_devices
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.store import COLUMNS, OPTIONAL, ResultsStore
from profiler.transports import DeviceError, adb, open_transport
from profiler.transports.adb import cpus_of_mask, parse_batch, parse_benchmark_output

SPECS = [KernelSpec("conv", 14, 14, 32, c, density=d) for c in (16, 32) for d in (0.5, 1.0)] + [
    KernelSpec("dwconv", 14, 14, 32, 32, k=3, groups=32),
]

NEW_FORMAT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/mobilenet_v2.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/mobilenet_v2.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 13.9786
INFO: Initialized session in 41.305ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=21 first=27731 curr=23108 min=22950 max=27731 avg=23583.4 std=1012

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=23150 curr=23094 min=22861 max=24410 avg=23211.7 std=288

INFO: Inference timings in us: Init: 41305, First inference: 27731, Warmup (avg): 23583.4, Inference (avg): 23211.7
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.25 overall=31.4141
"""

OLD_FORMAT = """\
STARTING!
Num runs: [50]
Inter-run delay (seconds): [-1]
Num threads: [1]
Graph: [/data/local/tmp/resnet.tflite]
Use nnapi : [0]
Loaded model /data/local/tmp/resnet.tflite
resolved reporter
Initialized session in 48.019ms
Running benchmark for 1 iterations
count=1 curr=15908626

Running benchmark for 9 iterations
count=9 first=16856867 curr=16865810 min=16767506 max=17015249 avg=1.68505e+07 std=69772

Average inference timings in us: Warmup: 1.59086e+07, Init: 48019, no stats: 1.68505e+07
"""


def test_parser_reads_the_inference_avg_line_and_the_std_of_the_measured_count_line():
    r = parse_benchmark_output(NEW_FORMAT)
    assert r["median_ms"] == pytest.approx(23.2117) and r["runs"] == 50
    assert r["cv"] == pytest.approx(288 / 23211.7) and r["iqr_ms"] == pytest.approx(1.349 * 0.288)
    logcat = "\n".join(f"05-30 15:16:44.857  3380  3380 I tflite  : {line[6:]}" for line in NEW_FORMAT.splitlines())
    assert parse_benchmark_output(logcat)["median_ms"] == pytest.approx(23.2117)


def test_parser_reads_the_older_count_avg_std_format_with_scientific_notation():
    r = parse_benchmark_output(OLD_FORMAT)
    assert r["median_ms"] == pytest.approx(16850.5) and r["runs"] == 9 and r["cv"] == pytest.approx(69772 / 1.68505e7)
    only_counts = "count=50 first=37601 curr=37528 min=37413 max=37601 avg=37500.2 std=45\n"
    assert parse_benchmark_output(only_counts)["median_ms"] == pytest.approx(37.5002)
    no_std = "Inference timings in us: Init: 530, First inference: 1240, Warmup (avg): 1172.2, Inference (avg): 1160"
    r = parse_benchmark_output(no_std)
    assert r["median_ms"] == pytest.approx(1.16) and math.isnan(r["cv"])


def test_parser_finds_nothing_in_a_crash_and_batch_records_keep_the_tool_output():
    crash = "INFO: STARTING!\nINFO: Loaded model k.tflite\nINFO: Initialized session in 1.2ms.\nSegmentation fault\n"
    assert parse_benchmark_output(crash) is None
    lines = ["@@JCW start Pixel 7 14", "@@JCW begin a", *crash.splitlines(), "@@JCW cpu /x gov=schedutil cur=1800000 "
             "max=2000000 hwmax=2400000", "@@JCW battery 312", "@@JCW end a 139", "@@JCW begin b",
             *NEW_FORMAT.splitlines(), "@@JCW zone cpu-1-0 47300", "@@JCW end b 0", "@@JCW batch-end"]
    start, a, b, end = parse_batch(lines, max_temp_c=45)
    assert start == {"event": "start", "runtime": "benchmark_model (Pixel 7 14)"} and end == {"event": "end"}
    assert "Segmentation fault" in a["error"]
    assert a["error"].splitlines()[-1].startswith("benchmark_model failed (exit 139)")
    assert a["throttled"] and a["governor"] == "schedutil" and a["freq_mhz"] == 1800 and a["temp_c"] == 31.2
    assert b["median_ms"] == pytest.approx(23.2117) and b["temp_c"] == 47.3 and b["throttled"]


def test_cpu_mask_bits():
    assert cpus_of_mask("f0") == [4, 5, 6, 7] and cpus_of_mask("3") == [0, 1] and cpus_of_mask("80") == [7]


def pixel(phone, tmp_path, **extra):
    """The phone as the device 'pixel' of a devices.yaml in tmp_path: core 0, no cooldown, few samples."""
    fields = {"cpu_mask": "'1'", "cooldown_s": 0, "warmup": 2, "repeats": 10, "rounds": 1, **extra}
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n" + phone.device_yaml("pixel", **fields))
    return load_devices(path)["pixel"]


@pytest.mark.parametrize("fmt", ["new", "mid", "old"])
def test_profile_a_phone_one_push_and_one_shell_per_batch(tmp_path, phone, fmt, monkeypatch):
    phone.configure(format=fmt)
    store = ResultsStore(tmp_path / "pixel.csv")
    sleeps: list[float] = []  # the transport's clock: what it slept, without sleeping
    monkeypatch.setattr(adb, "time", SimpleNamespace(sleep=sleeps.append))
    result = profile_device(pixel(phone, tmp_path, cooldown_s=0.3), SPECS, store, batch_size=3)
    assert sleeps == [0.3]  # cooled down between the two batches, not before the first
    assert (result.measured, result.failed) == (len(SPECS), [])
    table = store.table
    assert (table.runtime_version == "benchmark_model (Simulated Pixel 14)").all()
    assert (table.latency_ms > 0).all() and (table.model_ms > table.baseline_ms).all()
    assert (table.governor == "schedutil").all() and (table.freq_mhz == 1800).all() and (table.temp_c == 31.2).all()
    assert not table.throttled.any()
    log = (phone.root / "adb.log").read_text().splitlines()
    assert [line.split()[2] for line in log if line.startswith("-s")].count("push") == 2
    assert [line.split()[2] for line in log if line.startswith("-s")].count("shell") == 3  # check + 2 batches
    assert list((phone.root / "data/local/tmp/jcw").iterdir()) == []  # every batch dir removed on the phone
    reread = pd.read_csv(tmp_path / "pixel.csv")
    assert list(reread.columns) == COLUMNS


def test_latency_is_parsed_to_the_digit(tmp_path, phone):
    phone.configure(format="old")
    device = pixel(phone, tmp_path)
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "m.tflite").write_bytes(b"\0" * 20000)
    (batch / "job.json").write_text(json.dumps({"models": [{"id": "m", "file": "m.tflite"}], "threads": 1}))
    records = list(open_transport(device).run(batch))
    assert records[1]["id"] == "m" and records[1]["median_ms"] == pytest.approx((20 + 20000 / 200) / 1000)


def test_a_crashing_or_silent_model_fails_alone_with_the_tool_output(tmp_path, phone):
    phone.configure(crash=["conv_14x14_32-16_k1s1_d0.5"], garbage=["conv_14x14_32-32_k1s1_d1"])
    store = ResultsStore(tmp_path / "pixel.csv")
    result = profile_device(pixel(phone, tmp_path), SPECS, store, batch_size=8)
    assert result.measured == len(SPECS) - 2
    errors = {spec.cout: error for spec, error in result.failed}
    assert "Initialized session" in errors[16] and "exit 139" in errors[16].splitlines()[-1]
    assert "Benchmarking failed." in errors[32] and "no timing line" in errors[32]


def test_throttled_rows_are_flagged(tmp_path, phone):
    (phone.root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq").write_text("1200000\n")
    store = ResultsStore(tmp_path / "pixel.csv")
    profile_device(pixel(phone, tmp_path), SPECS[:1], store)
    assert store.table.throttled.all()
    (phone.root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq").write_text("2400000\n")
    store = ResultsStore(tmp_path / "hot.csv")
    profile_device(pixel(phone, tmp_path, max_temp_c=30), SPECS[:1], store)
    assert store.table.throttled.all()


def test_phone_offline_mid_batch_keeps_rows_names_the_device_and_resume_completes(tmp_path, phone):
    phone.configure(offline_after=5)  # batch 1 = 3 kernels + 1 baseline; dies in batch 2
    store = ResultsStore(tmp_path / "pixel.csv")
    with pytest.raises(DeviceError, match=r"device 'pixel' \(adb serial R58M12ABCDE\): phone went away.*offline.*"
                                          r"re-run to resume") as info:
        profile_device(pixel(phone, tmp_path), SPECS, store, batch_size=3)
    assert "\n" not in str(info.value)
    assert len(ResultsStore(tmp_path / "pixel.csv").table) == 3
    (phone.root / "state").write_text("device")
    phone.configure()
    result = profile_device(pixel(phone, tmp_path), SPECS, ResultsStore(tmp_path / "pixel.csv"), batch_size=3)
    assert (result.skipped, result.measured) == (3, len(SPECS) - 3)


def test_unknown_serial_unauthorized_missing_tool_and_missing_adb_are_clear(tmp_path, phone):
    with pytest.raises(DeviceError, match=r"device 'pixel'.*no phone with this serial is attached.*"
                                          rf"lists: {phone.serial} \(device\)"):
        open_transport(pixel(phone, tmp_path, serial="0123456789"))
    (phone.root / "state").write_text("unauthorized")
    with pytest.raises(DeviceError, match="USB debugging is not authorized"):
        open_transport(pixel(phone, tmp_path))
    (phone.root / "state").write_text("device")
    with pytest.raises(DeviceError, match=r"benchmark_model not found .* at /data/local/tmp/bm on the phone"):
        open_transport(pixel(phone, tmp_path, benchmark_model="/data/local/tmp/bm"))
    with pytest.raises(DeviceError, match=r"cannot run the adb client '/no/adb' \(No such file or directory\)"):
        open_transport(pixel(phone, tmp_path, adb="/no/adb"))


@pytest.mark.parametrize("field, value", [
    ("serial", "'x; reboot'"), ("serial", "'-H evil'"), ("serial", "'$(reboot)'"),
    ("benchmark_model", "'/data/local/tmp/bm; reboot'"), ("benchmark_model", "bm"),
    ("work_dir", "'/data/local/tmp/`reboot`'"), ("work_dir", "'~/jcw'"), ("cpu_mask", "'f0; reboot'"),
])
def test_hostile_fields_are_refused_by_the_schema(fake_phone, tmp_path, field, value):
    with pytest.raises(UserError, match=f"device 'pixel': field '{field}'"):
        pixel(fake_phone, tmp_path, **{field: value})


def test_odd_but_valid_work_dir_is_quoted(tmp_path, phone):
    store = ResultsStore(tmp_path / "pixel.csv")
    profile_device(pixel(phone, tmp_path, work_dir="/data/local/tmp/j+c.w-1"), SPECS[:1], store)
    assert len(store.table) == 1 and list((phone.root / "data/local/tmp/j+c.w-1").iterdir()) == []


def test_tables_written_before_the_device_state_columns_still_load(tmp_path):
    path = tmp_path / "old.csv"
    row = {**SPECS[0].to_row(), "device": "d", "runtime": "xnnpack", "runtime_version": "r", "latency_ms": 1.0,
           "iqr_ms": 0.1, "cv": 0.01, "model_ms": 1.1, "baseline_ms": 0.1, "runs": 10, "timestamp": "t",
           "version": "0.1.0"}
    pd.DataFrame([row]).to_csv(path, index=False)
    store = ResultsStore(path)
    assert set(store.table.columns) == set(COLUMNS) and store.table.throttled.tolist() == [OPTIONAL["throttled"]]
    store.append([{**row, "density": 0.25, "governor": "performance", "freq_mhz": 2400.0, "temp_c": 30.0,
                   "throttled": False}])
    assert len(ResultsStore(path).table) == 2


def test_a_phone_dropping_mid_run_stops_only_itself_in_a_farm(tmp_path, phone, capsys):
    """`jcw profile --device pixel --device here`, the phone offline in its 2nd batch: only it stops; re-run resumes."""
    from jcw.cli import main

    phone.configure(offline_after=5)
    pixel(phone, tmp_path)
    devices = tmp_path / "devices.yaml"
    devices.write_text(devices.read_text() + "  here:\n    transport: local\n    runtime: litert\n    warmup: 1\n"
                       "    repeats: 5\n    rounds: 1\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels:\n  - {op: conv, hw: 14, cin: 32, cout: [8, 16, 24, 32], density: [0.5, 1.0]}\n")
    out = tmp_path / "results"
    args = ["profile", "--device", "pixel", "--device", "here", "--devices", str(devices), "--plan", str(plan),
            "--out", str(out), "--batch-size", "3"]
    assert main(args) == 1
    assert "pixel: stopped: device 'pixel'" in capsys.readouterr().err
    assert len(pd.read_csv(out / "here.csv")) == 8 and len(pd.read_csv(out / "pixel.csv")) == 3
    (phone.root / "state").write_text("device")
    phone.configure()
    assert main(args) == 0
    assert len(pd.read_csv(out / "pixel.csv")) == 8
