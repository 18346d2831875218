"""What each hot-path change bought: the MLP training step before the performance work and after each change.

The variants are cumulative. `before` is the hot path as first written (commit 0c901e6: the code of the old `Linear`,
activations, `LossBCE` and gradient check is copied below, as subclasses of today's classes, so the comparison runs in
one process on today's package); each next variant adds one group of changes, and the last one is minidl as it is
now, as the core suite runs it. torch.nn + autograd runs alongside as the reference. The core suite's regimes;
timing by the harness, samples of about 10 ms, up to 201 rounds or about 40 s per regime.
"""
from __future__ import annotations

import torch

from benchmarks import core
from minidl import Linear, LossBCE, ReLU, Sigmoid
from minidl.nn.loss import Loss
from minidl.nn.module import Module

QUICK = core.QUICK
FULL = dict(core.FULL, budget_s=40.0)

# ---------------------------------------------------------------- the hot path as first written (0c901e6)
# (its checks too, so that this history does not depend on where today's package keeps its private helpers)

_BCE_EPS = float(torch.tensor(1e-12, dtype=torch.float32))  # PyTorch's EPSILON: 1e-12 rounded to float32


def _fmt_shape(shape) -> str: return str(tuple(shape)).replace(',)', ')')


def _not_called(who):
    return RuntimeError(f"{who}.backward called before forward: run forward first, it stores what backward needs")


def _check_tensor(x, who, what='input'):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects the {what} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point {what}, got dtype {x.dtype} (convert with .float())")
    return x.detach() if x.requires_grad else x


def _check_unit_interval(t, who, what):
    lo, hi = torch.aminmax(t)
    lo, hi = lo.item(), hi.item()
    if not (0.0 <= lo and hi <= 1.0): raise ValueError(f"{who} expects {what} in [0, 1], got values in "
                                                       f"[{lo:.4g}, {hi:.4g}]")


def _old_check_grad(g, shape, dtype, who):
    g = _check_tensor(g, who, 'gradient')
    if g.shape != shape:
        raise ValueError(f"{who}.backward expects a gradient of shape {_fmt_shape(shape)} "
                         f"(the shape of its forward output), got {_fmt_shape(g.shape)}")
    if g.dtype != dtype:
        raise TypeError(f"{who}.backward expects a gradient of dtype {dtype} (the dtype of its forward "
                        f"output), got {g.dtype}")
    return g

class OldLinear(Linear):
    _accept, _accept_grad = Module._accept, Module._accept_grad  # its own checks, as first written (no shared ones)
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
    _accept, _accept_grad = Module._accept, Module._accept_grad  # its own checks, as first written (no shared ones)
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
    _accept, _accept_grad = Loss._accept, Loss._accept_grad  # its own checks, as first written (no shared ones)
    def forward(self, prediction, target):
        p, y = self._accept_pair(prediction, target)
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
              "LossBCE: lerp for the weighted sum, device-side range checks (prediction check from the "
              "loss's NaN), in-place gradient"),
    '+linear': (Linear, ReLU, Sigmoid, LossBCE, True,
                "Linear: input checks left to the matrix product, bias gradient as one addmv_, torch.mm"),
    '+input_grad=False': (Linear, ReLU, Sigmoid, LossBCE, False,
                          "the first layer skips its input gradient: minidl as it is now, as the core suite runs it"),
}

builder = core.minidl_builder


def run(ctx):
    builders = {name: builder(*v[:5]) for name, v in VARIANTS.items()}
    builders['torch'] = core.build_torch
    out = []
    for reg in core.REGIMES:
        weights, x, t = core.init_weights(reg['sizes']), *core.make_data(reg['sizes'], reg['batch'])
        steps = {name: build(weights)[0] for name, build in builders.items()}
        timing = ctx.compare({name: (lambda s=s: s(x, t)) for name, s in steps.items()})
        med = {n: v['median'] for n, v in timing['time_s'].items()}
        out.append(dict(name=reg['name'], label=reg['label'], median_s=med, **timing,
                        ops_per_step={n: core.count_ops(s, x, t) for n, s in steps.items()}))
        ctx.log(
            f"   {reg['name']:<12} "
            + ', '.join(f"{n} {core.us(m)} us" for n, m in med.items())
            + f"; {timing['rounds']} rounds"
        )
    return dict(variants={name: v[5] for name, v in VARIANTS.items()}, regimes=out)
