"""Property-based parity tests of the convolution layers against torch.nn + torch.autograd (the oracle): Conv2d,
MaxPool2d, AvgPool2d, Flatten and a Conv2d -> ReLU -> MaxPool2d -> Flatten -> Linear chain, over random shapes, kernel
sizes, strides and paddings, in float64 (and float32 for Conv2d); plus finite-difference gradchecks on small shapes.
The notebooks (17_conv, 18_pooling, 19_flatten) hold the worked examples; this file sweeps the space."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minidl.testing import assert_close as policy_close
from minidl import AvgPool2d, Conv2d, Flatten, Linear, LossMSE, MaxPool2d, ReLU, Sequential, gradcheck

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

F32 = dict(rtol=1e-4, atol=1e-5)  # float32 runs check the dtype path; exactness is claimed in float64
seeds = st.integers(0, 2**31 - 1)
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))
FAST = settings(max_examples=20, deadline=None)


def assert_close(a, b, dtype=torch.float64, n=1, cond=1.0, scale=None):
    "float64: minidl.testing's policy (a chain of n roundings, condition cond, terms of size scale); float32: a loose bound."
    if dtype == torch.float64: policy_close(a, b, n=n, cond=cond, scale=scale)
    else: torch.testing.assert_close(a, b, **F32)


def kernel_area(k):
    return k * k if isinstance(k, int) else k[0] * k[1]


@st.composite
def conv_cases(draw, max_k=4, max_s=3, max_p=2, half_pad=False):
    "Kernel, stride, padding, and an image size in which the padded kernel fits at least once."
    k, s = draw(pairs(1, max_k)), draw(pairs(1, max_s))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))) if half_pad else draw(pairs(0, max_p))
    hw = tuple(draw(st.integers(max(1, k[i] - 2 * p[i]), max(1, k[i] - 2 * p[i]) + 6)) for i in range(2))
    as_int = draw(st.booleans()) and k[0] == k[1] and s[0] == s[1] and p[0] == p[1]
    return (k[0], s[0], p[0]) if as_int else (k, s, p), hw


def torch_grads(module, x, g):
    "Output, input gradient and parameter gradients of a torch module."
    xr = x.clone().requires_grad_()
    y = module(xr)
    y.backward(g)
    return y.detach(), xr.grad, [p.grad for p in module.parameters()]


@FAST
@given(case=conv_cases(), n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4), bias=st.booleans(),
       dtype=st.sampled_from([torch.float64, torch.float64, torch.float32]), channels_last=st.booleans(), seed=seeds)
def test_conv2d(case, n, c_in, c_out, bias, dtype, channels_last, seed):
    (k, s, p), (h, w) = case
    gen = torch.Generator().manual_seed(seed)
    conv = Conv2d(c_in, c_out, k, stride=s, padding=p, bias=bias, dtype=dtype, generator=gen)
    ref = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=bias, dtype=dtype)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=dtype)
    if channels_last: x = x.to(memory_format=torch.channels_last)
    y = conv(x)
    g = torch.randn(y.shape, generator=gen, dtype=dtype)
    y_ref, gx_ref, grads_ref = torch_grads(ref, x, g)
    assert y.shape == y_ref.shape and y.dtype == dtype and not y.requires_grad
    kk = kernel_area(k)
    # sums whose terms may cancel: compared on the scale of the terms (sums of absolute products), as for Linear
    w, ax, ag = conv.weight.value, x.abs(), g.abs()
    y_terms = F.conv2d(ax, w.abs(), stride=s, padding=p).max().item() + (conv.bias.value.abs().max().item() if bias else 0)
    gx_terms = ag.max().item() * w.abs().sum((0, 2, 3)).max().item()
    gw_terms = ax.max().item() * ag.sum((0, 2, 3)).max().item()
    assert_close(y, y_ref, dtype, n=c_in * kk, scale=y_terms)                   # a sum over the receptive field
    assert_close(conv.backward(g), gx_ref, dtype, n=c_out * kk, scale=gx_terms)  # over the outputs each input feeds
    for p_, r in zip(conv.parameters(), grads_ref):
        assert_close(p_.grad, r, dtype, n=n * y.shape[2] * y.shape[3], scale=gw_terms)


@FAST
@given(case=conv_cases(half_pad=True), n=st.integers(1, 3), c=st.integers(1, 3), ties=st.booleans(),
       default_stride=st.booleans(), channels_last=st.booleans(), infs=st.booleans(), seed=seeds)
def test_maxpool2d(case, n, c, ties, default_stride, channels_last, infs, seed):
    (k, s, p), (h, w) = case
    if default_stride:
        s = None
        kk = (k, k) if isinstance(k, int) else k
        pp = (p, p) if isinstance(p, int) else p
        h, w = max(h, kk[0] - 2 * pp[0]), max(w, kk[1] - 2 * pp[1])
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randint(-2, 2, (n, c, h, w), generator=gen).double() if ties
         else torch.randn(n, c, h, w, generator=gen, dtype=torch.float64))
    if infs: x[x < -1.5] = -math.inf   # windows of -inf ties, also against the padding
    if channels_last: x = x.to(memory_format=torch.channels_last)
    pool, ref = MaxPool2d(k, s, p), torch.nn.MaxPool2d(k, s, p)
    y = pool(x)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y_ref, gx_ref, _ = torch_grads(ref, x, g)
    assert torch.equal(y, y_ref)            # a maximum is exact
    assert_close(pool.backward(g), gx_ref, n=kernel_area(k))  # same arg-max positions (overlapping windows: sums in another order)


@FAST
@given(case=conv_cases(half_pad=True), n=st.integers(1, 3), c=st.integers(1, 3), channels_last=st.booleans(), seed=seeds)
def test_avgpool2d(case, n, c, channels_last, seed):
    (k, s, p), (h, w) = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    if channels_last: x = x.to(memory_format=torch.channels_last)
    pool, ref = AvgPool2d(k, s, p), torch.nn.AvgPool2d(k, s, p)
    y = pool(x)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y_ref, gx_ref, _ = torch_grads(ref, x, g)
    assert_close(y, y_ref, n=kernel_area(k))                 # a mean over the window
    assert_close(pool.backward(g), gx_ref, n=kernel_area(k))  # overlapping windows add up


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=5), data=st.data(), seed=seeds)
def test_flatten(shape, data, seed):
    d = len(shape)
    start = data.draw(st.integers(-d, d - 1))
    end = data.draw(st.integers(start % d, d - 1))
    if data.draw(st.booleans()): end -= d  # the same dimension, counted from the end
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    f, ref = Flatten(start, end), torch.nn.Flatten(start, end)
    y = f(x)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y_ref, gx_ref, _ = torch_grads(ref, x, g)
    assert torch.equal(y, y_ref) and torch.equal(f.backward(g), gx_ref)
    assert repr(f) == repr(ref)


@settings(max_examples=10, deadline=None)
@given(c1=st.integers(1, 4), c2=st.integers(1, 4), k=st.integers(1, 3), pad=st.integers(0, 1), pool=st.integers(1, 2),
       n=st.integers(1, 4), hw=st.integers(6, 9), seed=seeds)
def test_cnn_chain(c1, c2, k, pad, pool, n, hw, seed):
    "Conv2d -> ReLU -> Conv2d -> ReLU -> MaxPool2d -> Flatten -> Linear, loaded with torch's weights."
    torch.manual_seed(seed)
    side = (hw + 2 * pad - k + 1 + 2 * pad - k + 1) // pool
    nn = torch.nn
    ref = nn.Sequential(nn.Conv2d(1, c1, k, padding=pad), nn.ReLU(), nn.Conv2d(c1, c2, k, padding=pad), nn.ReLU(),
                        nn.MaxPool2d(pool), nn.Flatten(), nn.Linear(c2 * side * side, 3)).double()
    net = Sequential(Conv2d(1, c1, k, padding=pad), ReLU(), Conv2d(c1, c2, k, padding=pad), ReLU(), MaxPool2d(pool),
                     Flatten(), Linear(c2 * side * side, 3)).to(dtype=torch.float64)
    net.load_state_dict(ref.state_dict())
    assert list(net.state_dict()) == list(ref.state_dict())
    x, t = torch.randn(n, 1, hw, hw, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64)
    loss_fn = LossMSE()
    loss = loss_fn(net(x), t)
    gx = net.backward(loss_fn.backward())
    xr = x.clone().requires_grad_()
    loss_ref = nn.functional.mse_loss(ref(xr), t)
    loss_ref.backward()
    chain = k * k * (1 + c1 + c2) + c2 * side * side + n * hw * hw  # the reductions along the longest path, and the batch's
    assert_close(loss, loss_ref.detach(), n=chain, cond=4)            # cond: four layers with weights
    assert_close(gx, xr.grad, n=chain, cond=4)
    for p, r in zip(net.parameters(), ref.parameters()): assert_close(p.grad, r.grad, n=chain, cond=4)


@pytest.mark.parametrize('module, shape', [
    (Conv2d(2, 3, 3), (2, 2, 4, 4)),
    (Conv2d(2, 2, (2, 3), stride=(2, 1), padding=(1, 0)), (1, 2, 5, 4)),
    (Conv2d(1, 2, 3, stride=2, padding=1, bias=False), (2, 1, 5, 5)),
    (MaxPool2d(2), (2, 2, 4, 5)),
    (MaxPool2d(3, stride=1, padding=1), (1, 2, 4, 4)),
    (AvgPool2d(2), (2, 2, 4, 5)),
    (AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1)), (1, 2, 5, 4)),
    (Flatten(), (2, 3, 2, 2)),
    (Sequential(Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(8, 2)), (2, 1, 4, 4)),
], ids=lambda v: repr(v).split('(')[0] if not isinstance(v, tuple) else str(v))
def test_gradcheck(module, shape):
    assert gradcheck(module, torch.randn(shape, generator=torch.Generator().manual_seed(0)))


def test_failed_calls_change_nothing():
    conv = Conv2d(2, 3, 3)
    x = torch.randn(2, 2, 5, 5)
    y = conv(x)
    g = torch.randn(y.shape)
    for bad in (torch.randn(2, 3, 5, 5), torch.randn(2, 2, 2, 2), torch.randn(2, 5, 5), x.double(), [1.0]):
        with pytest.raises((TypeError, ValueError)): conv(bad)
    with pytest.raises(RuntimeError, match='its last forward failed'): conv.backward(g)  # a failed forward forgets
    assert conv(x).equal(y)
    with pytest.raises(ValueError): conv.backward(torch.randn(2, 3, 2, 2))
    assert conv.weight.grad.abs().sum() == 0 and conv.bias.grad.abs().sum() == 0
    dx = conv.backward(g)
    ref = torch.nn.Conv2d(2, 3, 3)
    ref.load_state_dict(conv.state_dict())
    _, gx_ref, (gw_ref, gb_ref) = torch_grads(ref, x, g)
    torch.testing.assert_close(dx, gx_ref)  # float32: torch's default tolerances
    torch.testing.assert_close(conv.weight.grad, gw_ref)
