"""The one timing harness of the benchmarks: calibration, interleaved rounds, medians and ratios, machine info, JSON.

Every suite (`benchmarks/<suite>.py`) times its candidates -- minidl and what a PyTorch user would write instead --
with `compare`, and returns a JSON-able dict; `python -m benchmarks` runs the suites and writes each one's dict, with
the machine, the command, the settings and the load average around the run, to `<out>/<suite>.json` (atomically).

The method, one rule for every suite:

* **One thread** (`torch.set_num_threads(1)`; child processes get `OMP_NUM_THREADS=1`): the figures measure the
  work, not how it splits across cores.
* **Calibration** (`calibrate`): the candidates are warmed up round robin for `warmup_s` (at least twice each); then
  each one's time per call is measured on 1, 2, 4, ... consecutive calls until a batch lasts a quarter of a sample,
  then three more times on that many calls, and its sample is sized to about `sample_s` (`k` calls) from the least
  of the three. That time is the process CPU time (on a busy machine the wall clock of a few calls counts the time
  spent waiting for a core), or the wall clock where the device is synchronised (a GPU's work is not CPU time).
  Every candidate's samples last about as long, so each is as likely as another to be hit by an interruption, and
  an interruption adds as much to each one's time per call, relatively.
* **Interleaving** (`interleave`): in each round every candidate runs one sample, in rotating order (A B C, B C A,
  C A B, ...; for two: A B, B A), until `budget_s` has passed and at least `min_rounds` rounds ran, or `max_rounds`
  did. A burst of load from another program hits all the candidates alike.
* **Statistics** (`summarize`): per candidate the median, quartiles and minimum of the wall-clock time per call
  (`time.perf_counter`) and the median process CPU time (`time.process_time`, which does not count the time the
  process waited for a core); between the first candidate and each other one: the ratio of the medians, the median
  of the per-round ratios (each round's samples ran back to back), the ratio of the minima and of the CPU medians.
* **Single timings** (a stage timed alone, no comparison) use `torch.utils.benchmark.Timer` (`time_alone`).

Adding a suite (e.g. `names`, a language model's training step against its torch twin): write
`benchmarks/<name>.py` with a docstring (its first line is the suite's title) and

    QUICK = dict(sample_s=0.002, warmup_s=0.0, budget_s=0.0, min_rounds=3, max_rounds=3)  # `compare`'s settings
    FULL = dict(sample_s=0.02, warmup_s=1.0, budget_s=20.0, min_rounds=15, max_rounds=400)  # for --quick / full runs
    def run(ctx):                                   # ctx: a `Context` (quick, device, settings, compare, log)
        t = ctx.compare({'minidl': step, 'torch': torch_step})  # functions of no arguments; the first is the subject
        return dict(ratio=t['ratios']['minidl/torch'], timing=t)  # JSON-able; the harness adds machine, command...

and add its name to `SUITES` in `benchmarks/__init__.py` (one line). A suite that can run on CUDA sets
`DEVICES = ('cpu', 'cuda')` and synchronises through `ctx.sync`.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
import minidl  # noqa: E402
from minidl.files import atomic_open  # noqa: E402

RESULTS = ROOT / 'benchmarks' / 'results'  # where full runs write <suite>.json by default
SCHEMA = 2


def _nosync(): pass


def sample(fn: Callable, k: int, sync: Callable = _nosync) -> tuple[float, float]:
    "Run `fn` `k` times back to back; return the wall-clock and the process CPU seconds per call."
    sync()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(k): fn()
    sync()
    return (time.perf_counter() - t0) / k, (time.process_time() - c0) / k


def rotation(names, r: int) -> list:
    "The order of round `r`: the names rotated by r (A B C, B C A, C A B, ...)."
    names = list(names)
    s = r % len(names)
    return names[s:] + names[:s]


def calibrate(fns: dict, sample_s: float, warmup_s: float, sync: Callable = _nosync,
              before: dict | None = None) -> dict:
    "Warm the candidates up round robin, then size each one's sample to about `sample_s`: {name: calls per sample}."
    before = before or {}
    end, n = time.perf_counter() + warmup_s, 0
    while n < 2 or time.perf_counter() < end:
        for name, fn in fns.items():
            before.get(name, _nosync)()
            fn()
        n += 1
    ks = {}
    for name, fn in fns.items():
        before.get(name, _nosync)()
        def per_call(k):
            wall, cpu = sample(fn, k, sync)
            return wall if sync is not _nosync else cpu  # CPU work: CPU time, which waiting for a core does not inflate
        k = 1
        while per_call(k) * k < sample_s / 4 and k < 1 << 20: k *= 2
        ks[name] = max(1, round(sample_s / max(min(per_call(k) for _ in range(3)), 1e-9)))  # the least disturbed of 3
    return ks


def interleave(fns: dict, ks: dict, min_rounds: int, max_rounds: int, budget_s: float, sync: Callable = _nosync,
               before: dict | None = None) -> dict:
    "Rounds of one sample per candidate in rotating order: {name: [(wall, cpu) seconds per call, one per round]}."
    before = before or {}
    gc.collect()  # start from a clean heap; during the rounds the collector runs as it would in a training loop
    out = {name: [] for name in fns}
    start, r = time.perf_counter(), 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() - start < budget_s):
        for name in rotation(fns, r):
            before.get(name, _nosync)()
            out[name].append(sample(fns[name], ks[name], sync))
        r += 1
    return out


def quartiles(v) -> dict:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return dict(median=statistics.median(v), q1=q[0], q3=q[2], min=min(v))


def summarize(samples: dict, ks: dict | None = None) -> dict:
    "Medians, quartiles and ratios (first candidate over each other one) of `interleave`'s samples."
    names = list(samples)
    wall = {n: [w for w, _ in samples[n]] for n in names}
    cpu = {n: [c for _, c in samples[n]] for n in names}
    med = {n: statistics.median(v) for n, v in wall.items()}
    cmed = {n: statistics.median(v) for n, v in cpu.items()}
    a = names[0]
    others = names[1:]
    return dict(
        rounds=len(wall[a]), steps_per_sample=ks,
        time_s={n: dict(quartiles(v), samples=v) for n, v in wall.items()},
        cpu_time_s={n: dict(median=cmed[n], samples=cpu[n]) for n in names},
        ratios={f'{a}/{b}': med[a] / med[b] for b in others},
        paired_ratios={f'{a}/{b}': statistics.median(x / y for x, y in zip(wall[a], wall[b])) for b in others},
        min_ratios={f'{a}/{b}': min(wall[a]) / min(wall[b]) for b in others},
        cpu_ratios={f'{a}/{b}': cmed[a] / cmed[b] for b in others})


def compare(fns: dict, *, sample_s: float, warmup_s: float, budget_s: float, min_rounds: int, max_rounds: int,
            sync: Callable = _nosync, before: dict | None = None) -> dict:
    """Time the candidates `fns` ({name: function of no arguments}, the first one the subject) interleaved: calibrate,
    run the rounds, summarize. `before` ({name: function}) runs before each sample of that candidate, untimed."""
    ks = calibrate(fns, sample_s, warmup_s, sync, before)
    return summarize(interleave(fns, ks, min_rounds, max_rounds, budget_s, sync, before), ks)


def time_alone(fn: Callable, min_run_time: float) -> float:
    "The median process CPU time of one call of `fn`, timed alone by `torch.utils.benchmark.Timer` (one thread)."
    from torch.utils.benchmark import Timer
    fn(); fn()
    timer = Timer('fn()', globals={'fn': fn}, timer=time.process_time, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def load_average():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, 'getloadavg') else None


def machine_info(device: str = 'cpu') -> dict:
    "The CPU, memory, OS, Python, torch and minidl versions, threads, ATen's CPU capability, the load average now."
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration): pass
    mem_gib = None
    try:
        with open('/proc/meminfo') as f: mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError): pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(), memory_gib=mem_gib, os=platform.platform(),
                python=platform.python_version(), torch=torch.__version__, minidl=minidl.__version__,
                torch_threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                aten_cpu_capability_env=os.environ.get('ATEN_CPU_CAPABILITY'), mkl=torch.backends.mkl.is_available(),
                mkldnn=torch.backends.mkldnn.is_available(), device=device, load_average=load_average())
    if device.startswith('cuda') and torch.cuda.is_available(): info['gpu'] = torch.cuda.get_device_name()
    return info


def write_json(path: Path, obj) -> Path:
    "Write `obj` as JSON to `path` whole or not at all (a temporary file, then os.replace: minidl.files.atomic_open)."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, 'w') as f: f.write(json.dumps(obj, indent=1) + '\n')
    return path


@dataclass
class Context:
    "What a suite's `run` gets: the mode, the device, its timing settings (keyword arguments of `compare`)."
    quick: bool
    device: str = 'cpu'
    settings: dict = field(default_factory=dict)

    def sync(self):
        if self.device.startswith('cuda'): torch.cuda.synchronize()

    def compare(self, fns: dict, before: dict | None = None, **overrides) -> dict:
        "`compare` with this suite's settings (and `overrides`), synchronising the device around each sample."
        return compare(fns, **{**self.settings, **overrides}, sync=self.sync, before=before)

    def log(self, *args): print(*args, flush=True)


def run_suite(name: str, module, quick: bool, device: str, out_dir: Path | None, command: str) -> dict:
    "Run one suite in this process; return its record (and write it to `out_dir/<name>.json` if `out_dir`)."
    torch.set_num_threads(1)
    settings = dict(module.QUICK if quick else module.FULL)
    ctx = Context(quick=quick, device=device, settings=settings)
    created, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    machine = machine_info(device)
    print(f"== {name}: {module.__doc__.strip().splitlines()[0]}\n   minidl {minidl.__version__}, "
          f"torch {torch.__version__}, device {device}, torch.get_num_threads() = {torch.get_num_threads()}, "
          f"load average {machine['load_average']}"
          f"{' (quick run: the numbers mean nothing)' if quick else ''}", flush=True)
    result = module.run(ctx)
    machine['load_average_end'] = load_average()
    record = dict(schema=SCHEMA, suite=name, title=module.__doc__.strip().splitlines()[0],
                  created=created.isoformat(timespec='seconds'), seconds=round(time.perf_counter() - t0, 1),
                  command=command, quick=quick, machine=machine, settings=settings, **result)
    if out_dir is not None:
        print(f"   wrote {write_json(Path(out_dir) / f'{name}.json', record)}", flush=True)
    return record
