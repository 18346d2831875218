"""optimizer.step() on the circle MLP's parameters: minidl against torch.optim, default and foreach.

What is timed is `optimizer.step()` alone, on the ten parameter tensors of the circle MLP 2-25-25-25-25-1 (2,051
float32 numbers) with fixed gradients, for

* **minidl** -- `minidl.Adam` / `AdamW` / `SGD(momentum=0.9)`: the gradient and learning-rate checks (metadata only,
  cached) and one foreach kernel call per line of the update rule;
* **torch** -- `torch.optim.Adam` / `AdamW` / `SGD(momentum=0.9)` with their defaults (on a CPU torch picks its
  single-tensor implementation, a Python loop over the parameters; on CUDA its foreach implementation);
* **torch-foreach** -- the same with `foreach=True` (the multi-tensor kernels, on any device).

Both sides start from the same parameters and gradients; before timing, the suite runs a few steps of each and checks
that they agree to float32 rounding (same maths), and stops if they do not. Timing: the harness, samples of about
10 ms, up to 201 rounds or about 15 s per optimizer. The median of the per-round ratios is the robust figure on a busy
machine (each round's samples ran back to back); the JSON also keeps the ratios of the medians and of the minima.
"""
from __future__ import annotations

import torch

import minidl

DEVICES = ('cpu', 'cuda')
QUICK = dict(sample_s=0.002, warmup_s=0.01, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.01, warmup_s=0.5, budget_s=15.0, min_rounds=3, max_rounds=201)
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
        raise SystemExit(f"optim: {name}: minidl and torch disagree after {nb_steps} steps (relative "
                         f"{worst:.1e}): stop")
    return worst


def run(ctx):
    device = torch.device(ctx.device)
    out = []
    for name in OPTIMIZERS:
        agree = check_agreement(name, device)
        t = ctx.compare({impl: build(impl, name, device)[0] for impl in IMPLS})
        q = {impl: {k + '_s': v[k] for k in ('min', 'q1', 'median', 'q3')} for impl, v in t['time_s'].items()}
        out.append(
            dict(
                name=name,
                agreement_max_rel_diff=agree,
                rounds=t['rounds'],
                times=q,
                ratio_of_medians=t['ratios'],
                median_round_ratio=t['paired_ratios'],
                ratio_of_minima=t['min_ratios'],
                timing=t,
            )
        )
        ctx.log(
            f"   {name:<14}"
            + ''.join(f"{impl} {v['median_s'] * 1e6:.1f} us, " for impl, v in q.items())
            + ', '.join(f"{k} {v:.2f}" for k, v in t['paired_ratios'].items())
            + f" (per round); {t['rounds']} rounds"
        )
    return dict(
        implementations=list(IMPLS),
        sizes=SIZES,
        parameters=sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:])),
        dtype='float32',
        optimizers=out,
    )
