"""Time one optimizer step on the circle MLP's parameters: minidl against torch.optim, interleaved, and save the ratios.

    python benchmarks/bench_optim.py            # full run (about a minute): prints the table, writes benchmarks/results_optim.json
    python benchmarks/bench_optim.py --quick    # smoke run (seconds): prints the table, writes only with --out FILE

What is timed is `optimizer.step()` alone, on the ten parameter tensors of the circle MLP 2-25-25-25-25-1 (2,051
float32 numbers) with fixed gradients, for

* **minidl** -- `minidl.Adam` / `AdamW` / `SGD(momentum=0.9)`: the gradient and learning-rate checks (metadata only,
  cached) and one foreach kernel call per line of the update rule;
* **torch** -- `torch.optim.Adam` / `AdamW` / `SGD(momentum=0.9)` with their defaults (on a CPU torch picks its
  single-tensor implementation, a Python loop over the parameters; on CUDA its foreach implementation);
* **torch-foreach** -- the same with `foreach=True` (the multi-tensor kernels, on any device).

Both sides start from the same parameters and gradients; before timing, the script runs a few steps of each and checks
that they agree to float32 rounding (same maths), and stops if they do not.

Timing: one thread (`torch.set_num_threads(1)`, printed), warm-up steps first, then rounds in which each
implementation runs a short sample of consecutive steps (about 10 ms), in rotating order, for up to 201 rounds or
about 15 s per optimizer. The table shows the median time per step over rounds and the ratios of the medians
(minidl / torch: below 1 means minidl is faster), and the medians of the per-round ratios (each round's samples ran
back to back, so these are robust to a busy machine, where the medians of the times themselves can be skewed by
interruptions that hit one implementation's samples more than another's); the JSON also keeps the minima and
quartiles, and the ratio of the minima (the least disturbed samples).
"""
from __future__ import annotations
import argparse, datetime, json, platform, statistics, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
import minidl
from minidl.files import atomic_open

SIZES = [2, 25, 25, 25, 25, 1]
IMPLS = ('minidl', 'torch', 'torch-foreach')
OPTIMIZERS = {  # name: (minidl factory, torch factory, keyword arguments)
    'adam': (minidl.Adam, torch.optim.Adam, {}),
    'adamw': (minidl.AdamW, torch.optim.AdamW, {}),
    'sgd-momentum': (minidl.SGD, torch.optim.SGD, dict(lr=0.01, momentum=0.9)),
}


def circle_tensors(device, seed=0):
    "The circle MLP's parameters (weight (out, in) and bias per layer) and a fixed gradient for each."
    g = torch.Generator().manual_seed(seed)
    shapes = [s for a, b in zip(SIZES[:-1], SIZES[1:]) for s in ((b, a), (b,))]
    values = [torch.randn(*s, generator=g).to(device) for s in shapes]
    grads = [torch.randn(*s, generator=g).to(device) * 0.1 for s in shapes]
    return values, grads


def build(impl, name, device):
    "A `step()` closure for one implementation, over fresh copies of the parameters; and the list of parameter tensors."
    ours, theirs, kw = OPTIMIZERS[name]
    values, grads = circle_tensors(device)
    if impl == 'minidl':
        params = [minidl.Parameter(v) for v in values]
        for p, g in zip(params, grads): p.grad.copy_(g)
        return ours(params, **kw).step, [p.value for p in params]
    params = [v.clone().requires_grad_() for v in values]
    for p, g in zip(params, grads): p.grad = g.clone()
    opt = theirs(params, **kw, **({'foreach': True} if impl == 'torch-foreach' else {}))
    return opt.step, params


