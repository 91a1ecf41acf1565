"""Android phones over the real `adb` client, timed by TFLite's `benchmark_model` on the phone.

Per batch: one `adb -s SERIAL push` of the batch dir to WORK_DIR/jcw-<pid>-<random> (<pid>: this
process), then ONE `adb shell` that runs benchmark_model on each model (pinned with taskset to
`cpu_mask`) between `@@JCW begin ID` / `@@JCW end ID STATUS` markers, reports the pinned cores'
governor and frequencies and the temperatures after each model, and removes the dir. benchmark_model
output is parsed in both of its formats into the runner's record format (see profiler/runner.py).

A batch cut short (abort, Ctrl-C, timeout) is killed on the phone too: the batch shell writes its pid
to DIR/jcw.pid, and a second `adb shell` stops that shell, kills its children (benchmark_model) and
removes DIR. Dirs of killed runs (their <pid> gone from this machine) are removed at the next connect.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shlex
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from profiler.devices import Device
from profiler.transports import DeviceError, Interrupted, pid_alive

MARK = "@@JCW"
WORK_DIR = "/data/local/tmp/jcw"
COOLDOWN_S = 10.0
COMMAND_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 15.0
CPUFREQ = "/sys/devices/system/cpu/cpu{}/cpufreq"
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_INFERENCE_AVG = re.compile(rf"Inference timings in us:.*Inference \(avg\): ({_NUMBER})")
_COUNT_LINE = re.compile(r"\bcount=\d+(?:\s+\w+=\S+)*")
_PAIR = re.compile(rf"(\w+)=({_NUMBER})")

# Reads what the phone reports after each model: governor and cur/max/hardware-max kHz of the pinned
# cores, battery temperature (tenths of a degree) and CPU thermal zones (millidegrees).
_STATE_FN = (
    "jcw_state() {{ for f in {dirs}; do echo \"" + MARK + " cpu $f gov=$(cat $f/scaling_governor 2>/dev/null)"
    " cur=$(cat $f/scaling_cur_freq 2>/dev/null) max=$(cat $f/scaling_max_freq 2>/dev/null)"
    " hwmax=$(cat $f/cpuinfo_max_freq 2>/dev/null)\"; done;"
    " echo \"" + MARK + " battery $(cat /sys/class/power_supply/battery/temp 2>/dev/null)\";"
    " for z in /sys/class/thermal/thermal_zone*; do t=$(cat $z/type 2>/dev/null);"
    " case $t in *cpu*|*CPU*) echo \"" + MARK + " zone $t $(cat $z/temp 2>/dev/null)\";; esac; done; }}"
)


def parse_benchmark_output(text: str) -> dict | None:
    """median_ms, iqr_ms, cv and runs from benchmark_model's output (either format); None if it has no timing."""
    # Newer builds print `Inference timings in us: ..., Inference (avg): X`; every build prints
    # `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` lines, warm-up first, the measured runs last.
    # iqr_ms is estimated from std as 1.349 std (exact for a normal distribution).
    counts = [dict(_PAIR.findall(m.group(0))) for m in _COUNT_LINE.finditer(text)]
    last = next((c for c in reversed(counts) if "avg" in c), None)
    inference = _INFERENCE_AVG.search(text)
    if inference:
        avg_us = float(inference.group(1))
    elif last:
        avg_us = float(last["avg"])
    else:
        return None
    std_us = float(last["std"]) if last and "std" in last else math.nan
    runs = int(last["count"]) if last else 0
    return {"median_ms": avg_us / 1000, "iqr_ms": 1.349 * std_us / 1000,
            "cv": std_us / avg_us if avg_us > 0 else math.nan, "runs": runs, "samples": runs}


def cpus_of_mask(mask: str) -> list[int]:
    """The cores set in a taskset hex mask ("f0" -> [4, 5, 6, 7])."""
    bits = int(mask, 16)
    return [i for i in range(bits.bit_length()) if bits >> i & 1]


