"""A small CNN's training step in minidl and in torch.nn + autograd, and where minidl's step goes.

The network (8x8 single-channel images, batch 64, float32):

    Conv2d(1, 16, 3, padding=P) -> ReLU -> Conv2d(16, 32, 3, padding=P) -> ReLU -> MaxPool2d(2) -> Flatten ->
    Linear(., 10)

in two regimes: 'cnn-valid' (P = 0, torch.nn.Conv2d's default: 8x8 -> 6x6 -> 4x4 -> 2x2, Linear(128, 10)), the network
of the target, and 'cnn-same' (P = 1: the images keep their 8x8 size, Linear(512, 10)), four times the convolution work.
A training step is zero_grad, forward, loss, backward, SGD update (lr 0.05). The loss is the mean squared error against
one-hot targets of random labels (minidl.LossMSE and torch.nn.MSELoss: the cross-entropy layer belongs to another part
of minidl, and the loss is a negligible part of the step either way):

* **minidl** -- minidl.Sequential of Conv2d/ReLU/MaxPool2d/Flatten/Linear, LossMSE, SGD; backward(..., input_grad=False)
  (the first convolution's input is data: it skips its input gradient);
* **torch** -- the same layers from torch.nn, torch.nn.MSELoss, autograd and torch.optim.SGD with their defaults.

Both start from the same weights (minidl loads torch's state_dict) and train on the same batch; before timing, the
suite runs a few steps of each, in float32 and in float64, compares losses and parameters, and stops if they differ.

Timing: the harness (`benchmarks/harness.py`), samples of about 20 ms, at least 15 rounds, about 20 s per regime.
Reported: the median over rounds of the time per step (wall clock) and the ratio of the medians (the target,
minidl/torch <= 1.25, applies to it), the median of the per-round ratios, and the same ratio in process CPU time
(on a shared machine it does not count the time the process waited for a core).

Consecutive steps: the interleaved samples are short (a few steps), so each implementation starts a sample with
caches that the other one used. A training run repeats one implementation's steps; so the suite also times blocks of
40 consecutive steps of each in turn (12 blocks, CPU time) and reports that ratio too (no target is attached to it).

Breakdown: each stage of minidl's step is also timed alone on the network's own tensors (`torch.utils.benchmark.Timer`:
median of the process CPU time of repeated calls; shares are of the median CPU time of minidl's step):
for each convolution, im2col (pad + unfold + the copy into U), the forward matrix product, the weight-gradient
products (dL/dW = G^T U and dL/db), the input-gradient product (dL/dU = G W) and col2im; the pooling layer forward
and backward; "other" is the step's median minus the sum of those stages (ReLU, Flatten, Linear, loss, SGD, Python).
"""
from __future__ import annotations

import statistics
import sys

import torch

import minidl
from benchmarks.harness import time_alone
from minidl.nn.conv import _col2im, _pad_nhwc, _patches

QUICK = dict(sample_s=0.005, warmup_s=0.05, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.02, warmup_s=1.0, budget_s=20.0, min_rounds=15, max_rounds=10**6)
IMPLS = ('minidl', 'torch')
IMPL_DESCRIPTIONS = {
    'minidl': "minidl: Sequential(Conv2d, ReLU, Conv2d, ReLU, MaxPool2d, Flatten, Linear), LossMSE, SGD; "
              "backward(..., input_grad=False)",
    'torch': "torch.nn.Sequential of the same layers + torch.nn.MSELoss + autograd + torch.optim.SGD (defaults)",
}
REGIMES = [
    dict(name='cnn-valid', padding=0, label='conv 3x3 1->16, conv 3x3 16->32 (padding 0), maxpool 2, linear '
                                            '128->10; batch 64, 8x8'),
    dict(name='cnn-same', padding=1, label='conv 3x3 1->16, conv 3x3 16->32 (padding 1), maxpool 2, linear '
                                           '512->10; batch 64, 8x8'),
]
TARGET = 1.25  # minidl/torch, ratio of the medians of the wall-clock time per step
BATCH, SIDE, CLASSES, LR = 64, 8, 10, 0.05

