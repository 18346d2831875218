"""Linear against torch.nn.Linear (any leading dimensions, both dtypes), its torch keywords, and the inputs it refuses.
"""
import math

import pytest
import torch
from helpers import SMALL_PROGRAM, dims, dtypes, randn, seeds, trained_linear
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import Identity, Linear, Sequential, Tanh
from minidl.testing import assert_clear_error, assert_close, assert_parity, autograd_grads, torch_grads

F64 = torch.float64


@pytest.mark.parametrize('make', [lambda: Linear(10**20, 2), lambda: Linear(2, 2**63)])
def test_linear_huge_size_is_refused_clearly(make):
    assert_clear_error(ValueError, 'positive integer', make)


def test_linear_storage_overflow_is_refused_clearly():
    assert_clear_error(ValueError, ['Linear', 'cannot allocate'], Linear, 2**40, 2**40)


def test_linear_empty_batch_and_leading_dims_like_torch():
    torch.manual_seed(0)
    m = Linear(3, 2, dtype=F64)
    ref = torch.nn.Linear(3, 2, dtype=F64)
    ref.load_state_dict({'weight': m.weight.value, 'bias': m.bias.value})
    for shape in [(0, 3), (3,), (2, 0, 3), (2, 4, 3)]:
        m.zero_grad(); ref.zero_grad()
        x = torch.randn(shape, dtype=F64)
        xt = x.clone().requires_grad_()
        y, yt = m(x), ref(xt)
        g = torch.randn(yt.shape, dtype=F64)
        yt.backward(g)
        torch.testing.assert_close(y, yt.detach())
        torch.testing.assert_close(m.backward(g), xt.grad)
        torch.testing.assert_close(m.weight.grad, ref.weight.grad)
        torch.testing.assert_close(m.bias.grad, ref.bias.grad)


def test_linear_non_contiguous_and_requires_grad_inputs():
    torch.manual_seed(0)
    m = Linear(3, 2, dtype=F64)
    x = torch.randn(3, 5, dtype=F64).t()  # (5, 3), not contiguous
    y = m(x.requires_grad_())
    assert not y.requires_grad
    torch.testing.assert_close(y, x.detach() @ m.weight.value.t() + m.bias.value)


@pytest.mark.parametrize('bias', [True, False])
def test_linear_weight_replaced_by_wrong_shape_is_diagnosed(bias):
    m = Linear(3, 2, bias=bias)
    m.weight.value = torch.randn(4, 3)  # by hand, e.g. a wrong "pretrained" tensor
    assert_clear_error(RuntimeError, ['weight', '(4, 3)', '(2, 3)'], m, torch.randn(5, 3))


@pytest.mark.parametrize('who, bad', [('weight', None), ('bias', None), ('bias', torch.zeros(5)),
                                      ('weight', torch.zeros(2, 3, dtype=F64))])
def test_linear_backward_with_a_broken_grad_accumulator_changes_nothing(who, bad):
    m = trained_linear()
    x = torch.randn(4, 3); m(x)
    getattr(m, who).grad = bad
    before = [p.grad.clone() if isinstance(p.grad, torch.Tensor) else p.grad for p in m.parameters()]
    assert_clear_error(RuntimeError, [f'{who}.grad'], m.backward, torch.ones(4, 2))
    after = [p.grad for p in m.parameters()]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before, after))


def test_linear_backward_after_weight_swapped_changes_nothing():
    m = trained_linear()
    m(torch.randn(4, 3))
    m.weight.value = m.weight.value.double()
    before = [p.grad.clone() for p in m.parameters()]
    assert_clear_error(RuntimeError, 'weight', m.backward, torch.ones(4, 2))
    assert all(torch.equal(a, p.grad) for a, p in zip(before, m.parameters()))


@pytest.mark.parametrize('shape', [(0, 3), (3,), (2, 0, 3), (2, 4, 3), (1, 1, 1, 3)])
def test_linear_any_leading_shape_matches_torch(shape):
    torch.manual_seed(0)
    lin = Linear(3, 2, dtype=F64)
    ref = torch.nn.Linear(3, 2, dtype=F64)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(shape, dtype=F64)
    g = torch.randn(shape[:-1] + (2,), dtype=F64)
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    yr.backward(g)
    y, gx = lin(x), lin.backward(g)
    rows = max(math.prod(shape[:-1]), 1)
    assert_close(y, yr.detach(), n=3)      # minidl.testing's policy: sums over the 3 inputs
    assert_close(gx, xr.grad, n=2)         # over the 2 outputs
    assert_close(lin.weight.grad, ref.weight.grad, n=rows)  # over every leading dimension
    assert_close(lin.bias.grad, ref.bias.grad, n=rows)
    assert lin.backward(g, input_grad=False) is None


