"""The MLP training step: minidl against torch.nn + autograd and a hand-written loop, with op and call counts
and peak memory.

A training step is `zero_grad`, forward, BCE loss, backward, SGD update, for

* **minidl** -- `Sequential` of `Linear`/`ReLU`/`Sigmoid`, `LossBCE`, `SGD`; the backward pass is called with
  `input_grad=False` (the input is data: the first layer skips the product that would compute its gradient);
* **torch** -- `torch.nn.Sequential` + `torch.nn.BCELoss` + autograd + `torch.optim.SGD`, all with their defaults
  (what a user would pick instead of minidl);
* **hand** -- a hand-written loop on raw tensors: the same maths and the same kernels as minidl, without modules,
  without input checks, without gradient buffers (each step's gradients are fresh tensors, handed to the update):
  the floor that a layered design can approach.

All three start from the same weights and train on the same batch with the same learning rate; before timing, the
suite runs a few steps of each and checks that they agree (same maths), and stops if they do not. Timing: the
harness (`benchmarks/harness.py`), samples of about 10 ms, up to 201 rounds or about 25 s per regime.

Peak memory: each implementation runs once more in its own fresh Python process per regime. After a tiny warm-up
model has loaded every code path, the process's peak resident set size (Linux `VmHWM`) is reset to its current size
(`/proc/self/clear_refs`); the model is then built and trained for a few steps. The figure is the growth of the peak
RSS over that baseline: parameters, gradient buffers, activations, temporaries, the autograd graph, and whatever the
allocator keeps -- what the operating system sees. The children run with glibc's `MALLOC_MMAP_THRESHOLD_=131072`, so
that every block over 128 KiB is mapped when a tensor is allocated and unmapped when it is freed: by default glibc
raises that threshold as the program runs and keeps freed blocks resident, which made the figure vary by tens of MiB
from run to run; with it, the figure follows the peak of the live tensors, to within a few MiB. It is meaningful only
when the tensors are large (the wide regime; for the circle MLP it is the few MiB of libraries' buffers). Where
`/proc/self/clear_refs` is missing it is `null`. On CUDA (`--device cuda`) it is `torch.cuda.max_memory_allocated`
over the same steps instead: the tensors only.

Ops per step: operator calls seen by `torch.profiler` during one step, counting the outermost `aten::` calls only
(an operator that calls others counts once); for torch.nn this includes the operators its autograd engine runs.
Python calls per step: the Python functions entered during one step (`sys.setprofile`'s `call` events).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import subprocess
import sys

import torch

import minidl
from benchmarks.harness import ROOT

DEVICES = ('cpu', 'cuda')
QUICK = dict(sample_s=0.003, warmup_s=0.02, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.01, warmup_s=1.0, budget_s=25.0, min_rounds=15, max_rounds=201)
IMPLS = ('minidl', 'torch', 'hand')
IMPL_DESCRIPTIONS = {
    'minidl': "minidl: Sequential(Linear, ReLU, ..., Sigmoid), LossBCE, SGD; backward(..., input_grad=False)",
    'torch': "torch.nn.Sequential + torch.nn.BCELoss + autograd + torch.optim.SGD (defaults)",
    'hand': "hand-written loop on raw tensors: same maths and kernels as minidl, no modules, no checks",
}
CIRCLE, WIDE = [2, 25, 25, 25, 25, 1], [256, 1024, 1024, 1]
# name, label, layer sizes, batch, targets (maximum minidl/torch and minidl/hand)
REGIMES = [
    dict(name='circle-10', label='circle MLP 2-25-25-25-25-1, batch 10', sizes=CIRCLE, batch=10,
         targets={'minidl/torch': 0.60, 'minidl/hand': 1.15}),
    dict(name='circle-100', label='circle MLP 2-25-25-25-25-1, batch 100', sizes=CIRCLE, batch=100,
         targets={'minidl/torch': 0.60, 'minidl/hand': 1.15}),
    dict(name='circle-1000', label='circle MLP 2-25-25-25-25-1, batch 1000', sizes=CIRCLE, batch=1000,
         targets={'minidl/torch': 0.90, 'minidl/hand': 1.05}),
    dict(name='wide-2048', label='wide MLP 256-1024-1024-1, batch 2048', sizes=WIDE, batch=2048,
         targets={'minidl/torch': 1.05, 'minidl/hand': 1.05}),
]
LR = 0.05

# ---------------------------------------------------------------- same weights, same data

def init_weights(sizes, seed=0):
    "Weights and biases drawn like torch.nn.Linear's, U[-1/sqrt(in), 1/sqrt(in)], from a seeded generator."
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / math.sqrt(n_in)
        w = torch.empty(n_out, n_in).uniform_(-bound, bound, generator=gen)
        b = torch.empty(n_out).uniform_(-bound, bound, generator=gen)
        out.append((w, b))
    return out

def make_data(sizes, batch, seed=1):
    ("Circle regimes: points in the unit square, label 1 inside the disc of area 1/2; wide: Gaussian inputs, "
     "random labels.")
    gen = torch.Generator().manual_seed(seed)
    if sizes[0] == 2:
        x = torch.rand(batch, 2, generator=gen)
        t = ((x - 0.5).pow(2).sum(1, keepdim=True) < 1 / (2 * math.pi)).float()
    else:
        x = torch.randn(batch, sizes[0], generator=gen)
        t = (torch.rand(batch, 1, generator=gen) > 0.5).float()
    return x, t

# ---------------------------------------------------------------- the three implementations
# Each builder returns (step, parameters): step(x, t) runs one training step and returns the loss.

def minidl_layers(weights, Lin, Rl, Sg) -> list:
    "The MLP's modules, of these classes, holding `weights`: Linear, ReLU, ..., Linear, Sigmoid."
    layers = []
    for i, (w, b) in enumerate(weights):
        lin = Lin(w.shape[1], w.shape[0], device=w.device)  # on the weights' device (--device)
        lin.weight.value.copy_(w); lin.bias.value.copy_(b)
        layers += [lin, Rl() if i < len(weights) - 1 else Sg()]
    return layers

def minidl_builder(Lin, Rl, Sg, Loss, input_grad=False):
    "A builder for minidl's network made of these classes (the ablation suite passes older versions of them)."
    from minidl import SGD, Sequential
    def build(weights, lr=LR):
        model, loss_fn = Sequential(*minidl_layers(weights, Lin, Rl, Sg)), Loss()
        opt = SGD(model.parameters(), lr=lr)
        def step(x, t):
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            if input_grad: model.backward(loss_fn.backward())
            else: model.backward(loss_fn.backward(), input_grad=False)  # the first layer's input is data
            opt.step()
            return loss
        return step, [p.value for p in model.parameters()]
    return build

def build_minidl(weights, lr=LR):
    return minidl_builder(minidl.Linear, minidl.ReLU, minidl.Sigmoid, minidl.LossBCE)(weights, lr)

def build_torch(weights, lr=LR):
    nn = torch.nn
    layers = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0], device=w.device)  # on the weights' device (--device)
        with torch.no_grad(): lin.weight.copy_(w); lin.bias.copy_(b)
        layers += [lin, nn.ReLU() if i < len(weights) - 1 else nn.Sigmoid()]
    model, loss_fn = nn.Sequential(*layers), nn.BCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return step, list(model.parameters())

def build_hand(weights, lr=LR):
    eps = float(torch.tensor(1e-12, dtype=torch.float32))  # PyTorch's BCE epsilon, as minidl's LossBCE
    params = [p.clone() for wb in weights for p in wb]     # [W1, b1, W2, b2, ...]
    Ws, bs = params[0::2], params[1::2]
    n_layers = len(Ws)
    def step(x, t):
        hs = [x]                                           # inputs of each layer, then the output
        for i in range(n_layers):
            z = torch.addmm(bs[i], hs[-1], Ws[i].t())      # z = h W^T + b
            hs.append(torch.relu(z) if i < n_layers - 1 else torch.sigmoid(z))
        p = hs[-1]
        loss = torch.lerp(torch.neg(p).log1p_().clamp_(min=-100), torch.log(p).clamp_(min=-100), t).mean().neg_()
        # dL/dp = (p - t) / max((1 - p) p, eps) / n
        g = torch.sub(p, t).div_((1 - p).mul_(p).clamp_(min=eps)).div_(p.numel())
        g = (1 - p).mul_(g).mul_(p)                        # dL/dz of the last layer: G (1 - p) p
        grads = [None] * (2 * n_layers)
        for i in reversed(range(n_layers)):
            gt = g.t()
            grads[2 * i] = torch.mm(gt, hs[i])             # dL/dW = G^T h
            grads[2 * i + 1] = g.sum(0)                    # dL/db = sum over the batch
            if i > 0: g = torch.sign(hs[i]).mul_(torch.mm(g, Ws[i]))  # dL/dz of the layer below: 1[h > 0] * G W
        torch._foreach_add_(params, grads, alpha=-lr)
        return loss
    return step, params

BUILDERS = {'minidl': build_minidl, 'torch': build_torch, 'hand': build_hand}

def to_device(weights, x, t, device):
    return [(w.to(device), b.to(device)) for w, b in weights], x.to(device), t.to(device)

# ---------------------------------------------------------------- agreement, op and call counts

def check_agreement(sizes, batch, device, nb_steps=3):
    "Run a few steps of each implementation from the same weights; return the largest parameter and loss differences."
    weights, x, t = to_device(init_weights(sizes), *make_data(sizes, batch), device)
    results = {}
    for name in IMPLS:
        step, params = BUILDERS[name](weights)
        losses = [step(x, t).item() for _ in range(nb_steps)]
        results[name] = (losses, [p.detach().clone() for p in params])
    ref_losses, ref_params = results['torch']
    out = {}
    for name in ('minidl', 'hand'):
        losses, params = results[name]
        out[name] = dict(max_param_diff=max(float((p - q).abs().max()) for p, q in zip(params, ref_params)),
                         max_loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)))
    ok = all(
        v['max_param_diff'] < 1e-5 and v['max_loss_diff'] < 1e-5 * max(1.0, abs(ref_losses[0]))
        for v in out.values()
    )
    return dict(ok=ok, vs_torch=out)


@contextlib.contextmanager
def quiet_stderr():
    "Silence file descriptor 2 for the block: the profiler's C++ logging writes there directly, bypassing sys.stderr."
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2); os.close(saved)


def count_ops(step, x, t):
    "Outermost aten:: operator calls during one step (see the module docstring)."
    from torch.profiler import ProfilerActivity, profile
    step(x, t)
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof: step(x, t)
    n = 0
    for e in prof.events():
        if not e.name.startswith('aten::'): continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith('aten::'): parent = parent.cpu_parent
        n += parent is None
    return n


def count_python_calls(step, x, t):
    "Python functions entered during one step."
    n = 0
    def prof(frame, event, arg):
        nonlocal n
        n += event == 'call'
    step(x, t)
    sys.setprofile(prof)
    try: step(x, t)
    finally: sys.setprofile(None)
    return n - 1  # not the step itself

# ---------------------------------------------------------------- peak memory, one fresh process per measurement

def _status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'): return int(line.split()[1])
    return None


def memory_child(impl, regime_names, device_name, nb_steps=3):
    "Runs in a fresh process: print {regime: peak memory growth in MiB} of training `impl`, as JSON."
    torch.set_num_threads(1)
    device = torch.device(device_name)
    tiny = [2, 3, 1]                                       # load every code path on a tiny model first
    w, x, t = to_device(init_weights(tiny), *make_data(tiny, 4), device)
    step, _ = BUILDERS[impl](w)
    for _ in range(2): step(x, t)
    del step, w, x, t
    out = {}
    for name in regime_names.split(','):                   # one regime per process, except in --quick runs
        regime = next(r for r in REGIMES if r['name'] == name)
        gc.collect()
        x, t = make_data(regime['sizes'], regime['batch'])
        x, t = x.to(device), t.to(device)
        if device.type == 'cuda':
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            try:
                with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # reset the peak RSS to the current RSS
            except OSError:
                out[name] = None; continue
            base = _status_kib('VmRSS') * 1024
        step, _ = BUILDERS[impl](to_device(init_weights(regime['sizes']), x, t, device)[0])
        for _ in range(nb_steps): step(x, t)
        if device.type == 'cuda':
            torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = _status_kib('VmHWM') * 1024
        out[name] = (peak - base) / 2**20
        del step, x, t
    print(json.dumps(out))


def measure_memory(names, device, parallel, one_process_per_regime=True):
    "Launch child processes (one per implementation and regime); returns {regime name: {impl: MiB or None}}."
    groups = [[n] for n in names] if one_process_per_regime else [names]
    jobs = [(impl, ','.join(g)) for g in groups for impl in IMPLS]
    out = {n: {impl: None for impl in IMPLS} for n in names}
    running = []
    def finish(job, proc):
        stdout, stderr = proc.communicate()
        try:
            for name, mib in json.loads(stdout.strip().splitlines()[-1]).items(): out[name][job[0]] = mib
        except (ValueError, IndexError, AttributeError):
            print(f"memory measurement failed for {job}: {stderr[-500:]}", file=sys.stderr)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072', OMP_NUM_THREADS='1')  # glibc: see the module docstring
    for job in jobs:
        cmd = [sys.executable, '-m', 'benchmarks.core', '--memory-child', *job, '--device', str(device)]
        running.append(
            (
                job,
                subprocess.Popen(
                    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                ),
            )
        )
        if len(running) >= parallel: finish(*running.pop(0))
    for job, proc in running: finish(job, proc)
    return out

# ---------------------------------------------------------------- the suite

def us(s): return f"{s * 1e6:,.0f}" if s * 1e6 >= 100 else f"{s * 1e6:.1f}"


def run(ctx, regimes=None, memory=True):
    device = torch.device(ctx.device)
    regimes = [r for r in REGIMES if regimes is None or r['name'] in regimes]
    out = []
    for reg in regimes:
        agree = check_agreement(reg['sizes'], reg['batch'], device)
        if not agree['ok']: sys.exit(f"core: {reg['name']}: the implementations disagree, not timing them: {agree}")
        weights, x, t = to_device(init_weights(reg['sizes']), *make_data(reg['sizes'], reg['batch']), device)
        steps = {name: BUILDERS[name](weights)[0] for name in IMPLS}
        timing = ctx.compare({name: (lambda s=s: s(x, t)) for name, s in steps.items()})
        cpu = device.type == 'cpu'
        r = dict(
            name=reg['name'],
            label=reg['label'],
            sizes=reg['sizes'],
            batch=reg['batch'],
            **timing,
            targets=reg['targets'],
            met={key: timing['ratios'][key] <= reg['targets'][key] for key in reg['targets']},
            ops_per_step={n: count_ops(s, x, t) for n, s in steps.items()} if cpu else None,
            python_calls_per_step={n: count_python_calls(s, x, t) for n, s in steps.items()},
            agreement=agree,
            peak_memory_mib=None,
        )
        out.append(r)
        med = {n: v['median'] for n, v in r['time_s'].items()}
        ctx.log(f"   {r['name']:<12} minidl {us(med['minidl'])} us, torch {us(med['torch'])} us, hand "
                f"{us(med['hand'])} us per step; minidl/torch {r['ratios']['minidl/torch']:.3f} (<= "
                f"{r['targets']['minidl/torch']}), minidl/hand {r['ratios']['minidl/hand']:.3f}; ops "
                f"{r['ops_per_step']}; {r['rounds']} rounds")
    if memory:
        mem = measure_memory(
            [r['name'] for r in out],
            device,
            parallel=1 if device.type == 'cuda' else max(1, min(4, os.cpu_count() or 1)),
            one_process_per_regime=not ctx.quick,
        )
        for r in out: r['peak_memory_mib'] = mem[r['name']]
        ctx.log('   peak memory MiB: ' + ', '.join(f"{r['name']} {r['peak_memory_mib']}" for r in out))
    return dict(implementations=IMPL_DESCRIPTIONS, lr=LR, dtype='float32', regimes=out,
                all_targets_met=all(all(r['met'].values()) for r in out))


if __name__ == '__main__':  # the memory child: python -m benchmarks.core --memory-child IMPL REGIMES --device DEVICE
    ap = argparse.ArgumentParser()
    ap.add_argument('--memory-child', nargs=2, metavar=('IMPL', 'REGIMES'), required=True)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    memory_child(*a.memory_child, a.device)
