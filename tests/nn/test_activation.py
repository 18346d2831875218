"""Activations (ReLU, Tanh, Sigmoid, LeakyReLU, GELU, GEGLU, Softmax, LogSoftmax) against torch: values and gradients in
both dtypes, empty inputs, NaN and infinities, in-place flags."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_PROGRAM, dtypes, randn, seeds, small
from hypothesis import example, given
from hypothesis import strategies as st

import minidl as M
from minidl import GEGLU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from minidl.testing import assert_clear_error, assert_close, assert_parity, autograd_grads

F64 = torch.float64
TORCH_EQ = {ReLU: torch.nn.ReLU, Tanh: torch.nn.Tanh, Sigmoid: torch.nn.Sigmoid, LeakyReLU: torch.nn.LeakyReLU,
            GELU: torch.nn.GELU, Softmax: lambda: torch.nn.Softmax(-1), LogSoftmax: lambda: torch.nn.LogSoftmax(-1)}


@pytest.mark.parametrize('cls', list(TORCH_EQ))
@pytest.mark.parametrize('shape', [(0, 3), (), (2, 3), (4, 3, 2)])
def test_activation_edges_equal_torch(cls, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=F64)
    if x.dim() >= 2: x = x.transpose(0, -1).contiguous().transpose(0, -1)  # non-contiguous where it can be
    m, ref = cls(), TORCH_EQ[cls]()
    xt = x.clone().requires_grad_()
    yt = ref(xt)
    g = torch.randn(yt.shape, dtype=F64)
    yt.backward(g)
    y = m(x)
    k = x.shape[-1] if x.dim() else 1  # Softmax/LogSoftmax reduce over the last dimension
    # minidl.testing's policy: a few roundings per entry, or the softmax's sum
    assert_close(y, yt.detach(), n=max(k, 4))
    # the derivatives' terms (g times a factor that cancels where a unit saturates) are of the size of g, k
    # for LogSoftmax
    assert_close(m.backward(g), xt.grad, n=max(k, 8), scale=k * g.abs().max().item() if g.numel() else None)


@pytest.mark.parametrize('slope', [float('nan'), float('inf')])
def test_leaky_relu_refuses_non_finite_slope(slope):
    assert_clear_error(ValueError, 'finite', LeakyReLU, slope)


@pytest.mark.parametrize('act, fn', [(ReLU, torch.relu), (Tanh, torch.tanh), (Sigmoid, torch.sigmoid)])
def test_activations_on_empty_batches(act, fn):
    x = torch.randn(0, 4, dtype=F64)
    m = act()
    assert m(x).shape == fn(x).shape == (0, 4)
    assert m.backward(torch.zeros(0, 4, dtype=F64)).shape == (0, 4)


SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 1e-40, -1e30]


ACTS = [
    ('ReLU', lambda: M.ReLU(), lambda: torch.nn.ReLU()),
    ('Tanh', lambda: M.Tanh(), lambda: torch.nn.Tanh()),
    ('Sigmoid', lambda: M.Sigmoid(), lambda: torch.nn.Sigmoid()),
    ('LeakyReLU', lambda: M.LeakyReLU(), lambda: torch.nn.LeakyReLU()),
    ('LeakyReLU(0)', lambda: M.LeakyReLU(0.0), lambda: torch.nn.LeakyReLU(0.0)),
    ('LeakyReLU(2)', lambda: M.LeakyReLU(2.0), lambda: torch.nn.LeakyReLU(2.0)),
    ('LeakyReLU(-0.5)', lambda: M.LeakyReLU(-0.5), lambda: torch.nn.LeakyReLU(-0.5)),
    ('Dropout.eval', lambda: M.Dropout(0.3).eval(), lambda: torch.nn.Dropout(0.3).eval()),
]


def _same(a, b):
    "Equal, NaN where the other is NaN (element-wise functions of one element: the same operations, so exact)"
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(torch.nan_to_num(a, 0.0), torch.nan_to_num(b, 0.0))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('name,make,make_t', ACTS, ids=[a[0] for a in ACTS])
def test_activations_at_nan_and_inf_like_torch(name, make, make_t, dtype):
    x = torch.tensor(SPECIAL, dtype=dtype)
    g = torch.linspace(-2, 3, len(SPECIAL), dtype=dtype)  # finite upstream gradients
    m = make(); y = m(x.clone()); dx = m.backward(g.clone())
    xt = x.clone().requires_grad_(); yt = make_t()(xt); yt.backward(g.clone())
    assert _same(y, yt.detach()), (y, yt)
    if name in ('Tanh', 'Sigmoid'):  # a product of three factors; the same formula as torch's, maybe another order
        assert torch.equal(dx.isnan(), xt.grad.isnan())
        torch.testing.assert_close(
            torch.nan_to_num(dx), torch.nan_to_num(xt.grad), rtol=4 * torch.finfo(dtype).eps, atol=0
        )
    else: assert _same(dx, xt.grad), (dx, xt.grad)


@pytest.mark.parity
@pytest.mark.parametrize('ours, ref', [(ReLU(inplace=True), torch.nn.ReLU(inplace=True)), (ReLU(), torch.nn.ReLU()),
                                       (LeakyReLU(0.2, inplace=True), torch.nn.LeakyReLU(0.2, inplace=True)),
                                       (LeakyReLU(), torch.nn.LeakyReLU())])
def test_inplace_activations(ours, ref):
    assert repr(ours) == repr(ref)
    x, g = torch.randn(5, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    keep = x.clone()
    xr = x.clone().requires_grad_(); y = ref(xr * 1)  # (torch refuses in place on a leaf: apply it to a copy)
    y.backward(g)
    assert_close(ours(x), y, **SMALL_PROGRAM); assert_close(ours.backward(g), xr.grad, **SMALL_PROGRAM)
    assert torch.equal(x, keep)  # minidl computes out of place: the input is kept


@pytest.mark.parity
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds,
       scale=st.floats(0.1, 50.0), act=st.sampled_from(['relu', 'tanh', 'sigmoid']))
def test_activations(shape, dtype, seed, scale, act):
    module, fn = {'relu': (ReLU, torch.relu), 'tanh': (Tanh, torch.tanh), 'sigmoid': (Sigmoid, torch.sigmoid)}[act]
    gen = torch.Generator().manual_seed(seed)
    x, g = randn(gen, *shape, dtype=dtype) * scale, randn(gen, *shape, dtype=dtype)
    y_ref, (gx_ref,) = autograd_grads(fn, x, grad=g)
    m = module()
    assert_parity(m(x), y_ref, dtype, n=2)  # exp and a division (sigmoid), or tanh: a couple of roundings
    # the derivative's factor (1 - y^2 or y (1 - y)) cancels where the unit saturates: its terms are of the size of g
    assert_parity(m.backward(g), gx_ref, dtype, n=3, scale=g.abs().max().item())


@pytest.mark.parity
@small
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1.0, 30.0, 1e4]), log=st.booleans(), data=st.data())
def test_softmax(shape, dtype, seed, scale, log, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype) * scale
    g = torch.randn(*shape, generator=gen, dtype=dtype)
    ours, ref = (LogSoftmax(dim), torch.log_softmax) if log else (Softmax(dim), torch.softmax)
    y_ref, (gx_ref,) = autograd_grads(lambda t: ref(t, dim), x, grad=g)
    k = shape[dim]  # the softmax reduces over this many entries
    # float32: log-probabilities of size ~scale
    assert_parity(ours(x), y_ref, dtype, n=k, atol=1e-4 * (scale if log else 1))
    # y (g - sum g y) cancels where the softmax saturates: its terms are of the size of g (k of them for LogSoftmax)
    assert_parity(ours.backward(g), gx_ref, dtype, n=k, scale=k * g.abs().max().item())


@pytest.mark.parity
@small
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds, scale=st.floats(0.1, 20.0),
       act=st.sampled_from(['leaky', 'leaky-0.3', 'gelu', 'gelu-tanh']))
def test_leaky_relu_gelu(shape, dtype, seed, scale, act):
    ours, ref = {'leaky': (LeakyReLU(), F.leaky_relu), 'leaky-0.3': (LeakyReLU(0.3), lambda t: F.leaky_relu(t, 0.3)),
                 'gelu': (GELU(), F.gelu), 'gelu-tanh': (GELU('tanh'), lambda t: F.gelu(t, approximate='tanh'))}[act]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype) * scale
    g = torch.randn(*shape, generator=gen, dtype=dtype)
    y_ref, (gx_ref,) = autograd_grads(ref, x, grad=g)
    # erf or tanh and three more roundings per entry; (x/2)(1 + erf) cancels in the negative tail, where the result is
    # far smaller than its terms x/2 and (x/2) erf: the absolute error is on the scale of x
    assert_parity(ours(x), y_ref, dtype, n=4, scale=x.abs().max().item())
    # the derivative's terms cancel in the tails
    assert_parity(ours.backward(g), gx_ref, dtype, n=8, scale=g.abs().max().item())


@pytest.mark.parity
@small
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3), width=st.integers(1, 6), dtype=dtypes, seed=seeds,
       scale=st.floats(0.1, 20.0), approximate=st.sampled_from(['none', 'tanh']))
# a float32 case where PyTorch's default (unvectorised) kernels differ by 1.5e-5 on terms near 57: above float32's
# fixed bound, within the policy's on the terms' scale (see `assert_parity`)
@example(shape=[3, 3], width=3, dtype=torch.float32, seed=11763, scale=8.505636403314952, approximate='tanh')
def test_geglu(shape, width, dtype, seed, scale, approximate):
    "a * gelu(b) on the halves (a, b) of the last dimension, against torch.autograd on torch's gelu"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, 2 * width, generator=gen, dtype=dtype) * scale
    g = torch.randn(*shape, width, generator=gen, dtype=dtype)
    def ref(t):
        a, b = t.chunk(2, -1)
        return a * F.gelu(b, approximate=approximate)
    y_ref, (gx_ref,) = autograd_grads(ref, x, grad=g)
    m, big = GEGLU(approximate), x.abs().max().item()
    # GELU's error (n=4 on the scale of b, see test_leaky_relu_gelu) times a, and the product's rounding
    assert_parity(m(x), y_ref, dtype, n=5, scale=big * big)
    # dL/da = G GELU(b): one rounding; dL/db: GELU's backward (n=8) of G a, itself rounded once
    assert_parity(m.backward(g), gx_ref, dtype, n=9, scale=g.abs().max().item() * big)


def test_geglu_refuses_odd_widths_and_keeps_its_input():
    assert_clear_error(ValueError, ['last dimension is even', 'got shape (2, 5)'], GEGLU(), torch.ones(2, 5))
    x = torch.randn(3, 4); keep = x.clone()
    m = GEGLU(); m(x); m.backward(torch.ones(3, 2))
    assert torch.equal(x, keep)
    x.add_(1.0)  # changed in place after forward: refused, not a wrong gradient
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): m.backward(torch.ones(3, 2))


@pytest.mark.parity
@pytest.mark.parametrize('cls, fn', [(Softmax, torch.softmax), (LogSoftmax, torch.log_softmax)])
@pytest.mark.parametrize('shape, dim', [((3, 0), 1), ((3, 0), 0), ((0, 4), 1), ((2, 0, 3), 1), ((0,), 0)])
@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_softmax_over_an_empty_dim_is_empty_as_torch(cls, fn, shape, dim, dtype):
    x = torch.randn(shape, dtype=dtype); g = torch.randn(shape, dtype=dtype)
    m = cls(dim); y = m(x); gx = m.backward(g)
    xr = x.clone().requires_grad_(); yr = fn(xr, dim); yr.backward(g)
    assert y.shape == yr.shape and y.dtype == yr.dtype and gx.shape == xr.grad.shape and gx.dtype == dtype


@pytest.mark.parity
@pytest.mark.parametrize('approximate', ['none', 'tanh'])
@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_gelu_at_nan_and_infinities_equals_torch(approximate, dtype):
    x = torch.tensor([float('nan'), float('inf'), -float('inf')], dtype=dtype)
    m = GELU(approximate); y = m(x); gx = m.backward(torch.ones_like(x))
    # the oracle is torch's float64 kernel: at +inf, its float32 erf form answers inf on some processors (an AMD EPYC)
    # and NaN on others (an Intel Xeon with AVX-512), whatever ATEN_CPU_CAPABILITY; the float64 one answers inf
    xr = x.double().requires_grad_()
    yr = torch.nn.functional.gelu(xr, approximate=approximate)
    yr.backward(torch.ones_like(xr))
    torch.testing.assert_close(y, yr.detach().to(dtype), rtol=0, atol=0, equal_nan=True)  # inf, NaN: exactly torch's
    torch.testing.assert_close(gx, xr.grad.to(dtype), rtol=0, atol=0, equal_nan=True)
    big = torch.tensor([-1e30, -60.0, 60.0, 1e30], dtype=dtype)                     # finite but saturated
    y = m(big); gx = m.backward(torch.ones_like(big))
    br = big.clone().requires_grad_()
    yr = torch.nn.functional.gelu(br, approximate=approximate)
    yr.backward(torch.ones_like(big))
    torch.testing.assert_close(y, yr.detach(), rtol=1e-6, atol=0, equal_nan=True)
    torch.testing.assert_close(gx, br.grad, rtol=1e-6, atol=0, equal_nan=True)


@pytest.mark.parametrize('a', [1e16, -1e16, 2.0**60, -(1.5 + 2**-52), 5.0, -3.7, 2e7, 0.0, 0.3, 1.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_leaky_relu_gradient_is_exact_for_any_slope(a, dtype):
    "The factor is exactly 1 or the slope: h (1 - a) + a lost the 1 for |a| >= 2**53 (float64), 2**24 (float32)."
    x = torch.tensor([-2.0, 0.0, 3.0, float('nan'), float('inf'), -float('inf')] * 1500, dtype=dtype)
    g = torch.randn(x.shape, dtype=dtype)
    m = LeakyReLU(a); m(x)
    xr = x.clone().requires_grad_(); F.leaky_relu(xr, a).backward(g)
    assert torch.equal(m.backward(g).nan_to_num(), xr.grad.nan_to_num())


def test_leaky_relu_huge_slope_gives_torch_gradient():
    x = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    m = LeakyReLU(1e16); m(x)
    assert torch.equal(m.backward(torch.ones(2, dtype=torch.float64)), torch.tensor([1e16, 1.0], dtype=torch.float64))


@pytest.mark.parametrize('cls', [Softmax, LogSoftmax])
def test_softmax_dim_is_a_setting(cls):
    "dim checked when written (as the constructor checks it); a change after forward makes backward refuse."
    x = torch.randn(3, 4, dtype=torch.float64)
    m = cls(dim=1); m(x)
    assert_clear_error(TypeError, f"{cls.__name__} expects dim to be an integer, got 'a'", setattr, m, 'dim', 'a')
    assert m.dim == 1
    m.dim = 0
    assert_clear_error(RuntimeError, 'its dim was changed after its forward', m.backward, torch.ones_like(x))
    m(x)  # a new forward with the new dim: backward equals torch's
    xr = x.clone().requires_grad_()
    (xr.softmax(0) if cls is Softmax else xr.log_softmax(0)).backward(torch.ones_like(x))
    assert_close(m.backward(torch.ones_like(x)), xr.grad)
