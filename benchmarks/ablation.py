"""What each hot-path change bought: the training step of minidl before the performance work and after each change.

    python benchmarks/ablation.py           # a few minutes: prints the table, writes benchmarks/ablation.json
    python benchmarks/ablation.py --quick   # smoke run, writes only with --out FILE

The variants are cumulative. `before` is the hot path as first written (commit 0c901e6: the code of the old
`Linear`, activations, `LossBCE` and gradient check is copied below, as subclasses of today's classes, so the
comparison runs in one process on today's package); each next variant adds one group of changes, and the last one
is minidl as it is now, used as `benchmarks/bench.py` uses it. torch.nn + autograd runs alongside as the reference.
Same timing method as `bench.py` (one thread, interleaved rounds, medians); the same regimes.
"""
from __future__ import annotations
import argparse, datetime, json, statistics, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # also puts the repository root on sys.path
from minidl import Linear, ReLU, Sigmoid, Sequential, LossBCE, SGD
from minidl.nn.module import _check_tensor, _fmt_shape, _not_called
from minidl.nn.loss import _check_unit_interval, _BCE_EPS
from minidl.files import atomic_open

# ---------------------------------------------------------------- the hot path as first written (0c901e6)

def _old_check_grad(g, shape, dtype, who):
    g = _check_tensor(g, who, 'gradient')
    if g.shape != shape:
        raise ValueError(f"{who}.backward expects a gradient of shape {_fmt_shape(shape)} "
                         f"(the shape of its forward output), got {_fmt_shape(g.shape)}")
    if g.dtype != dtype:
        raise TypeError(f"{who}.backward expects a gradient of dtype {dtype} (the dtype of its forward output), got {g.dtype}")
    return g

class OldLinear(Linear):
    def forward(self, x):
        x = _check_tensor(x, 'Linear')
        w = self.weight.value
        if x.dim() != 2 or x.shape[1] != self.nb_input: raise ValueError('shape')
        if x.dtype != w.dtype: raise TypeError('dtype')
        if x.device != w.device: raise RuntimeError('device')
        self._x = x
        if self.bias is None: return x @ w.t()
        return torch.addmm(self.bias.value, x, w.t())
    def backward(self, grad_output, input_grad=True):
        x = self._x
        if x is None: raise _not_called('Linear')
        g = _old_check_grad(grad_output, (x.shape[0], self.nb_output), x.dtype, 'Linear')
        self.weight.grad.addmm_(g.t(), x)
        if self.bias is not None: self.bias.grad += g.sum(0)
        return g @ self.weight.value

class _OldElementwise:
    def forward(self, x):
        self._y = y = self.function(_check_tensor(x, type(self).__name__))
        return y
    def backward(self, grad_output, input_grad=True):
        y = self._y
        if y is None: raise _not_called(type(self).__name__)
        return self.old_derivative(_old_check_grad(grad_output, y.shape, y.dtype, type(self).__name__), y)

class OldReLU(_OldElementwise, ReLU):
    def old_derivative(self, g, y): return g * (y > 0)

class OldSigmoid(_OldElementwise, Sigmoid):
    def old_derivative(self, g, y): return g * y * (1 - y)

class OldLossBCE(LossBCE):
    def forward(self, prediction, target):
        p, y = self._check(prediction, target)
        _check_unit_interval(p, 'LossBCE', 'predictions')
        _check_unit_interval(y, 'LossBCE', 'targets')
        self._save_for_backward(p, y)
        log_p = torch.log(p).clamp_(min=-100)
        log_1mp = torch.log1p(-p).clamp_(min=-100)
        return -(y * log_p + (1 - y) * log_1mp).mean()
    def backward(self):
        p, y = self._saved_tensors()
        return (p - y) / ((1 - p) * p).clamp_(min=_BCE_EPS) / p.numel()

# ---------------------------------------------------------------- the cumulative variants

VARIANTS = {  # name: (Linear, ReLU, Sigmoid, loss, input_grad, what the step adds)
    'before': (OldLinear, OldReLU, OldSigmoid, OldLossBCE, True,
               "the hot path as first written (commit 0c901e6)"),
    '+activations': (OldLinear, ReLU, Sigmoid, OldLossBCE, True,
                     "activations: derivatives in fewer kernels (masked_fill, in-place products), cheaper checks"),
    '+loss': (OldLinear, ReLU, Sigmoid, LossBCE, True,
              "LossBCE: lerp for the weighted sum, device-side range checks (prediction check from the loss's NaN), in-place gradient"),
    '+linear': (Linear, ReLU, Sigmoid, LossBCE, True,
                "Linear: input checks left to the matrix product, bias gradient as one addmv_, torch.mm"),
    '+input_grad=False': (Linear, ReLU, Sigmoid, LossBCE, False,
                          "the first layer skips its input gradient: minidl as it is now, as bench.py runs it"),
}

builder = bench.minidl_builder

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run (numbers are not meaningful)')
    ap.add_argument('--out', type=Path, default=None, help='JSON output (default: benchmarks/ablation.json; --quick: none)')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device('cpu')
    out = args.out if args.out is not None else (None if args.quick else bench.ROOT / 'benchmarks' / 'ablation.json')
    sample_s, warmup_s, budget_s, rounds = (0.003, 0.02, 0, 3) if args.quick else (0.01, 1.0, 40.0, None)
    builders = {name: builder(*v[:5]) for name, v in VARIANTS.items()}
    builders['torch'] = bench.build_torch
    print(f"torch.get_num_threads() = {torch.get_num_threads()}")
    result = dict(schema=1, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  quick=args.quick, machine=bench.machine_info(device),
                  variants={name: v[5] for name, v in VARIANTS.items()}, regimes=[])
    for reg in bench.REGIMES:
        samples, k, ops = bench.time_regime(reg['sizes'], reg['batch'], device, rounds, sample_s, warmup_s, budget_s, builders)
        med = {name: statistics.median(v) for name, v in samples.items()}
        result['regimes'].append(dict(name=reg['name'], label=reg['label'], rounds=len(samples['torch']), median_s=med,
                                      ops_per_step=ops))
    names = list(VARIANTS)
    print(f"\n{'variant':<20}" + ''.join(f"{r['name']:>26}" for r in result['regimes']))
    print(f"{'':<20}" + ''.join(f"{'us/step  /before  /torch':>26}" for _ in result['regimes']))
    for name in names + ['torch']:
        cells = []
        for r in result['regimes']:
            m = r['median_s']
            cells.append(f"{bench.fmt_us(m[name]):>9} {m[name] / m['before']:>7.2f} {m[name] / m['torch']:>7.2f}")
        print(f"{name:<20}" + ''.join(f"{c:>26}" for c in cells))
    if out is not None:
        with atomic_open(out, 'w') as f: f.write(json.dumps(result, indent=1) + '\n')
        print(f"wrote {out}")
    return result

if __name__ == '__main__':
    main()
