#!/usr/bin/env python3
"""Time a batch of models on this device and print one JSON line per model.

    python3 runner.py [--watch-stdin] BATCH_DIR

Self-contained on purpose: it is copied to devices (SSH boards) and must not import the project.
It needs the standard library, numpy and one of ai_edge_litert, tflite_runtime or onnxruntime.
BATCH_DIR/job.json holds the settings (runtime, xnnpack, threads, cpus, warmup, repeats, rounds,
max_cv, max_extra_rounds, min_sample_ms, clock) and the models [{"id", "file"}].

The clock is "wall" (time.perf_counter) or "instructions": on the emulated ARM device, the guest instructions the
process executed, as counted by the qemu plugin scripts/qemu-insn-clock.c (which writes the count to the file named
by JCW_INSN_FILE whenever this process seeks descriptor INSN_MARK), reported as milliseconds of a core that runs one
instruction per nanosecond: the same on an idle or a busy machine.

Protocol: load every model, warm each up, size an inner loop so one sample lasts min_sample_ms,
then interleave the models over `rounds` rounds of `repeats` samples; models whose spread (CV) is
above max_cv get extra rounds. A model that fails to load or run is reported with its error and
the rest go on. With --watch-stdin the runner exits as soon as its stdin reaches end of file: the
profiler keeps it open while it waits for the results, so a Ctrl-C'd or killed `jcw` (or a closed SSH
channel) never leaves a runner holding the device.
"""

import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
import traceback

ABANDONED = 3  # exit status when stdin closed before the batch finished
INSN_MARK = -4242  # the descriptor whose lseek asks the instruction-clock plugin for its count
INSN_PER_MS = 1e6  # the instruction clock's milliseconds: one instruction per nanosecond


def emit(record):
    print(json.dumps(record), flush=True)


def exit_when_stdin_closes():
    """Exit at once, from a watching thread, when stdin reaches end of file: whoever waits for us is gone."""

    def watch():
        while os.read(0, 4096):  # the raw fd: a daemon thread in a buffered read would abort the exit
            pass
        os._exit(ABANDONED)

    threading.Thread(target=watch, daemon=True).start()


def import_runtime(name):
    """Return (module, version) of the requested runtime, trying each package that provides it."""
    candidates = {
        "litert": ["ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"],
        "onnxruntime": ["onnxruntime"],
    }[name]
    missing = []
    for module_name in candidates:
        try:
            module = __import__(module_name, fromlist=["_"])
        except ImportError as err:
            missing.append(f"{module_name} ({err})")
            continue
        top = sys.modules[module_name.split(".")[0]]
        return module, f"{module_name} {getattr(top, '__version__', '?')}"
    raise RuntimeError(f"no {name} runtime on this device; tried: {'; '.join(missing)}")


def tflite_session(module, path, job):
    import numpy as np

    kwargs = {"model_path": path, "num_threads": job.get("threads", 1)}
    if not job.get("xnnpack", True):
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = module.Interpreter(**kwargs)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        data = np.random.default_rng(0).standard_normal(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], data)
    return interpreter.invoke


def onnx_session(module, path, job):
    import numpy as np

    options = module.SessionOptions()
    options.intra_op_num_threads = job.get("threads", 1)
    options.inter_op_num_threads = 1
    session = module.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()
    }
    return lambda: session.run(None, feeds)


def wall_ms():
    return time.perf_counter_ns() / 1e6


def instructions_ms():
    """The guest instructions executed so far, in ms of the instruction clock (see the module's docstring)."""
    path = os.environ.get("JCW_INSN_FILE")
    if not path:
        raise RuntimeError("the instruction clock needs the arm-emu python wrapper's plugin (JCW_INSN_FILE unset)")
    with contextlib.suppress(OSError):  # fails (EBADF) after the plugin has written the count
        os.lseek(INSN_MARK, 0, os.SEEK_CUR)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if not text.strip():
        raise RuntimeError(f"the instruction clock's plugin wrote no count to {path}: run this device's python "
                           "through the arm-emu wrapper (make arm-emu), which loads it")
    return int(text) / INSN_PER_MS


CLOCKS = {"wall": wall_ms, "instructions": instructions_ms}


def take_samples(run, inner, count, clock=wall_ms):
    samples = []
    for _ in range(count):
        start = clock()
        for _ in range(inner):
            run()
        samples.append((clock() - start) / inner)
    return samples


def summarise(samples):
    median = statistics.median(samples)
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [median] * 3
    mean = statistics.fmean(samples)
    cv = statistics.pstdev(samples) / mean if mean > 0 else 0.0
    return {"median_ms": median, "iqr_ms": q[2] - q[0], "cv": cv}


def main(batch_dir):
    with open(os.path.join(batch_dir, "job.json")) as f:
        job = json.load(f)
    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])
    module, version = import_runtime(job["runtime"])
    clock = CLOCKS[job.get("clock", "wall")]
    emit({"event": "start", "runtime": version, "python": platform.python_version(), "host": platform.node()})
    make_session = onnx_session if job["runtime"] == "onnxruntime" else tflite_session

    runs = {}
    for model in job["models"]:
        try:
            run = make_session(module, os.path.join(batch_dir, model["file"]), job)
            for _ in range(max(1, job.get("warmup", 3))):
                run()
            start = clock()
            run()
            once_ms = clock() - start
            runs[model["id"]] = (run, max(1, int(job.get("min_sample_ms", 1.0) / max(once_ms, 1e-3))))
        except Exception as err:  # one bad model must not stop the batch
            emit({"id": model["id"], "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()})

    samples = {mid: [] for mid in runs}
    rounds = job.get("rounds", 3)
    pending = list(runs)
    for round_index in range(rounds + job.get("max_extra_rounds", 3)):
        for mid in pending:  # interleave: every model once per round
            run, inner = runs[mid]
            try:
                samples[mid] += take_samples(run, inner, job.get("repeats", 10), clock)
            except Exception as err:
                emit({"id": mid, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()})
                del runs[mid]
        if round_index + 1 >= rounds:
            pending = [m for m in runs if summarise(samples[m])["cv"] > job.get("max_cv", 0.1)]
            if not pending:
                break
        else:
            pending = list(runs)
    for mid, (_, inner) in runs.items():
        emit({"id": mid, **summarise(samples[mid]), "runs": len(samples[mid]) * inner, "samples": len(samples[mid])})
    emit({"event": "end"})


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--watch-stdin"]:
        exit_when_stdin_closes()
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    main(args[0])
