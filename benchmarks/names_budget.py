"""The names experiment's time budget, carried from the machine where the targets were set to this one.

The targets ("within 10 minutes on one CPU thread") were set on a machine where a plain torch.nn reference step took
about 66 ms: the 4 x 64 Transformer (4 heads, feed-forward 256, no dropout), batches of 64 whole names, autograd,
torch's AdamW (3e-3, weight decay 0.1) under OneCycleLR, `nn.CrossEntropyLoss(ignore_index=-100)`, one thread. An
absolute time says little on a shared machine whose speed changes from one minute to the next, so this script times
that reference step interleaved with the recipes' minidl steps (`run_names`'s step: the Transformer's batch of 256
names in 3 pieces with dropout, AdamW and Muon; the MLP's 256 contexts) in one process, by processor time, and
converts each recipe into the seconds it would take on the reference machine:

    seconds there = recipe steps x (recipe step / reference step here) x 66 ms

    python -m benchmarks.names_budget [--rounds R] [--out FILE.json]

Needs the `names` extra (`pip install -e ".[names]"`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
from benchmarks.harness import compare, machine_info, write_json  # noqa: E402
from benchmarks.names_twins import benchmark_step, torch_twin  # noqa: E402
from minidl import LossCrossEntropy  # noqa: E402
from minidl.experiments.names import (  # noqa: E402
    MAX_LEN,
    MODELS,
    SPLIT_SEED,
    NamesTransformer,
    _logits_2d,
    batch_indices,
    names_data,
    names_optimizers,
)
from minidl.experiments.names_data import IGNORE, load_names_split  # noqa: E402

REFERENCE_MS = 66.0  # the reference step on the machine where the targets were set
BUDGET_S = 600.0     # 10 minutes of one thread there


def reference_step(seed=0):
    "One step of a plain torch.nn reference: the 4 x 64 Transformer, 64 whole names, AdamW, one-cycle"
    x, y = names_data('sequence', MODELS['transformer'].context, load_names_split(SPLIT_SEED)).train
    m = NamesTransformer(MAX_LEN + 1, 64, 4, 4, dropout=0.0, generator=torch.Generator().manual_seed(seed))
    t = torch_twin(m).train()
    opt = torch.optim.AdamW(t.parameters(), lr=3e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=10**7)
    lossf = nn.CrossEntropyLoss(ignore_index=IGNORE)
    batches = batch_indices(x.shape[0], 64, 10**7, torch.Generator().manual_seed(seed + 1))

    def step():
        ix = next(batches)
        opt.zero_grad()
        out = t(x[ix])
        lossf(out.reshape(-1, out.shape[-1]), y[ix].reshape(-1)).backward()
        opt.step(); sched.step()
    return step


def mlp_step(seed=0):
    "One step of the MLP's recipe in minidl, as `run_names` takes it: 256 contexts, dropout, AdamW, one-cycle"
    spec = MODELS['mlp']
    x, y = names_data(spec.kind, spec.context, load_names_split(SPLIT_SEED)).train
    m = spec.build(torch.Generator().manual_seed(seed)).train()
    opts, scheds = names_optimizers(m, spec, spec.lr, spec.weight_decay, 10**7)
    lossf = LossCrossEntropy(ignore_index=IGNORE)
    batches = batch_indices(x.shape[0], spec.batch_size, 10**7, torch.Generator().manual_seed(seed + 1))

    def step():
        ix = next(batches)
        for o in opts: o.zero_grad()
        out = m(x[ix])
        lossf(_logits_2d(out), y[ix].reshape(-1))
        m.backward(lossf.backward().view(out.shape))
        for o, s in zip(opts, scheds): o.step(); s.step()
    return step


def carry(ms: dict) -> dict:
    ("Each recipe's cost, from the processor milliseconds per step `ms` of 'reference', 'transformer' and 'mlp' "
     "measured together: its steps' seconds here and on the reference machine, and the steps the budget holds there")
    out = {}
    for name in ('transformer', 'mlp'):
        steps, ratio = MODELS[name].steps, ms[name] / ms['reference']
        there = steps * ratio * REFERENCE_MS / 1000
        out[name] = dict(steps=steps, ms_per_step=ms[name], per_reference_step=ratio,
                         seconds_here=steps * ms[name] / 1000, seconds_there=there, within_budget=there <= BUDGET_S,
                         steps_in_budget=int(BUDGET_S * 1000 / (ratio * REFERENCE_MS)))
    return out


class Parser(argparse.ArgumentParser):
    def error(self, message):
        "A bad argument: one line on stderr, exit status 2."
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    p = Parser(prog='python -m benchmarks.names_budget', description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=15, help='interleaved rounds (default 15)')
    p.add_argument('--out', type=Path, default=None, help='also write the results to this JSON file')
    a = p.parse_args(argv)
    if a.rounds < 1: p.error(f"--rounds must be at least 1, got {a.rounds}")
    torch.set_num_threads(1)
    fns = {'reference': reference_step(), 'transformer': benchmark_step()[0], 'mlp': mlp_step()}
    r = compare(fns, sample_s=0.5, warmup_s=2.0, budget_s=0.0, min_rounds=a.rounds, max_rounds=a.rounds)
    ms = {k: 1000 * v['median'] for k, v in r['cpu_time_s'].items()}
    out = dict(machine=machine_info(), reference_ms_there=REFERENCE_MS, budget_s=BUDGET_S,
               rounds=r['rounds'], cpu_ms_per_step=ms, models=carry(ms))
    print(f"reference step (torch.nn, 64 whole names): {ms['reference']:.1f} ms here, {REFERENCE_MS:.0f} ms there")
    for name, m in out['models'].items():
        print(f"{name}: {m['ms_per_step']:.1f} ms = {m['per_reference_step']:.2f} reference steps; {m['steps']:,} "
              f"steps: {m['seconds_here']:.0f} s here, {m['seconds_there']:.0f} s there "
              f"(the {BUDGET_S:.0f} s there hold {m['steps_in_budget']:,} steps)")
    if a.out is not None: write_json(a.out, out)
    return 0


if __name__ == '__main__': raise SystemExit(main())
