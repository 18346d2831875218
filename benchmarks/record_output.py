"""Run a benchmark script that only prints its table, and keep what it printed as JSON for the Performance page.

    python benchmarks/record_output.py bench_layers.py          # writes benchmarks/results_layers.json
    python benchmarks/record_output.py bench_version_check.py   # writes benchmarks/results_version_check.json
    python benchmarks/record_output.py bench_seq.py --clock cpu # options after the script's name are passed to it

`bench_layers.py` and `bench_version_check.py` print a table and write nothing; this wrapper runs one of them unchanged
(in a child process, `OMP_NUM_THREADS=1`; the scripts set one torch thread themselves), and writes the printed lines
together with the command, the date, the load average before and after, and the torch version, atomically. The page
parses the printed lines; it times nothing itself.
"""
from __future__ import annotations
import datetime, json, os, platform, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from minidl.files import atomic_open

OUTPUTS = {'bench_layers.py': 'results_layers.json', 'bench_version_check.py': 'results_version_check.json',
           'bench_seq.py': 'results_seq.json'}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in OUTPUTS:
        sys.exit(f"usage: python benchmarks/record_output.py {{{'|'.join(OUTPUTS)}}} [the script's options], got {' '.join(argv) or 'nothing'}")
    script, options = argv[0], argv[1:]
    import torch
    load0, t0 = os.getloadavg(), datetime.datetime.now(datetime.timezone.utc)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / script), *options], cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode: sys.exit(f"record_output: {script} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    t1 = datetime.datetime.now(datetime.timezone.utc)
    result = dict(schema=1, command=' '.join([f"python benchmarks/{script}", *options]), created=t0.isoformat(timespec='seconds'),
                  seconds=round((t1 - t0).total_seconds(), 1), load_average=list(load0), load_average_end=list(os.getloadavg()),
                  machine=dict(logical_cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                               os=platform.platform()),
                  stdout=run.stdout.splitlines())
    sys.stdout.write(run.stdout)
    with atomic_open(ROOT / 'benchmarks' / OUTPUTS[script], 'w') as f: f.write(json.dumps(result, indent=1) + '\n')
    print(f"wrote benchmarks/{OUTPUTS[script]}")


if __name__ == '__main__': main()