@pytest.mark.parity
@pytest.mark.parametrize('make', [lambda: Linear(4, 3), lambda: Linear(in_features=4, out_features=3),
                                  lambda: Linear(4, out_features=3), lambda: Linear(nb_input=4, nb_output=3)])
def test_linear_spellings(make):
    lin = make()
    assert (lin.in_features, lin.out_features, lin.nb_input, lin.nb_output) == (4, 3, 4, 3)
    assert repr(lin) == repr(torch.nn.Linear(in_features=4, out_features=3))


@pytest.mark.parity
def test_linear_keywords_same_numbers_as_torch():
    torch.manual_seed(0); ref = torch.nn.Linear(in_features=5, out_features=2, bias=False, dtype=F64)
    torch.manual_seed(0); lin = Linear(in_features=5, out_features=2, bias=False, dtype=F64)
    assert_close(lin.weight.value, ref.weight, **SMALL_PROGRAM)  # the same draw for the same seed
    x, g = torch.randn(7, 5, dtype=F64), torch.randn(7, 2, dtype=F64)
    xr = x.clone().requires_grad_(); y = ref(xr); y.backward(g)
    assert_close(lin(x), y, **SMALL_PROGRAM)
    assert_close(lin.backward(g), xr.grad, **SMALL_PROGRAM)
    assert_close(lin.weight.grad, ref.weight.grad, **SMALL_PROGRAM)


@pytest.mark.parity
@pytest.mark.parametrize(
    'kwargs, args',
    [
        (dict(in_features=3, nb_input=3), ()),
        (dict(out_features=2, nb_output=2), (3,)),
        (dict(nb_input=3), (3, 2)),
    ],
)
def test_linear_two_names_for_one_argument(kwargs, args):
    with pytest.raises(TypeError, match='two names for one argument'): Linear(*args, **kwargs)


@pytest.mark.parity
def test_linear_missing_size():
    with pytest.raises(TypeError, match='missing the argument out_features'): Linear(in_features=3)


def term_scale(t):
    "The largest entry of a sum of absolute terms (None when empty: the policy's default)."
    return t.max().item() if t.numel() else None


@pytest.mark.parity
@given(n=dims, n_in=dims, n_out=dims, bias=st.booleans(), dtype=dtypes, seed=seeds)
def test_linear(n, n_in, n_out, bias, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lin = Linear(n_in, n_out, bias=bias, dtype=dtype, generator=gen)
    x, g = randn(gen, n, n_in, dtype=dtype), randn(gen, n, n_out, dtype=dtype)
    w = lin.weight.value
    b = lin.bias.value if bias else None
    fn = (lambda x, w, b: x @ w.T + b) if bias else (lambda x, w: x @ w.T)
    y_ref, grads_ref = autograd_grads(fn, x, w, *([b] if bias else []), grad=g)
    y = lin(x)
    gx = lin.backward(g)
    # each entry is a sum whose terms may cancel: compare on the scale of the terms, |X| |W|^T + |b|, |G| |W|, |G|^T |X|
    ax, aw, ag = x.abs(), w.abs(), g.abs()
    # sums over the inputs
    assert_parity(y, y_ref, dtype, n=n_in, scale=term_scale(ax @ aw.T + (b.abs() if bias else 0)))
    ours = [gx, lin.weight.grad] + ([lin.bias.grad] if bias else [])
    scales = [ag @ aw, ag.T @ ax, ag.sum(0)]
    # outputs or batch
    for a, r, sc in zip(ours, grads_ref, scales): assert_parity(a, r, dtype, n=max(n, n_out), scale=term_scale(sc))
    assert not y.requires_grad and y.dtype == dtype and gx.shape == x.shape


@pytest.mark.parity
@settings(max_examples=30)
@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), n_in=dims, n_out=dims, bias=st.booleans(),
       dtype=dtypes, seed=seeds)