def make_data(batch=BATCH, seed=1, dtype=torch.float32):
    "Gaussian 8x8 images and one-hot targets of random labels."
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, SIDE, SIDE, generator=gen, dtype=dtype)
    t = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (batch,), generator=gen), CLASSES).to(dtype)
    return x, t

def torch_net(padding, seed=0, dtype=torch.float32):
    nn = torch.nn
    side = SIDE + 2 * (2 * padding - 2)
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (side // 2) ** 2, CLASSES),
    ).to(dtype)

def build_torch(padding, dtype=torch.float32):
    model = torch_net(padding, dtype=dtype)
    loss_fn, opt = torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=LR)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return step, model

def build_minidl(padding, dtype=torch.float32):
    ref = torch_net(padding, dtype=dtype)
    m = minidl
    model = m.Sequential(m.Conv2d(1, 16, 3, padding=padding), m.ReLU(), m.Conv2d(16, 32, 3, padding=padding), m.ReLU(),
                         m.MaxPool2d(2), m.Flatten(), m.Linear(ref[6].in_features, CLASSES)).to(dtype=dtype)
    model.load_state_dict(ref.state_dict())  # the same weights as torch's network
    loss_fn, opt = m.LossMSE(), m.SGD(model.parameters(), lr=LR)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        model.backward(loss_fn.backward(), input_grad=False)  # the first layer's input is data
        opt.step()
        return loss
    return step, model

BUILDERS = {'minidl': build_minidl, 'torch': build_torch}

def check_agreement(padding, nb_steps=3):
    "A few steps of both implementations from the same weights, in float32 and float64: largest relative differences."
    out = {}
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        x, t = make_data(dtype=dtype)
        res = {}
        for name, build in BUILDERS.items():
            step, model = build(padding, dtype)
            losses = [float(step(x, t).detach()) for _ in range(nb_steps)]
            res[name] = losses, [v.detach().clone() for v in model.state_dict().values()]
        (l_m, p_m), (l_t, p_t) = res['minidl'], res['torch']
        rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
        d = dict(max_param_rel_diff=max(rel(a, b) for a, b in zip(p_m, p_t)),
                 max_loss_rel_diff=max(abs(a - b) / abs(b) for a, b in zip(l_m, l_t)), tolerance=tol)
        d['ok'] = d['max_param_rel_diff'] < tol and d['max_loss_rel_diff'] < tol
        out[str(dtype).replace('torch.', '')] = d
    return dict(ok=all(d['ok'] for d in out.values()), **out)

def time_blocks(padding, block, rounds):
    ("Blocks of `block` consecutive steps of each implementation in turn (as a training run would): CPU "
     "seconds per step.")
    from benchmarks.harness import rotation, sample
    x, t = make_data()
    steps = {name: build(padding)[0] for name, build in BUILDERS.items()}
    for step in steps.values(): sample(lambda: step(x, t), block)
    cpu = {n: [] for n in steps}
    for r in range(rounds):
        for name in rotation(IMPLS, r): cpu[name].append(sample(lambda: steps[name](x, t), block)[1])
    return cpu


