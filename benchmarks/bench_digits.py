"""Time one training step of the digits MLP and CNN in minidl and in torch.nn + autograd + torch.optim, interleaved.

    python benchmarks/bench_digits.py            # full run (about a minute): prints the table, writes benchmarks/results_digits.json
    python benchmarks/bench_digits.py --quick    # smoke run (seconds): prints the table, writes only with --out FILE

A training step is what `minidl.training.train` runs for a batch of 64 training images of the digits experiment:
random ±1-pixel shifts, forward, label-smoothed cross-entropy, `zero_grad`, backward, AdamW step, one-cycle schedule
step, for

* **minidl** -- `digits_mlp` / `digits_cnn` from `minidl.experiments.digits`, `LossCrossEntropy(label_smoothing=0.1)`,
  `AdamW`, `OneCycleLR`; backward with `input_grad=False` (as `train` calls it);
* **torch** -- the same architectures in `torch.nn` (`Linear`, `Conv2d`, `BatchNorm1d/2d`, `ReLU`, `MaxPool2d`,
  `Flatten`, `Dropout`; the shift is the same tensor function), `nn.CrossEntropyLoss(label_smoothing=0.1)`, autograd,
  `torch.optim.AdamW` and `torch.optim.lr_scheduler.OneCycleLR` with their defaults.

Both start from the same weights (copied with `load_state_dict`) and train on the same batches. Before timing, the
script runs a few float64 steps of each with the same random draws and checks that the parameters agree (same maths);
it stops if they do not.

Timing: one thread (`torch.set_num_threads(1)`), warm-up steps first, then rounds in which each implementation runs a
short sample of consecutive steps (about 20 ms), alternating which goes first, until the time budget is spent. The
ratio is the median over rounds of minidl's time per step over the median of torch's; short interleaved samples make
it robust on a busy machine. Targets (issue 11): MLP <= 0.8, CNN <= 1.25.
"""
from __future__ import annotations
import argparse, datetime, json, platform, statistics, sys, time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
import minidl
from minidl.files import atomic_open
from minidl.nn.dropout import Dropout
from minidl.nn.loss import LossCrossEntropy
from minidl.optim import AdamW
from minidl.optim.lr_scheduler import OneCycleLR
from minidl.experiments.digits import digits_mlp, digits_cnn, RECIPE, MODELS
from minidl.experiments.digits_data import load_digits_split, random_shift, shift_offsets

TARGETS = {'mlp': 0.8, 'cnn': 1.25}
LABELS = {'mlp': 'MLP 64-512-10 (BatchNorm, Dropout), batch 64', 'cnn': 'CNN 32-64 channels (BatchNorm2d, MaxPool2d, Dropout), batch 64'}
BATCH, TOTAL_STEPS = 64, 10**7


class TorchShift(nn.Module):
    def __init__(self, pixels, size, generator): super().__init__(); self.pixels, self.size, self.generator = pixels, size, generator
    def forward(self, x):
        if not self.training: return x
        return random_shift(x, shift_offsets(x.shape[0], self.pixels, self.generator, x.device), self.pixels, self.size)


def torch_twin(name, generator):
    if name == 'mlp':
        return nn.Sequential(TorchShift(1, (8, 8), generator), nn.Linear(64, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
                             nn.Dropout(0.3), nn.Linear(512, 10))
    return nn.Sequential(TorchShift(1, None, generator), nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Flatten(), nn.Dropout(0.3), nn.Linear(1024, 10))


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
    return max(((sd[k] - v).abs().max() / v.abs().max().clamp_min(1e-300)).item() for k, v in t.state_dict().items() if v.is_floating_point())


def time_model(name, budget_s, sample_s, warmup_s, max_rounds):
    _, _, fns = build(name)
    data = batches(name, torch.float32, 16)
    per = {impl: [] for impl in fns}
    def run(impl, k):
        f, t0 = fns[impl], time.perf_counter()
        for i in range(k): f(*data[i % len(data)])
        return time.perf_counter() - t0
    steps = {}
    for impl in fns:  # warm up, and size a sample
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < warmup_s: run(impl, 1); k += 1
        steps[impl] = max(1, round(sample_s / ((time.perf_counter() - t0) / k)))
    order, t0, r = list(fns), time.perf_counter(), 0
    while r < max_rounds and (time.perf_counter() - t0 < budget_s or r < 3):
        for impl in (order if r % 2 == 0 else order[::-1]): per[impl].append(run(impl, steps[impl]) / steps[impl])
        r += 1
    med = {impl: statistics.median(v) for impl, v in per.items()}
    ratios = [a / b for a, b in zip(per['minidl'], per['torch'])]
    q = lambda v: [float(x) for x in statistics.quantiles(v, n=4)] if len(v) > 1 else [v[0]] * 3
    return dict(label=LABELS[name], rounds=r, steps_per_sample=steps,
                seconds_per_step={impl: med[impl] for impl in med}, quartiles={impl: q(v) for impl, v in per.items()},
                ratio=med['minidl'] / med['torch'], median_round_ratio=statistics.median(ratios),
                target=TARGETS[name], meets_target=med['minidl'] / med['torch'] <= TARGETS[name],
                samples={impl: v for impl, v in per.items()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run: a few rounds (numbers are not meaningful)')
    ap.add_argument('--out', type=Path, default=None, help='JSON output (default: benchmarks/results_digits.json; --quick: none)')
    ap.add_argument('--models', default='mlp,cnn', help='comma-separated: mlp, cnn (default: both)')
    ap.add_argument('--budget', type=float, default=None, help='seconds of timed rounds per model (default 25; --quick: 1)')
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(',') if n]
    if not names or any(n not in TARGETS for n in names): ap.error(f"--models expects names among mlp, cnn, got {args.models!r}")
    out = args.out if args.out is not None else (None if args.quick else ROOT / 'benchmarks' / 'results_digits.json')
    if out is not None and not out.parent.is_dir(): ap.error(f"--out: the folder {str(out.parent)!r} does not exist")
    torch.set_num_threads(1)
    print(f"torch.get_num_threads() = {torch.get_num_threads()}, torch {torch.__version__}, minidl {minidl.__version__}")
    result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), quick=args.quick,
                  threads=torch.get_num_threads(), device='cpu', torch=torch.__version__, minidl=minidl.__version__,
                  python=platform.python_version(), machine=platform.machine(), processor=platform.processor(), models={})
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 25.0)
    for name in names:
        err = check_agreement(name)
        if not err < 1e-10: sys.exit(f"bench_digits: minidl and torch disagree on the {name} (relative difference {err:.2e}); not timing")
        r = time_model(name, budget, sample_s=0.005 if args.quick else 0.02, warmup_s=0.2 if args.quick else 1.0,
                       max_rounds=5 if args.quick else 400)
        r['agreement_float64'] = err
        result['models'][name] = r
    print(f"{'model':<6} {'minidl us/step':>15} {'torch us/step':>14} {'m/torch':>8} {'target':>7}  rounds")
    for name, r in result['models'].items():
        s = r['seconds_per_step']
        print(f"{name:<6} {1e6*s['minidl']:>15,.0f} {1e6*s['torch']:>14,.0f} {r['ratio']:>8.2f} {'<= ' + format(r['target'], 'g'):>7}  "
              f"{r['rounds']}{'' if r['meets_target'] else '  (above target)'}")
    if out is not None:
        with atomic_open(out, 'w') as f: f.write(json.dumps(result, indent=1) + '\n')
        print(f"wrote {out}")
    return 0


if __name__ == '__main__': sys.exit(main())
