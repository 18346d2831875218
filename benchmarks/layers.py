"""Forward + backward of the layers against torch.nn + autograd, one case after the other.

Each case times one forward + backward of a minidl module and of its torch.nn counterpart with autograd (input and
parameter gradients, as minidl computes them) on the same float32 batch, interleaved by the harness (samples of
about 20 ms, at least 7 rounds, about 1 s per case). The last case compares minidl's cross-entropy with and without a
device-side range check of the labels (`torch._assert_async`), which minidl does not need.
"""
import torch
import torch.nn.functional as F

from minidl import GELU, BatchNorm1d, BatchNorm2d, Dropout, LeakyReLU, LogSoftmax, LossCrossEntropy, Softmax

QUICK = dict(sample_s=0.002, warmup_s=0.0, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.02, warmup_s=0.1, budget_s=1.0, min_rounds=7, max_rounds=101)


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
    "{(module, input shape): (minidl step, torch step)}: functions of no arguments."
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
        out[name, '256, 512'] = (module_step(ours, x2, g2), torch_module_step(ref, x2, g2))
    for name, ours, ref in [('BatchNorm2d(32) train', BatchNorm2d(32), torch.nn.BatchNorm2d(32)),
                            ('BatchNorm2d(32) eval', BatchNorm2d(32).eval(), torch.nn.BatchNorm2d(32).eval())]:
        out[name, '64, 32, 16, 16'] = (module_step(ours, x4, g4), torch_module_step(ref, x4, g4))
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
            out[f"LossCrossEntropy{'(label_smoothing=0.1)' if kw else ''}", f"{n}, {c}"] = (ours, ref)
    # what a device-side range check would add to a cross-entropy step (minidl gets it from the gather instead)
    t = torch.randint(0, 10, (256,), generator=gen)
    x = rn(256, 10)
    ce = LossCrossEntropy()
    def ce_plus_assert():
        torch._assert_async(((t >= 0) & (t < 10)).all())
        ce(x, t)
        ce.backward()
    out['minidl CE + _assert_async vs minidl CE', '256, 10'] = (ce_plus_assert, module_step_ce(ce, x, t))
    return out


def module_step_ce(ce, x, t):
    def step():
        ce(x, t)
        ce.backward()
    return step


def run_cases(ctx, cases):
    "Time each case's (minidl, torch) pair; one row per case."
    rows = []
    for (module, shape), (ours, ref) in cases.items():
        t = ctx.compare({'minidl': ours, 'torch': ref})
        rows.append(
            dict(
                module=module,
                input=shape,
                minidl_s=t['time_s']['minidl']['median'],
                torch_s=t['time_s']['torch']['median'],
                ratio=t['ratios']['minidl/torch'],
                paired_ratio=t['paired_ratios']['minidl/torch'],
                rounds=t['rounds'],
                timing=t,
            )
        )
        ctx.log(f"   {module + ' (' + shape + ')':<72}{rows[-1]['minidl_s'] * 1e6:>10.1f} "
                f"us{rows[-1]['torch_s'] * 1e6:>10.1f} us{rows[-1]['ratio']:>7.2f}")
    return dict(dtype='float32', cases=rows)


def run(ctx):
    return run_cases(ctx, cases())
