"""Where minidl's MLP training step spends its time beyond the hand-written loop, one checking layer at a time.

The circle MLP's step (2-25-25-25-25-1, BCE, SGD) is timed, interleaved, as seven candidates, each a ratio to the
benchmark's `hand` loop (`benchmarks/core.py`):

* **maths** -- minidl's layers with nothing around them: each module's `forward._math` and `backward._math` (what
  `Sequential` runs once it knows the input passes), the BCE and its gradient written out as `LossBCE` computes them,
  one `torch._foreach_zero_` for the gradients and one `torch._foreach_add_` for the update;
* **+ Sequential**, **+ LossBCE**, **+ SGD.step**, **+ zero_grad** -- the maths with that one of minidl's objects in its
  place: the container's call with its checks and its fast path, the loss with its checks, the optimizer's step with
  its cached checks, the optimizer's `zero_grad`;
* **minidl** -- all of them: the step the `core` suite times.

What each adds to *maths* is what that layer of checks costs in a real training loop, where the Python of the checks
runs between the kernels (and costs more than the same lines timed alone).
"""
from __future__ import annotations

import statistics

import torch

import minidl
from benchmarks import core
from minidl.nn.loss import _BCE_EPS

QUICK = dict(sample_s=0.001, warmup_s=0.01, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.02, warmup_s=0.3, budget_s=12.0, min_rounds=30, max_rounds=400)
BATCHES = (10, 100, 1000)
# name: (Sequential, LossBCE, SGD.step, zero_grad) of minidl (True) or the bare maths (False)
VARIANTS = {
    'maths': (False, False, False, False),
    '+ Sequential': (True, False, False, False),
    '+ LossBCE': (False, True, False, False),
    '+ SGD.step': (False, False, True, False),
    '+ zero_grad': (False, False, False, True),
    'minidl': (True, True, True, True),
}


def build(weights, seq: bool, loss: bool, opt: bool, zero: bool, lr: float = core.LR):
    "The circle MLP step with minidl's container, loss, optimizer step and zero_grad where asked, else the bare maths."
    layers = core.minidl_layers(weights, minidl.Linear, minidl.ReLU, minidl.Sigmoid)
    model, lossf = minidl.Sequential(*layers), minidl.LossBCE()
    sgd = minidl.SGD(model.parameters(), lr=lr)
    values, grads = [p.value for p in model.parameters()], [p.grad for p in model.parameters()]
    fw = [(m, type(m).forward._math) for m in layers]            # each module's maths, without its checks
    bw = [(m, type(m).backward._math) for m in reversed(layers)]

    def step(x, t):
        if zero: sgd.zero_grad()
        else: torch._foreach_zero_(grads)
        if seq: p = model(x)
        else:
            p = x
            for m, f in fw: p = f(m, p)
        if loss: out = lossf(p, t); g = lossf.backward()
        else:  # LossBCE's maths: -mean(t log p + (1 - t) log(1 - p)), logs clamped at -100;
            #      dL/dp = (p - t) / max((1 - p) p, eps) / n
            out = torch.lerp(torch.neg(p).log1p_().clamp_(min=-100), torch.log(p).clamp_(min=-100), t).mean().neg_()
            g = torch.sub(p, t).div_(torch.rsub(p, 1).mul_(p).clamp_(min=_BCE_EPS)).div_(p.numel())
        if seq: model.backward(g, input_grad=False)
        else:
            for m, f in bw[:-1]: g = f(m, g)
            bw[-1][1](bw[-1][0], g, input_grad=False)                # the first layer's input is data
        if opt: sgd.step()
        else: torch._foreach_add_(values, grads, alpha=-lr)
        return out
    return step, values


def run(ctx):
    regimes = []
    for batch in BATCHES:
        weights, x, t = core.to_device(core.init_weights(core.CIRCLE), *core.make_data(core.CIRCLE, batch), 'cpu')
        hand = core.build_hand(weights)[0]
        fns = {'hand': lambda: hand(x, t)}
        for name, v in VARIANTS.items():
            step = build(weights, *v)[0]
            fns[name] = (lambda s: lambda: s(x, t))(step)
        names = list(fns)
        # every candidate against the hand loop: the harness's ratios are of its first candidate over the others
        timing = ctx.compare({**{n: fns[n] for n in names[1:]}, 'hand': fns['hand']})
        med = {n: timing['time_s'][n]['median'] for n in names}
        over_hand = {n: med[n] / med['hand'] for n in names[1:]}
        h = timing['time_s']['hand']['samples']  # the rounds are interleaved: one ratio per round, then the median
        paired = {n: statistics.median(a / b for a, b in zip(timing['time_s'][n]['samples'], h)) for n in names[1:]}
        regimes.append(dict(name=f'circle-{batch}', batch=batch, rounds=timing['rounds'], median_s=med,
                            over_hand=over_hand, paired_over_hand=paired, timing=timing))
        ctx.log(f"   circle-{batch:<5} hand {med['hand'] * 1e6:.0f} us; over hand: "
                + ', '.join(f"{n} {r:.3f}" for n, r in over_hand.items()) + f"; {timing['rounds']} rounds")
    return dict(variants={n: dict(zip(('Sequential', 'LossBCE', 'SGD.step', 'zero_grad'), v))
                          for n, v in VARIANTS.items()}, regimes=regimes)