def test_linear_any_leading_dims(lead, n_in, n_out, bias, dtype, seed):
    "Inputs `(*, in)` like torch.nn.Linear: one sample `(in,)`, empty batches (a 0 anywhere), several leading dims."
    gen = torch.Generator().manual_seed(seed)
    lin = Linear(n_in, n_out, bias=bias, dtype=dtype, generator=gen)
    ref = torch.nn.Linear(n_in, n_out, bias=bias, dtype=dtype)
    ref.load_state_dict(lin.state_dict())
    x, g = randn(gen, *lead, n_in, dtype=dtype), randn(gen, *lead, n_out, dtype=dtype)
    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    y_ref.backward(g)
    y, gx = lin(x), lin.backward(g)
    assert y.shape == y_ref.shape and gx.shape == x.shape
    rows = math.prod(lead)
    ax, aw, ag = x.abs().reshape(-1, n_in), lin.weight.value.abs(), g.abs().reshape(-1, n_out)  # the terms' sizes
    assert_parity(y, y_ref.detach(), dtype, n=n_in, scale=term_scale(ax @ aw.T + (lin.bias.value.abs() if bias else 0)))
    assert_parity(gx, xr.grad, dtype, n=n_out, scale=term_scale(ag @ aw))
    # summed over every leading dim
    assert_parity(lin.weight.grad, ref.weight.grad, dtype, n=max(rows, 1), scale=term_scale(ag.T @ ax))
    if bias: assert_parity(lin.bias.grad, ref.bias.grad, dtype, n=max(rows, 1), scale=term_scale(ag.sum(0)))


def test_linear_leading_dims_gradient_of_another_shape_is_refused_and_changes_nothing():
    ("With more than two dimensions, a gradient with the same rows but other leading dimensions is an error, "
     "as in torch.")
    from minidl.testing import assert_unchanged, snapshot
    m = Linear(4, 3, dtype=F64)
    x = torch.randn(2, 5, 4, dtype=F64)
    m(x); m.backward(torch.randn(2, 5, 3, dtype=F64))  # the checks have passed once: the next calls take the short test
    snap = snapshot(m)
    for bad in [torch.randn(5, 2, 3, dtype=F64), torch.randn(10, 3, dtype=F64), torch.randn(2, 5, 2, dtype=F64),
                torch.randn(2, 5, 3)]:
        m(x)
        with pytest.raises((ValueError, TypeError), match='expects a gradient of'): m.backward(bad)
        assert_unchanged(snap, snapshot(m))
    with pytest.raises(ValueError, match=r'input of shape \(\*, 4\)'): m(torch.randn(2, 5, 3, dtype=F64))


@pytest.mark.parity
@pytest.mark.parametrize('shape', [(5,), (3, 4), (2, 0, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_identity_like_torch(shape, dtype):
    x, g = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    ours, ref = Identity(), torch.nn.Identity(54, unused=0.1)  # torch's accepts any arguments and ignores them
    y_ref, gx_ref, _ = torch_grads(ref, x, g)
    assert ours(x) is x and torch.equal(x, y_ref)  # the input itself, as torch's
    assert ours.backward(g) is g and torch.equal(g, gx_ref) and ours.backward(g, input_grad=False) is None
    assert repr(Identity(54, unused=0.1)) == repr(ref)
    assert Identity(3).parameters() == [] and not Identity().state_dict()


@pytest.mark.parity
def test_identity_in_a_chain_equals_torch_over_steps():
    torch.manual_seed(0)
    ours = Sequential(Linear(3, 5), Identity(), Tanh(), Linear(5, 2)).to(dtype=F64)
    nn = torch.nn
    ref = nn.Sequential(nn.Linear(3, 5), nn.Identity(), nn.Tanh(), nn.Linear(5, 2)).double()
    ref.load_state_dict(ours.state_dict())
    x, g = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    for _ in range(3):  # checked, then the container's fast path
        ours.zero_grad(); ref.zero_grad()
        xr = x.clone().requires_grad_(); y_ref = ref(xr); y_ref.backward(g)
        assert_close(ours(x), y_ref.detach()); assert_close(ours.backward(g), xr.grad)
        for p, q in zip(ours.parameters(), ref.parameters()): assert_close(p.grad, q.grad)


def test_identity_refuses_clearly_and_changes_nothing():
    m, x = Identity(), torch.randn(2, 3)
    assert_clear_error(RuntimeError, 'Identity.backward called before forward', m.backward, x)
    assert_clear_error(TypeError, 'Identity expects a floating-point input, got dtype torch.int64', m,
                       torch.ones(2, dtype=torch.int64))
    assert_clear_error(TypeError, 'Identity expects the input to be a torch.Tensor, got list', m, [1.0])
    m(x)
    assert_clear_error(ValueError, 'Identity.backward expects a gradient of shape (2, 3)', m.backward, torch.ones(3, 2))
    assert_clear_error(TypeError, 'Identity.backward expects a gradient of dtype torch.float32', m.backward,
                       torch.ones(2, 3, dtype=F64))
    g = torch.ones(2, 3)
    assert m.backward(g) is g  # the refused gradients changed nothing
