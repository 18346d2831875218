"""Cost of the version check of saved tensors (`SavesForBackward`) on the hot path, measured in one process.

    python benchmarks/bench_version_check.py

Times a `Linear(25, 25)` forward+backward and a full training step of the circle MLP (zero_grad, forward, BCE,
backward, SGD step) twice: as minidl runs them, and with the version check switched off (every module and loss saves
and reads back its tensors as plain attributes, without reading the version counters). One thread; the two variants
are interleaved sample by sample, and the table shows the minimum over samples (the least disturbed by other work on
the machine) and the medians. The difference is the price of never computing a gradient from a tensor changed in place.
"""
from __future__ import annotations
import statistics, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import minidl
from minidl.nn.module import SavesForBackward, _not_called
def _plain_save(self, *objs): self._saved = objs


def _plain_saved(self):
    if self._saved is None: raise _not_called(type(self).__name__)
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


def sample(step, k: int) -> float:
    t = time.perf_counter()
    for _ in range(k): step()
    return (time.perf_counter() - t) / k


def run(rounds: int = 300):
    torch.set_num_threads(1)
    checked_save, checked_saved = SavesForBackward._save_for_backward, SavesForBackward._saved_tensors
    def variant(check: bool):
        SavesForBackward._save_for_backward = checked_save if check else _plain_save
        SavesForBackward._saved_tensors = checked_saved if check else _plain_saved
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; min over {rounds} interleaved samples")
    print(f"{'':24s} {'N':>5s} | {'checked us':>10s} {'plain us':>9s} {'cost us':>8s} {'ratio':>6s} | medians checked/plain")
    try:
        for kind, n, k in [('Linear(25,25) fwd+bwd', 10, 100), ('Linear(25,25) fwd+bwd', 100, 100),
                           ('circle MLP step', 10, 20), ('circle MLP step', 100, 20)]:
            steps = {c: builders(kind, n) for c in (True, False)}
            times = {True: [], False: []}
            for c in (True, False):
                variant(c)
                for _ in range(500): steps[c]()  # warm-up
            for r in range(rounds):
                for c in ((True, False) if r % 2 else (False, True)):
                    variant(c); times[c].append(sample(steps[c], k))
            a, b = min(times[True]), min(times[False])
            print(f"{kind:24s} {n:5d} | {a*1e6:10.2f} {b*1e6:9.2f} {(a-b)*1e6:8.2f} {a/b:6.3f} | "
                  f"{statistics.median(times[True])*1e6:.2f} / {statistics.median(times[False])*1e6:.2f}")
    finally:
        variant(True)


if __name__ == '__main__': run()