def device_state(lines: Iterable[str], max_temp_c: float | None) -> dict:
    """governor, freq_mhz, temp_c and throttled from the state lines printed after a model."""
    # Throttled: a pinned core's frequency is capped below its hardware maximum (thermal capping lowers
    # scaling_max_freq), or the temperature reached the entry's max_temp_c.
    governors, freqs, capped, zones, battery = [], [], False, [], math.nan
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "cpu":
            pairs = dict(re.findall(r"(\w+)=(\S*)", rest))
            governors.append(pairs.get("gov", ""))
            nums = {k: int(v) for k, v in pairs.items() if k != "gov" and v.isdigit()}
            if "cur" in nums:
                freqs.append(nums["cur"] / 1000)
            capped |= "max" in nums and "hwmax" in nums and nums["max"] < nums["hwmax"]
        elif kind == "battery" and re.fullmatch(r"-?\d+", rest.strip()):
            battery = int(rest) / 10
        elif kind == "zone" and re.fullmatch(r"\S+ -?\d+", rest.strip()):
            value = int(rest.split()[1])
            zones.append(value / 1000 if abs(value) >= 1000 else float(value))
    temp = max(zones) if zones else battery
    hot = max_temp_c is not None and not math.isnan(temp) and temp >= max_temp_c
    return {"governor": "/".join(sorted(set(g for g in governors if g))),
            "freq_mhz": sum(freqs) / len(freqs) if freqs else math.nan, "temp_c": temp, "throttled": capped or hot}


def parse_batch(lines: Iterable[str], max_temp_c: float | None = None) -> Iterator[dict]:
    """Records (the runner's format) from the marked output of one batch shell."""
    section: list[str] | None = None
    state: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.startswith(MARK + " "):
            if section is not None:
                section.append(line)
            continue
        kind, _, rest = line[len(MARK) + 1:].partition(" ")
        if kind == "start":
            yield {"event": "start", "runtime": f"benchmark_model ({rest.strip() or 'Android'})"}
        elif kind == "begin":
            section, state = [], []
        elif kind in ("cpu", "battery", "zone"):
            state.append(f"{kind} {rest}")
        elif kind == "end" and section is not None:
            model_id, _, status = rest.partition(" ")
            yield {"id": model_id, **_model_record("\n".join(section), status.strip()),
                   **device_state(state, max_temp_c)}
            section = None
        elif kind == "batch-end":
            yield {"event": "end"}


def _model_record(output: str, status: str) -> dict:
    timing = parse_benchmark_output(output) if status == "0" else None
    if timing is not None:
        return timing
    tail = [line for line in output.strip().splitlines() if line.strip()]
    why = f"exit {status}" if status != "0" else "no timing line in its output"
    last = tail[-1].strip() if tail else "(no output)"
    return {"error": "\n".join(tail[-40:] + [f"benchmark_model failed ({why}): {last}"])}


