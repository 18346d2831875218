"""Re-run the CPU benchmarks one at a time, one thread, and log when each ran and the machine's load around it.

    python benchmarks/refresh.py                          # bench.py, bench_conv.py, bench_optim.py, bench_digits.py,
                                                          # bench_layers.py, bench_version_check.py, ablation.py
    python benchmarks/refresh.py bench_optim.py ...       # only these

Each script runs unchanged in its own process with `OMP_NUM_THREADS=1`, one after the other (never two at once: they
would compete for the cores). The scripts that only print (`bench_layers.py`, `bench_version_check.py`) run through
`record_output.py`, which keeps what they printed as JSON. `bench_distributed.py` is not run here (it starts its own
processes and needs both cores). A script whose file is missing is skipped. The log, `benchmarks/runs.json`, keeps
for each script the start time, the wall time, the exit status and the load average (1, 5, 15 minutes) before and
after it ran; the Performance page shows it next to the results.
"""
from __future__ import annotations
import datetime, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from minidl.files import atomic_open

SCRIPTS = ['bench.py', 'bench_conv.py', 'bench_optim.py', 'bench_digits.py', 'bench_layers.py', 'bench_seq.py', 'bench_version_check.py',
           'ablation.py']
VIA_RECORD = {'bench_layers.py', 'bench_seq.py', 'bench_version_check.py'}
LOG = ROOT / 'benchmarks' / 'runs.json'


def main(argv=None):
    names = (sys.argv[1:] if argv is None else argv) or SCRIPTS
    bad = [n for n in names if n not in SCRIPTS]
    if bad: sys.exit(f"refresh: expected scripts among {', '.join(SCRIPTS)}, got {', '.join(bad)}")
    log = json.loads(LOG.read_text()) if LOG.is_file() else {}
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    for name in names:
        if not (ROOT / 'benchmarks' / name).is_file(): print(f"refresh: {name} is missing, skipped"); continue
        cmd = [sys.executable, str(ROOT / 'benchmarks' / ('record_output.py' if name in VIA_RECORD else name))]
        if name in VIA_RECORD: cmd.append(name)
        print(f"refresh: {name}, load average {os.getloadavg()[0]:.2f}", flush=True)
        start, t0, load0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter(), os.getloadavg()
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        log[name] = dict(started=start.isoformat(timespec='seconds'), seconds=round(time.perf_counter() - t0, 1), exit=rc,
                         load_average=[round(x, 2) for x in load0], load_average_end=[round(x, 2) for x in os.getloadavg()],
                         threads_env='OMP_NUM_THREADS=1')
        with atomic_open(LOG, 'w') as f: f.write(json.dumps(log, indent=1) + '\n')
        if rc: print(f"refresh: {name} failed (exit {rc})", flush=True)


if __name__ == '__main__': main()
