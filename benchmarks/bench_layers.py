"""Forward + backward cost per step of the "going further" layers (issue 8) against torch.nn + autograd.

One thread, the same process, minidl and torch interleaved round by round; prints the median time per step of each
and their ratio (minidl / torch; below 1 means minidl is faster). Usage: python benchmarks/bench_layers.py [--rounds R] [--clock cpu]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from minidl import (BatchNorm1d, BatchNorm2d, Dropout, GELU, LeakyReLU, LogSoftmax, LossCrossEntropy, Softmax)


def module_step(m, x, g):
    "One minidl forward + backward."
    def step():
        m(x)
        m.backward(g)
    return step


def torch_module_step(m, x, g):
    "One torch forward + autograd backward (input gradient and parameter gradients, like minidl)."
    xr = x.clone().requires_grad_()
    def step():
        xr.grad = None
        m(xr).backward(g)
    return step


def cases(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    rn = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    x2, g2 = rn(256, 512), rn(256, 512)
    x4, g4 = rn(64, 32, 16, 16), rn(64, 32, 16, 16)
    out = {}
    for name, ours, ref in [('Dropout(0.5)', Dropout(0.5), torch.nn.Dropout(0.5)),
                            ('Softmax', Softmax(), torch.nn.Softmax(-1)),
                            ('LogSoftmax', LogSoftmax(), torch.nn.LogSoftmax(-1)),
                            ('LeakyReLU', LeakyReLU(), torch.nn.LeakyReLU()),
                            ('GELU', GELU(), torch.nn.GELU()),
                            ("GELU('tanh')", GELU('tanh'), torch.nn.GELU('tanh')),
                            ('BatchNorm1d(512) train', BatchNorm1d(512), torch.nn.BatchNorm1d(512)),
                            ('BatchNorm1d(512) eval', BatchNorm1d(512).eval(), torch.nn.BatchNorm1d(512).eval())]:
        out[name + ' (256, 512)'] = (module_step(ours, x2, g2), torch_module_step(ref, x2, g2))
    for name, ours, ref in [('BatchNorm2d(32) train', BatchNorm2d(32), torch.nn.BatchNorm2d(32)),
                            ('BatchNorm2d(32) eval', BatchNorm2d(32).eval(), torch.nn.BatchNorm2d(32).eval())]:
        out[name + ' (64, 32, 16, 16)'] = (module_step(ours, x4, g4), torch_module_step(ref, x4, g4))
    for n, c in [(256, 10), (256, 1000)]:
        x, t = rn(n, c), torch.randint(0, c, (n,), generator=gen)
        for kw in [{}, dict(label_smoothing=0.1)]:
            ce = LossCrossEntropy(**kw)
            xr = x.clone().requires_grad_()
            def ours(ce=ce, x=x, t=t):
                ce(x, t)
                ce.backward()
            def ref(xr=xr, t=t, kw=kw):
                xr.grad = None
                F.cross_entropy(xr, t, **kw).backward()
            out[f"LossCrossEntropy{'(label_smoothing=0.1)' if kw else ''} ({n}, {c})"] = (ours, ref)
    # what a device-side range check would add to a cross-entropy step (minidl gets it from the gather instead)
    t = torch.randint(0, 10, (256,), generator=gen)
    x = rn(256, 10)
    ce = LossCrossEntropy()
    def ce_plus_assert():
        torch._assert_async(((t >= 0) & (t < 10)).all())
        ce(x, t)
        ce.backward()
    out['[minidl CE + _assert_async] vs [minidl CE] (256, 10)'] = (ce_plus_assert, module_step_ce(ce, x, t))
    return out


def module_step_ce(ce, x, t):
    def step():
        ce(x, t)
        ce.backward()
    return step


def timeit(fn, n, clock=time.perf_counter):
    t0 = clock()
    for _ in range(n): fn()
    return (clock() - t0) / n


def run(make_cases, description: str, rounds: int, width: int = 58, spread: bool = False):
    """Time each (minidl, torch) pair of `make_cases()` interleaved round by round, one thread, and print the medians and
    their ratio; `--rounds` and `--min-time` on the command line (shared by bench_layers.py and bench_seq.py). With
    `spread`, a second line per case gives the range of the per-round ratios (minidl / torch of the same round)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--rounds', type=int, default=rounds)
    ap.add_argument('--min-time', type=float, default=0.05, help='seconds per measurement')
    ap.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                    help="'wall': elapsed time; 'cpu': this thread's CPU time, which leaves out the time other processes held the core")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == 'wall' else time.thread_time
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, float32, median of {args.rounds} interleaved rounds"
          + (", thread CPU time" if args.clock == 'cpu' else ''))
    print(f"{'module (input shape)':<{width}}{'minidl us':>11}{'torch us':>11}{'ratio':>8}")
    for name, (ours, ref) in make_cases().items():
        for f in (ours, ref): f(); f()  # warm up
        n = max(1, int(args.min_time / max(timeit(ref, 3), 1e-7)))
        a, b = [], []
        for _ in range(args.rounds):
            a.append(timeit(ours, n, clock))
            b.append(timeit(ref, n, clock))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:<{width}}{ma * 1e6:>11.1f}{mb * 1e6:>11.1f}{ma / mb:>8.2f}")
        if spread:
            r = sorted(x / y for x, y in zip(a, b))
            print(f"    per-round ratios: min {r[0]:.2f}, median {statistics.median(r):.2f}, max {r[-1]:.2f} ({len(r)} rounds)")


def main():
    run(cases, __doc__.splitlines()[0], rounds=7, width=58)


if __name__ == '__main__':
    main()
