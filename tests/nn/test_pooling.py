"""MaxPool2d and AvgPool2d against torch: windows, padding, NaN and -inf, torch's keyword defaults."""
import math

import pytest
import torch
import torch.nn.functional as TF
from helpers import FAST, SMALL_PROGRAM, conv_cases, kernel_area, seeds
from hypothesis import given
from hypothesis import strategies as st

import minidl
from minidl import AvgPool2d, MaxPool2d
from minidl.testing import assert_close, assert_parity, torch_grads

F64 = torch.float64


@pytest.mark.parametrize('cls', [MaxPool2d, AvgPool2d])
def test_pooling_edges_equal_torch(cls):
    torch.manual_seed(0)
    p = cls(3, stride=2, padding=1)
    ref = getattr(torch.nn, cls.__name__)(3, stride=2, padding=1)
    for x in (torch.randn(0, 2, 5, 5, dtype=F64), torch.randn(2, 5, 5, 2, dtype=F64).permute(0, 3, 1, 2)):
        xt = x.clone().requires_grad_()
        yt = ref(xt)
        g = torch.randn(yt.shape, dtype=F64)
        yt.backward(g)
        torch.testing.assert_close(p(x), yt.detach())
        torch.testing.assert_close(p.backward(g), xt.grad)


def test_maxpool_nan_gradient_like_torch():
    x = torch.tensor([[[[math.nan, 1.0], [math.nan, 4.0]]]], dtype=F64)
    xt = x.clone().requires_grad_()
    yt = TF.max_pool2d(xt, 2)
    yt.backward(torch.ones_like(yt))
    p = MaxPool2d(2)
    torch.testing.assert_close(p(x), yt.detach(), equal_nan=True)
    torch.testing.assert_close(p.backward(torch.ones(1, 1, 1, 1, dtype=F64)), xt.grad)


def test_maxpool_all_minus_inf_like_torch():
    x = torch.full((1, 1, 2, 2), -math.inf, dtype=F64)
    xt = x.clone().requires_grad_()
    yt = TF.max_pool2d(xt, 3, 1, 1)
    yt.backward(torch.ones_like(yt))
    p = MaxPool2d(3, stride=1, padding=1)
    torch.testing.assert_close(p(x), yt.detach())
    torch.testing.assert_close(p.backward(torch.ones_like(yt.detach())), xt.grad)


@pytest.mark.parity
def test_pooling_keywords_at_torch_defaults():
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    for ours, ref in [(minidl.MaxPool2d(2, 2, 0, 1, False, False), torch.nn.MaxPool2d(2, 2, 0, 1, False, False)),
                      (minidl.AvgPool2d(3, 1, 1, False, True, None), torch.nn.AvgPool2d(3, 1, 1, False, True, None))]:
        assert_close(ours(x), ref(x), **SMALL_PROGRAM)
    for make, msg in [(lambda: minidl.MaxPool2d(2, dilation=2), 'dilation=1 only'),
                      (lambda: minidl.MaxPool2d(2, ceil_mode=True), 'ceil_mode=False only'),
                      (lambda: minidl.AvgPool2d(2, count_include_pad=False), 'count_include_pad=True only')]:
        with pytest.raises(ValueError, match=msg): make()


@pytest.mark.parity
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
    # same arg-max positions (overlapping windows: sums in another order)
    assert_parity(pool.backward(g), gx_ref, n=kernel_area(k))


@pytest.mark.parity
@FAST
@given(
    case=conv_cases(half_pad=True),
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    channels_last=st.booleans(),
    seed=seeds,
)
def test_avgpool2d(case, n, c, channels_last, seed):
    (k, s, p), (h, w) = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    if channels_last: x = x.to(memory_format=torch.channels_last)
    pool, ref = AvgPool2d(k, s, p), torch.nn.AvgPool2d(k, s, p)
    y = pool(x)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y_ref, gx_ref, _ = torch_grads(ref, x, g)
    assert_parity(y, y_ref, n=kernel_area(k))                 # a mean over the window
    assert_parity(pool.backward(g), gx_ref, n=kernel_area(k))  # overlapping windows add up
