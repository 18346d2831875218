"""The digits experiment's MLP and CNN training steps: minidl against torch.nn + autograd + torch.optim.

A training step is what `minidl.training.train` runs for a batch of 64 training images of the digits experiment:
random ±1-pixel shifts, forward, label-smoothed cross-entropy, `zero_grad`, backward, AdamW step, one-cycle schedule
step, for

* **minidl** -- `digits_mlp` / `digits_cnn` from `minidl.experiments.digits`, `LossCrossEntropy(label_smoothing=0.1)`,
  `AdamW`, `OneCycleLR`; backward with `input_grad=False` (as `train` calls it);
* **torch** -- the same architectures in `torch.nn` (`Linear`, `Conv2d`, `BatchNorm1d/2d`, `ReLU`, `MaxPool2d`,
  `Flatten`, `Dropout`; the shift is the same tensor function), `nn.CrossEntropyLoss(label_smoothing=0.1)`, autograd,
  `torch.optim.AdamW` and `torch.optim.lr_scheduler.OneCycleLR` with their defaults.

Both start from the same weights (copied with `load_state_dict`) and train on the same batches (each call takes the
next of 16). Before timing, the suite runs a few float64 steps of each with the same random draws and checks that the
parameters agree (same maths); it stops if they do not. Timing: the harness, samples of about 20 ms, up to 400 rounds
or about 25 s per model. Targets: MLP <= 0.8, CNN <= 1.25 (ratio of the median times per step).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from minidl import AdamW, Dropout, LossCrossEntropy, OneCycleLR
from minidl.experiments.digits import MODELS, RECIPE, digits_cnn, digits_mlp
from minidl.experiments.digits_data import load_digits_split, random_shift, shift_offsets

QUICK = dict(sample_s=0.005, warmup_s=0.05, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.02, warmup_s=1.0, budget_s=25.0, min_rounds=3, max_rounds=400)
TARGETS = {'mlp': 0.8, 'cnn': 1.25}
LABELS = {
    'mlp': 'MLP 64-512-10 (BatchNorm, Dropout), batch 64',
    'cnn': 'CNN 32-64 channels (BatchNorm2d, MaxPool2d, Dropout), batch 64',
}
BATCH, TOTAL_STEPS = 64, 10**7


class TorchShift(nn.Module):
    def __init__(self, pixels, size, generator):
        super().__init__()
        self.pixels, self.size, self.generator = pixels, size, generator
    def forward(self, x):
        if not self.training: return x
        return random_shift(x, shift_offsets(x.shape[0], self.pixels, self.generator, x.device), self.pixels, self.size)


def torch_twin(name, generator):
    if name == 'mlp':
        return nn.Sequential(
            TorchShift(1, (8, 8), generator),
            nn.Linear(64, 512, bias=False),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(512, 10),
        )
    return nn.Sequential(
        TorchShift(1, None, generator),
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(1024, 10),
    )


def build(name, dtype=torch.float32, global_dropout=False):
    "minidl model and its torch twin (same weights, shift generators in the same state), with a step function each"
    g = torch.Generator().manual_seed(0)
    m = (digits_mlp if name == 'mlp' else digits_cnn)(g).to(dtype=dtype)
    if global_dropout:
        for layer in m:
            if isinstance(layer, Dropout): layer.generator = None
    tg = torch.Generator(); tg.set_state(g.get_state())
    t = torch_twin(name, tg).to(dtype)
    t.load_state_dict(m.state_dict())
    m.train(); t.train()
    lr, wd, ls = MODELS[name].lr, RECIPE['weight_decay'], RECIPE['label_smoothing']
    mopt = AdamW(m.parameters(), lr=lr, weight_decay=wd); msched = OneCycleLR(mopt, max_lr=lr, total_steps=TOTAL_STEPS)
    mloss = LossCrossEntropy(label_smoothing=ls)
    topt = torch.optim.AdamW(t.parameters(), lr=lr, weight_decay=wd)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=lr, total_steps=TOTAL_STEPS)
    tloss = nn.CrossEntropyLoss(label_smoothing=ls)

    def step_minidl(x, y):
        out = m(x); mloss(out, y)
        mopt.zero_grad(); m.backward(mloss.backward(), input_grad=False); mopt.step(); msched.step()

    def step_torch(x, y):
        loss = tloss(t(x), y)
        topt.zero_grad(); loss.backward(); topt.step(); tsched.step()
    return m, t, {'minidl': step_minidl, 'torch': step_torch}


def batches(name, dtype, n):
    x, y, _, _ = load_digits_split(0, dtype=dtype)
    if name == 'cnn': x = x.view(-1, 1, 8, 8)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:BATCH * n].view(n, BATCH)
    return [(x[i].contiguous(), y[i].contiguous()) for i in idx]


def check_agreement(name, steps=3):
    "Run a few float64 steps of both with the same random draws; return the largest relative parameter difference"
    m, t, fns = build(name, torch.float64, global_dropout=True)
    data = batches(name, torch.float64, steps)
    for impl in ('minidl', 'torch'):
        torch.manual_seed(0)
        for x, y in data: fns[impl](x, y)
    sd = m.state_dict()
    return max(
        ((sd[k] - v).abs().max() / v.abs().max().clamp_min(1e-300)).item()
        for k, v in t.state_dict().items()
        if v.is_floating_point()
    )


def cycling(fn, data):
    "A function of no arguments that calls fn on the next batch of `data` each time."
    i = 0
    def step():
        nonlocal i
        fn(*data[i % len(data)]); i += 1
    return step


def run(ctx):
    out = {}
    for name in TARGETS:
        err = check_agreement(name)
        if not err < 1e-10: sys.exit(f"digits: minidl and torch disagree on the {name} (relative difference "
                                     f"{err:.2e}); not timing")
        _, _, fns = build(name)
        data = batches(name, torch.float32, 16)
        t = ctx.compare({impl: cycling(f, data) for impl, f in fns.items()})
        ratio = t['ratios']['minidl/torch']
        out[name] = dict(label=LABELS[name], rounds=t['rounds'], steps_per_sample=t['steps_per_sample'],
                         seconds_per_step={impl: v['median'] for impl, v in t['time_s'].items()},
                         ratio=ratio, median_round_ratio=t['paired_ratios']['minidl/torch'], target=TARGETS[name],
                         meets_target=ratio <= TARGETS[name], agreement_float64=err, timing=t)
        ctx.log(f"   {name}: minidl {t['time_s']['minidl']['median'] * 1e6:,.0f} us, torch "
                f"{t['time_s']['torch']['median'] * 1e6:,.0f} us; minidl/torch {ratio:.2f} (target <= "
                f"{TARGETS[name]}); {t['rounds']} rounds")
    return dict(batch=BATCH, models=out)
