"""The runs behind the names experiment's table: one model, one implementation, some seeds; one JSON file and one
checkpoint per run, written atomically, so that runs can go in parallel processes (one thread each) and be gathered
by the notebook (nbs/54_names.ipynb).

    python -m benchmarks.names_final minidl transformer 0,1,2 [--steps N] [--points P] [--train-names K] [--out DIR]
    python -m benchmarks.names_final torch mlp 0 ...

minidl runs are `minidl.experiments.names.run_names`; torch runs are `names_twins.train_torch` (the torch.nn twins, the
same initial weights and batches). Each JSON holds the run's NLLs, curve, wall and processor seconds, and the load
average at its start and end (the machine may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# run it as `python -m benchmarks.names_final`: as a script, its folder would come first on sys.path and
# benchmarks/names.py would hide the names package
from minidl import save_checkpoint  # noqa: E402
from minidl.experiments.names import MODELS, RECIPE, SPLIT_SEED, model_config, names_data, run_names  # noqa: E402
from minidl.experiments.names_data import load_names_split  # noqa: E402
from minidl.files import atomic_open  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog='names_final')
    p.add_argument('impl', choices=('minidl', 'torch'))
    p.add_argument('model', choices=tuple(MODELS))
    p.add_argument('seeds', type=lambda s: [int(v) for v in s.split(',')])
    p.add_argument('--steps', type=int, default=None)
    p.add_argument('--points', type=int, default=20)
    p.add_argument('--train-names', type=int, default=None, help='score the first K training names only (default: all)')
    p.add_argument('--out', type=Path, default=HERE.parent/'names-results'/'final')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    spec = MODELS[a.model]
    data = names_data(spec.kind, spec.context, load_names_split(SPLIT_SEED))
    for seed in a.seeds:
        t0, load0 = time.time(), os.getloadavg()
        stem = a.out/f"{a.impl}-{a.model}-seed{seed}"
        if a.impl == 'minidl':
            r = run_names(a.model, seed, steps=a.steps, data=data, points=a.points, train_names=a.train_names)
            d = {
                k: getattr(r, k)
                for k in (
                    'name',
                    'seed',
                    'steps',
                    'curve',
                    'train_nll',
                    'val_nll',
                    'test_nll',
                    'seconds',
                    'cpu_seconds',
                    'ms_per_step',
                    'parameters',
                )
            }
            save_checkpoint(
                f"{stem}.pt",
                r.model,
                names=dict(
                    config=model_config(r.model),
                    model=a.model,
                    seed=seed,
                    steps=r.steps,
                    val_nll=r.val_nll,
                    split_seed=SPLIT_SEED,
                ),
            )
        else:
            from benchmarks.names_twins import train_torch
            r = train_torch(a.model, seed, steps=a.steps, data=data, points=a.points, train_names=a.train_names)
            d = {k: v for k, v in r.items() if k != 'model'}
            with atomic_open(f"{stem}.pt", 'wb') as f: torch.save(r['model'].state_dict(), f)
        d.update(
            impl=a.impl,
            train_names=a.train_names,
            wall_total=time.time() - t0,
            load_start=load0,
            load_end=os.getloadavg(),
            torch=torch.__version__,
            recipe=RECIPE[a.model],
        )
        with atomic_open(f"{stem}.json", 'w') as f: json.dump(d, f, indent=1)
        print(a.impl, a.model, seed, f"train {d['train_nll']:.4f} val {d['val_nll']:.4f} test {d['test_nll']:.4f}",
              f"{d['seconds']:.0f} s ({d['cpu_seconds']:.0f} s CPU)", flush=True)
    return 0


if __name__ == '__main__': raise SystemExit(main())
