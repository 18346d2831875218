"""The cost of the version check of saved tensors (`SavesForBackward`) on the hot path.

Times a `Linear(25, 25)` forward+backward and a full training step of the circle MLP (zero_grad, forward, BCE,
backward, SGD step) twice: as minidl runs them, and with the version check switched off (every module and loss saves
and reads back its tensors as plain attributes, without reading the version counters). The two variants are
interleaved by the harness (the switch happens before each sample, untimed; samples of about 2 ms, up to 300 rounds
or about 5 s per case); the minimum over samples (the least disturbed by other work on the machine) and the medians
are reported. The difference is the price of never computing a gradient from a tensor changed in place.
"""
from __future__ import annotations

import torch

import minidl
from minidl import SavesForBackward

QUICK = dict(sample_s=0.001, warmup_s=0.01, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.002, warmup_s=0.2, budget_s=5.0, min_rounds=15, max_rounds=300)
CASES = [
    ('Linear(25,25) fwd+bwd', 10),
    ('Linear(25,25) fwd+bwd', 100),
    ('circle MLP step', 10),
    ('circle MLP step', 100),
]


def _plain_save(self, *objs): self._saved = objs


def _plain_saved(self):
    if self._saved is None: raise RuntimeError(f"{type(self).__name__}.backward called before forward")
    return self._saved


def builders(kind: str, n: int):
    "A step function for `kind` at batch size `n` (fresh modules, the same seed every time)."
    torch.manual_seed(0)
    if kind == 'Linear(25,25) fwd+bwd':
        m, x, g = minidl.Linear(25, 25), torch.randn(n, 25), torch.randn(n, 25)
        def step(): m(x); m.backward(g)
        return step
    L, R = minidl.Linear, minidl.ReLU
    m = minidl.Sequential(L(2, 25), R(), L(25, 25), R(), L(25, 25), R(), L(25, 25), R(), L(25, 1), minidl.Sigmoid())
    loss, opt = minidl.LossBCE(), minidl.SGD(m.parameters(), lr=0.05)
    x, y = torch.rand(n, 2), (torch.rand(n, 1) > 0.5).float()
    def step(): opt.zero_grad(); loss(m(x), y); m.backward(loss.backward(), input_grad=False); opt.step()
    return step


def run(ctx):
    checked = SavesForBackward._save_for_backward, SavesForBackward._saved_tensors
    def variant(check: bool):
        SavesForBackward._save_for_backward, SavesForBackward._saved_tensors = (
            checked if check else (_plain_save, _plain_saved)
        )
    rows = []
    try:
        for kind, n in CASES:
            t = ctx.compare({'checked': builders(kind, n), 'plain': builders(kind, n)},
                            before={'checked': lambda: variant(True), 'plain': lambda: variant(False)})
            a, b = t['time_s']['checked']['min'], t['time_s']['plain']['min']
            rows.append(
                dict(
                    what=kind,
                    batch=n,
                    checked_min_s=a,
                    plain_min_s=b,
                    cost_s=a - b,
                    ratio=a / b,
                    checked_median_s=t['time_s']['checked']['median'],
                    plain_median_s=t['time_s']['plain']['median'],
                    rounds=t['rounds'],
                    timing=t,
                )
            )
            ctx.log(f"   {kind:24s} {n:5d}: checked {a * 1e6:.2f} us, plain {b * 1e6:.2f} us (minima), ratio "
                    f"{a / b:.3f}; {t['rounds']} rounds")
    finally:
        variant(True)
    return dict(cases=rows)