class AdbTransport:
    """One phone, by serial; `run` measures one batch per push + shell."""

    def __init__(self, device: Device):
        self.device = device
        opts = device.options
        self.adb = os.path.expanduser(opts.get("adb", "adb"))
        self.serial = opts["serial"]
        self.benchmark_model = opts["benchmark_model"]
        self.work_dir = opts.get("work_dir", WORK_DIR).rstrip("/") or "/"
        self.cpu_mask = opts.get("cpu_mask")
        self.cooldown_s = opts.get("cooldown_s", COOLDOWN_S)
        self.max_temp_c = opts.get("max_temp_c")
        self.timeout = opts.get("command_timeout", COMMAND_TIMEOUT_S)
        self.batches = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._aborted = False
        self._check_attached()
        check = (f"[ -x {shlex.quote(self.benchmark_model)} ] && echo {MARK}-ok || echo {MARK}-missing; "
                 f"ls {shlex.quote(self.work_dir)} 2>/dev/null || true")
        out = self._adb("shell", check, timeout=60)
        if f"{MARK}-ok" not in out:
            raise self._fail(
                f"benchmark_model not found or not executable at {self.benchmark_model} on the phone: download "
                "the android_aarch64 benchmark_model binary (LiteRT/TFLite nightly), `adb push` it there and "
                f"`adb shell chmod +x {self.benchmark_model}`, or fix benchmark_model: in devices.yaml")
        self._remove_stale(out.split())

    def _fail(self, what: str) -> DeviceError:
        return DeviceError(f"device '{self.device.name}' (adb serial {self.serial}): {what}")

    def _run_adb(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.adb, *args], capture_output=True, text=True, errors="replace",
                                  timeout=timeout)
        except OSError as err:
            raise self._no_adb(err) from None
        except subprocess.TimeoutExpired:
            raise self._fail(f"`adb {' '.join(args[:3])}` timed out after {timeout:g} s") from None

    def _no_adb(self, err: OSError) -> DeviceError:
        return self._fail(f"cannot run the adb client '{self.adb}' ({err.strerror}): install it (apt-get install adb) "
                          "or set adb: in devices.yaml")

    def _adb(self, *args: str, timeout: float) -> str:
        """Run `adb -s SERIAL ARGS`; its output, or DeviceError saying what happened to the phone."""
        proc = self._run_adb(["-s", self.serial, *args], timeout)
        if proc.returncode:
            raise self._lost(proc.stdout + proc.stderr)
        return proc.stdout

    def _lost(self, output: str) -> DeviceError:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        last = lines[-1] if lines else "(no output)"
        if "offline" in output or "not found" in output or "no devices" in output:
            return self._fail(f"phone went away ({last}); reconnect it (check `adb devices`) and re-run to resume: "
                              "finished batches are stored")
        if "unauthorized" in output:
            return self._fail("USB debugging is not authorized: unlock the phone and accept the prompt")
        return self._fail(f"adb failed: {last}")

    def _check_attached(self) -> None:
        proc = self._run_adb(["devices"], timeout=60)
        states = dict(line.split()[:2] for line in proc.stdout.splitlines()
                      if "\t" in line and len(line.split()) >= 2)
        state = states.get(self.serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
            raise self._fail(f"no phone with this serial is attached (`adb devices` lists: {listed}); plug it in "
                             "with USB debugging on, or fix serial: in devices.yaml")
        if state == "unauthorized":
            raise self._fail("USB debugging is not authorized: unlock the phone and accept the prompt")
        if state != "device":
            raise self._fail(f"phone is {state}; reconnect it (replug, or `adb reconnect`)")

    def _remove_stale(self, names: list[str]) -> None:
        """Remove the work_dir entries named jcw-<pid>-<hex> whose <pid> (a profiler on this machine) is gone."""
        stale = [f"{self.work_dir}/{name}" for name in names
                 if (m := re.fullmatch(r"jcw-(\d+)-[0-9a-f]+", name)) and not pid_alive(int(m.group(1)))]
        if stale:
            self._adb("shell", "rm -rf -- " + " ".join(shlex.quote(path) for path in stale), timeout=60)

    def script(self, models: list[dict], remote: str, job: dict) -> str:
        """The one shell command that benchmarks every model of a batch on the phone."""
        q = shlex.quote(remote)
        mask = self.cpu_mask or (format(sum(1 << c for c in job["cpus"]), "x") if job.get("cpus") else "")
        dirs = " ".join(CPUFREQ.format(c) for c in cpus_of_mask(mask)) if mask else CPUFREQ.format("[0-9]*")
        pin = f"taskset {mask} " if mask else ""
        flags = (f"--num_threads={int(job.get('threads', 1))} --warmup_runs={int(job.get('warmup', 3))} "
                 f"--num_runs={int(job.get('repeats', 20)) * int(job.get('rounds', 1))} "
                 f"--use_xnnpack={'true' if job.get('xnnpack', True) else 'false'}")
        bench = (f"jcw_bench() {{ echo \"{MARK} begin $1\"; {pin}{shlex.quote(self.benchmark_model)} "
                 f"--graph=\"$2\" {flags} 2>&1; s=$?; echo; jcw_state; echo \"{MARK} end $1 $s\"; }}")
        calls = [f"jcw_bench {shlex.quote(m['id'])} {shlex.quote(m['file'])}" for m in models]
        return "; ".join([
            f"cd {q} || exit 97", "echo $$ > jcw.pid",
            f"echo \"{MARK} start $(getprop ro.product.model 2>/dev/null) $(getprop ro.build.version.release "
            "2>/dev/null)\"",
            _STATE_FN.format(dirs=dirs), bench, *calls,
            f"cd / && rm -rf -- {q}", f"echo \"{MARK} batch-end\"",
        ])

    def run(self, batch_dir: Path) -> Iterator[dict]:
        if self.batches and self.cooldown_s:
            time.sleep(self.cooldown_s)  # let the phone cool down between batches
        self.batches += 1
        job = json.loads((batch_dir / "job.json").read_text())
        remote = f"{self.work_dir}/jcw-{os.getpid()}-{secrets.token_hex(8)}"
        self._adb("push", str(batch_dir), remote, timeout=self.timeout)
        proc = self._start(self.script(job["models"], remote, job))
        expired = threading.Event()
        timer = threading.Timer(self.timeout, lambda: (expired.set(), proc.kill()))
        timer.start()
        tail: list[str] = []
        finished = cut_short = False
        try:
            for record in parse_batch(_remember(proc.stdout, tail), self.max_temp_c):
                finished |= record.get("event") == "end"
                yield record
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                cut_short = True
            if not finished and (cut_short or self._aborted or expired.is_set()):
                self._stop_on_phone(remote)
        if finished:
            return
        if self._aborted:
            raise Interrupted(f"device '{self.device.name}': stopped")
        if expired.is_set():
            raise self._fail(f"batch did not finish within {self.timeout:g} s (command_timeout)")
        state = self._run_adb(["-s", self.serial, "get-state"], timeout=60)
        if state.stdout.strip() != "device":
            raise self._lost(state.stdout + state.stderr)
        raise self._fail(f"the batch shell stopped early (exit {proc.returncode}): "
                         f"{tail[-1].strip() if tail else '(no output)'}")

    def _start(self, command: str) -> subprocess.Popen:
        """The `adb shell` running a batch's command."""
        with self._lock:
            if self._aborted:
                raise Interrupted(f"device '{self.device.name}': stopped")
            try:
                self._proc = subprocess.Popen([self.adb, "-s", self.serial, "shell", command], stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, errors="replace")
            except OSError as err:
                raise self._no_adb(err) from None
            return self._proc

    def _stop_on_phone(self, remote: str) -> None:
        """Best effort: stop a batch shell cut short (then its benchmark_model) and remove its dir on the phone."""
        q = shlex.quote(remote)
        # stopped first, so that the shell starts no next model between its children's kill and its own
        stop = (f"p=$(cat {q}/jcw.pid 2>/dev/null); "
                f"if [ -n \"$p\" ]; then kill -STOP $p; pkill -9 -P $p; kill -9 $p; fi; rm -rf -- {q}")
        with contextlib.suppress(DeviceError):
            self._run_adb(["-s", self.serial, "shell", stop], timeout=STOP_TIMEOUT_S)

    def abort(self) -> None:
        """Kill the running batch's `adb shell`; `run` then stops the batch on the phone and raises Interrupted."""
        with self._lock:
            self._aborted = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def close(self) -> None:
        pass


def _remember(lines: Iterable[str], tail: list[str], keep: int = 20) -> Iterator[str]:
    """Pass lines through, keeping the last `keep` of them in `tail` for error messages."""
    for line in lines:
        tail.append(line)
        del tail[:-keep]
        yield line