def breakdown(padding, step_median, min_time):
    "Time each stage of minidl's step alone, on the network's tensors (see the module docstring)."
    step, model = build_minidl(padding)
    x, t = make_data()
    for _ in range(3): step(x, t)
    acts = [x]
    for layer in model.layers: acts.append(layer(acts[-1]))
    grads = [torch.randn_like(acts[-1])]
    for layer in reversed(model.layers[1:]): grads.append(layer.backward(grads[-1]))
    grads = grads[::-1]  # grads[i]: dL/d(output of layer i)
    stages = {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, minidl.Conv2d):
            a, g = acts[i], grads[i]
            (kh, kw), (ph, pw), s = layer.kernel_size, layer.padding, layer.stride
            N, C, H, W = a.shape
            im2col = lambda: _patches(_pad_nhwc(a, ph, pw), (kh, kw), s).reshape(-1, kh * kw * C)
            u = im2col()
            wm = layer.weight.value.permute(0, 2, 3, 1).reshape(layer.out_channels, -1)
            g2 = g.permute(0, 2, 3, 1).reshape(-1, layer.out_channels)
            ones = torch.ones(g2.shape[0])
            Ho, Wo = g.shape[2:]
            name = f"conv{i // 2 + 1}"
            stages[f"{name} im2col"] = time_alone(im2col, min_time)
            stages[f"{name} forward matmul"] = time_alone(lambda: torch.addmm(layer.bias.value, u, wm.t()), min_time)
            stages[f"{name} dW, db matmuls"] = time_alone(
                lambda: (torch.mm(u.t(), g2), torch.mv(g2.t(), ones)), min_time
            )
            if i > 0:  # the first layer is called with input_grad=False
                du = torch.mm(g2, wm).view(N, Ho, Wo, kh, kw, C)
                stages[f"{name} dU matmul"] = time_alone(lambda: torch.mm(g2, wm), min_time)
                stages[f"{name} col2im"] = time_alone(lambda: _col2im(du, H + 2 * ph, W + 2 * pw, s), min_time)
        elif isinstance(layer, minidl.MaxPool2d):
            stages["maxpool forward"] = time_alone(lambda: layer(acts[i]), min_time)
            stages["maxpool backward"] = time_alone(lambda: layer.backward(grads[i]), min_time)
    stages["other (ReLU, Flatten, Linear, loss, SGD, Python)"] = step_median - sum(stages.values())
    return {k: dict(time_s=v, share=v / step_median) for k, v in stages.items()}

def run(ctx):
    out = []
    for reg in REGIMES:
        agree = check_agreement(reg['padding'])
        if not agree['ok']: sys.exit(f"conv: {reg['name']}: minidl and torch disagree, not timing them: {agree}")
        x, t = make_data()
        steps = {name: build(reg['padding'])[0] for name, build in BUILDERS.items()}
        timing = ctx.compare({name: (lambda s=s: s(x, t)) for name, s in steps.items()})
        block, nblocks = (2, 2) if ctx.quick else (40, 12)
        blocks = time_blocks(reg['padding'], block, nblocks)
        bmed = {n: statistics.median(v) for n, v in blocks.items()}
        ratio = timing['ratios']['minidl/torch']
        r = dict(
            name=reg['name'],
            label=reg['label'],
            padding=reg['padding'],
            **timing,
            ratio=ratio,
            paired_ratio=timing['paired_ratios']['minidl/torch'],
            cpu_ratio=timing['cpu_ratios']['minidl/torch'],
            met=ratio <= TARGET,
            agreement=agree,
            blocks=dict(
                steps_per_block=block,
                cpu_time_s={n: dict(median=bmed[n], samples=v) for n, v in blocks.items()},
                cpu_ratio=bmed['minidl'] / bmed['torch'],
            ),
            breakdown=breakdown(
                reg['padding'], timing['cpu_time_s']['minidl']['median'], 0.01 if ctx.quick else 0.3
            ),
        )
        out.append(r)
        ctx.log(f"   {r['name']}: minidl {r['time_s']['minidl']['median'] * 1e6:,.0f} us, torch "
                f"{r['time_s']['torch']['median'] * 1e6:,.0f} us; minidl/torch {ratio:.3f} (target <= "
                f"{TARGET}), per round {r['paired_ratio']:.3f}, CPU {r['cpu_ratio']:.3f}, blocks of {block} "
                f"{r['blocks']['cpu_ratio']:.3f}; {r['rounds']} rounds")
    return dict(
        implementations=IMPL_DESCRIPTIONS,
        target={'minidl/torch': TARGET},
        lr=LR,
        dtype='float32',
        batch=BATCH,
        image=[1, SIDE, SIDE],
        loss='MSE against one-hot targets',
        regimes=out,
        all_targets_met=all(r['met'] for r in out),
    )