def check_agreement(name, device, nb_steps=5):
    "Run a few steps of each implementation from the same start; return the largest relative difference from minidl."
    out = {}
    for impl in IMPLS:
        step, params = build(impl, name, device)
        for _ in range(nb_steps): step()
        out[impl] = [p.detach().clone() for p in params]
    worst = 0.0
    for impl in IMPLS[1:]:
        for a, b in zip(out['minidl'], out[impl]):
            worst = max(worst, ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item())
    if worst > 1e-5:
        raise SystemExit(f"bench_optim: {name}: minidl and torch disagree after {nb_steps} steps (relative {worst:.1e}): stop")
    return worst


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def time_optimizer(name, device, rounds, sample_s, warmup_s, budget_s):
    steps = {impl: build(impl, name, device)[0] for impl in IMPLS}
    n = {}
    for impl, step in steps.items():  # warm up, and size each sample to about sample_s
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < warmup_s or k < 3:
            step(); k += 1
        sync(device)
        n[impl] = max(1, int(sample_s / ((time.perf_counter() - t0) / k)))
    samples = {impl: [] for impl in IMPLS}
    t_start = time.perf_counter()
    for r in range(rounds):
        order = IMPLS[r % len(IMPLS):] + IMPLS[:r % len(IMPLS)]  # rotate: A B C, B C A, C A B, ...
        for impl in order:
            step = steps[impl]
            sync(device); t0 = time.perf_counter()
            for _ in range(n[impl]): step()
            sync(device); samples[impl].append((time.perf_counter() - t0) / n[impl])
        if time.perf_counter() - t_start > budget_s and r >= 2: break
    return samples


def quartiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return {'min_s': min(v), 'q1_s': q[0], 'median_s': statistics.median(v), 'q3_s': q[2]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run: few rounds, short samples (numbers are not meaningful)')
    ap.add_argument('--out', type=Path, default=None, help='JSON output (default: benchmarks/results_optim.json; --quick: none)')
    ap.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    out = args.out if args.out is not None else (None if args.quick else ROOT / 'benchmarks' / 'results_optim.json')
    if out is not None and not out.parent.is_dir(): ap.error(f"--out: the folder {out.parent} does not exist")
    torch.set_num_threads(1)
    print(f"torch.get_num_threads() = {torch.get_num_threads()}, torch {torch.__version__}, device {device}")
    rounds, sample_s, warmup_s, budget_s = (3, 0.002, 0.01, 1.0) if args.quick else (201, 0.01, 0.5, 15.0)
    result = {'schema': 1, 'quick': args.quick, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'machine': {'python': platform.python_version(), 'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
                          'device': str(device), 'platform': platform.platform(),
                          'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None},
              'settings': {'threads': 1, 'rounds_max': rounds, 'sample_s': sample_s, 'budget_s': budget_s, 'sizes': SIZES,
                           'parameters': sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:])), 'dtype': 'float32'},
              'implementations': list(IMPLS), 'optimizers': []}
    print(f"{'optimizer':<14}{'minidl us':>11}{'torch us':>10}{'foreach us':>12}{'m/torch':>9}{'m/foreach':>11}"
          f"{'round m/torch':>15}{'round m/foreach':>17}{'rounds':>8}")
    for name in OPTIMIZERS:
        agree = check_agreement(name, device)
        samples = time_optimizer(name, device, rounds, sample_s, warmup_s, budget_s)
        med = {impl: statistics.median(v) for impl, v in samples.items()}
        ratio = {f"minidl/{impl}": med['minidl'] / med[impl] for impl in IMPLS[1:]}
        per_round = {f"minidl/{impl}": statistics.median(a / b for a, b in zip(samples['minidl'], samples[impl])) for impl in IMPLS[1:]}
        best = {f"minidl/{impl}": min(samples['minidl']) / min(samples[impl]) for impl in IMPLS[1:]}
        result['optimizers'].append({'name': name, 'agreement_max_rel_diff': agree, 'rounds': len(samples['minidl']),
                                     'times': {impl: quartiles(v) for impl, v in samples.items()},
                                     'ratio_of_medians': ratio, 'median_round_ratio': per_round, 'ratio_of_minima': best})
        print(f"{name:<14}{med['minidl'] * 1e6:>11.1f}{med['torch'] * 1e6:>10.1f}{med['torch-foreach'] * 1e6:>12.1f}"
              f"{ratio['minidl/torch']:>9.2f}{ratio['minidl/torch-foreach']:>11.2f}{per_round['minidl/torch']:>15.2f}"
              f"{per_round['minidl/torch-foreach']:>17.2f}{len(samples['minidl']):>8}")
    if out is not None:
        with atomic_open(out, 'w') as f: f.write(json.dumps(result, indent=1) + '\n')
        print(f"wrote {out}")
    return result


if __name__ == '__main__':
    main()
