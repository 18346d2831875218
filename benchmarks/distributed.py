"""Data-parallel throughput: samples per second of minidl training with 1 and 2 processes, and the all-reduce time.

Each configuration -- 1 process, 2 processes, and the control, 2 processes that never exchange gradients -- runs in
fresh processes (one thread each, gloo over 127.0.0.1, launched by torchrun), in rotating order (the harness's
interleaving, one configuration per turn), and the best repeat is kept (the least disturbed by other work on the
machine). The global batch is the same for 1 and 2 processes, so both do the same work per step. This suite needs
both cores: it starts its own processes, and `python -m benchmarks all` runs it last, alone.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import ROOT, rotation

QUICK = dict(repeats=1, steps=2, models=('mlp',))
FULL = dict(repeats=3, steps=10, models=('mlp', 'mlp_b1024', 'cnn'))
CONFIGS = (1, 2, 'no_sync')
MODELS = dict(  # the wide MLP is compute-bound: many flops per byte of gradient
    mlp=dict(what='MLP 512-2048-2048-10, float32, MSE', batch=512),
    mlp_b1024=dict(what='MLP 512-2048-2048-10 (global batch 1024), float32, MSE', batch=1024),
    cnn=dict(what='CNN conv(1,16,3)-ReLU-maxpool-conv(16,32,3)-ReLU-maxpool-flatten-linear(800,10) on 28x28, '
                  'float32, MSE', batch=256),
)


def _build(name):
    from minidl import Linear, ReLU, Sequential
    g = torch.Generator().manual_seed(0)
    if name.startswith('mlp'):
        model = Sequential(Linear(512, 2048), ReLU(), Linear(2048, 2048), ReLU(), Linear(2048, 10))
        x = torch.randn(4096, 512, generator=g)
    else:
        from minidl import Conv2d, Flatten, MaxPool2d
        model = Sequential(Conv2d(1, 16, 3), ReLU(), MaxPool2d(2), Conv2d(16, 32, 3), ReLU(), MaxPool2d(2), Flatten(),
                           Linear(800, 10))
        x = torch.randn(4096, 1, 28, 28, generator=g)
    return model, x, torch.randn(len(x), 10, generator=g)


def worker(name, steps, out, sync=True):
    import torch.distributed as dist

    from minidl import SGD, LossMSE
    from minidl import distributed as D
    torch.set_num_threads(1)
    D.init_distributed(timeout=120)
    with D.fail_fast():
        model, x, y = _build(name)
        batch, world = MODELS[name]['batch'], D.get_world_size()
        dp = D.DataParallel(model, len(x), batch, seed=0, timed=True)
        loss_fn, opt = LossMSE(), SGD(model.parameters(), lr=1e-4)
        batches = [b for e in range(1, 100) for b in dp.sampler(e)][:steps + 2]

        def step(idx):
            loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            if sync: dp.after_backward(model, idx)
            opt.step()
        for idx in batches[:2]: step(idx)  # warm-up
        dp.comm_seconds, dp.steps = 0.0, 0
        D.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        for idx in batches[2:]: step(idx)
        # this process's CPU time: robust to a busy machine
        cpu = torch.tensor([time.process_time() - c0], dtype=torch.float64)
        D.barrier()
        seconds = time.perf_counter() - t0
        if world > 1: dist.all_reduce(cpu, op=dist.ReduceOp.MAX)  # the slower process sets the pace
        # the all-reduce alone, all ranks ready: what the wire costs, without waiting for a slower rank
        flat, iso = dp._flats[0], None
        if world > 1:
            D.barrier()
            t1 = time.perf_counter()
            for _ in range(5): dist.all_reduce(flat)
            iso = (time.perf_counter() - t1) / 5 * 1e3
        res = dict(
            model=name,
            world_size=world,
            global_batch=batch,
            steps=steps,
            samples_per_second=steps * batch / seconds,
            seconds_per_step=seconds / steps,
            allreduce_ms_per_step=1e3 * dp.comm_seconds / steps,
            cpu_seconds_per_step=cpu.item() / steps,
            allreduce_ms_isolated=iso,
            gradient_mb=sum(f.numel() * f.element_size() for f in dp._flats) / 2**20,
            buckets=len(dp.buckets),
        )
        if D.is_main_process(): Path(out).write_text(json.dumps(res))
    D.shutdown()


def _run(name, world, steps, sync=True):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / 'res.json'
        env = dict(
            os.environ,
            OMP_NUM_THREADS='1',
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
        )
        cmd = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc-per-node',
            str(world),
            '-m',
            'benchmarks.distributed',
            '--worker',
            name,
            '--steps',
            str(steps),
            '--out',
            str(out),
        ] + ([] if sync else ['--no-sync'])
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0: raise RuntimeError(f"{name} with {world} processes failed:\n{r.stderr[-3000:]}")
        return json.loads(out.read_text())


def run(ctx):
    s = ctx.settings
    models = list(s['models'])
    runs = {(m, w): [] for m in models for w in CONFIGS}
    for i in range(s['repeats']):
        for m in models:
            for w in rotation(CONFIGS, i):
                r = _run(m, 2 if w == 'no_sync' else w, s['steps'], sync=w != 'no_sync')
                runs[m, w].append(r)
                ctx.log(f"   repeat {i + 1}: {m}, {w} process(es): {r['samples_per_second']:.0f} samples/s, all-reduce "
                        f"{r['allreduce_ms_per_step']:.1f} ms/step (isolated {r['allreduce_ms_isolated'] or 0:.1f} ms)")
    method = (f"best of {s['repeats']} interleaved repeats of {s['steps']} timed steps (after 2 warm-up "
              "steps), one thread per process, gloo over 127.0.0.1, launched by torchrun; same global batch "
              "for 1 and 2 processes; cpu_seconds_per_step: CPU time of the slower process per step (least "
              "over the repeats), which a busy machine does not inflate; no_sync: the control, 2 processes "
              "that never exchange gradients (the parallelism the machine offered at that moment)")
    out = {}
    for m in models:
        best = {w: max(runs[m, w], key=lambda r: r['samples_per_second']) for w in CONFIGS}
        cpu = {w: min(r['cpu_seconds_per_step'] for r in runs[m, w]) for w in (1, 2)}
        out[m] = dict(
            what=MODELS[m]['what'],
            global_batch=MODELS[m]['batch'],
            gradient_mb=best[2]['gradient_mb'],
            samples_per_second={w: best[w]['samples_per_second'] for w in (1, 2)},
            all_samples_per_second={w: [r['samples_per_second'] for r in runs[m, w]] for w in (1, 2)},
            speedup_2_processes=best[2]['samples_per_second'] / best[1]['samples_per_second'],
            allreduce_ms_per_step=best[2]['allreduce_ms_per_step'],
            allreduce_ms_isolated=best[2]['allreduce_ms_isolated'],
            seconds_per_step={w: best[w]['seconds_per_step'] for w in (1, 2)},
            cpu_seconds_per_step=cpu,
            speedup_cpu_estimate=cpu[1] / cpu[2],
            samples_per_second_no_sync=best['no_sync']['samples_per_second'],
            speedup_2_processes_no_sync=best['no_sync']['samples_per_second'] / best[1]['samples_per_second'],
            all_samples_per_second_no_sync=[r['samples_per_second'] for r in runs[m, 'no_sync']],
        )
        ctx.log(f"   {m}: speed-up with 2 processes {out[m]['speedup_2_processes']:.2f}x (from CPU time per "
                f"step, as if each process had a core of its own: {out[m]['speedup_cpu_estimate']:.2f}x)")
    return dict(method=method, models=out)


# a worker, started by torchrun: python -m benchmarks.distributed --worker NAME --steps N --out FILE
if __name__ == '__main__':
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument('--worker', required=True)
    ap.add_argument('--steps', type=int, required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--no-sync', action='store_true', help='(control) 2 processes that never exchange gradients')
    a = ap.parse_args()
    worker(a.worker, a.steps, a.out, sync=not a.no_sync)
