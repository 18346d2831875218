"""Property-based parity tests: every minidl module against torch.nn + torch.autograd (the oracle),
over random shapes, in float32 and float64. Notebooks hold the worked examples; this file sweeps the space."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minidl
from minidl.testing import assert_close
from minidl import LossBCE, LossMSE, Linear, ReLU, Sequential, SGD, Sigmoid, Tanh

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

F32 = dict(rtol=1e-4, atol=1e-5)  # float32 runs check the dtype path; exactness is claimed in float64


def close(a, b, dtype, n=1, cond=1.0, scale=None):
    "float64: minidl.testing's policy (n roundings in a chain, condition cond); float32: a loose fixed bound."
    if dtype == torch.float64: assert_close(a, b, n=n, cond=cond, scale=scale)
    else: torch.testing.assert_close(a, b, **F32)
dtypes = st.sampled_from([torch.float32, torch.float64])
dims = st.integers(1, 12)
seeds = st.integers(0, 2**31 - 1)
settings.register_profile('minidl', max_examples=40, deadline=None)
settings.load_profile('minidl')


def term_scale(t):
    "The largest entry of a sum of absolute terms (None when empty: the policy's default)."
    return t.max().item() if t.numel() else None


def randn(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=dtype)


def autograd(fn, *tensors, grad=None):
    "Value and input gradients of `fn(*tensors)` with torch.autograd."
    leaves = [t.clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


@given(n=dims, n_in=dims, n_out=dims, bias=st.booleans(), dtype=dtypes, seed=seeds)
def test_linear(n, n_in, n_out, bias, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lin = Linear(n_in, n_out, bias=bias, dtype=dtype, generator=gen)
    x, g = randn(gen, n, n_in, dtype=dtype), randn(gen, n, n_out, dtype=dtype)
    w = lin.weight.value
    b = lin.bias.value if bias else None
    fn = (lambda x, w, b: x @ w.T + b) if bias else (lambda x, w: x @ w.T)
    y_ref, grads_ref = autograd(fn, x, w, *([b] if bias else []), grad=g)
    y = lin(x)
    gx = lin.backward(g)
    # each entry is a sum whose terms may cancel: compare on the scale of the terms, |X| |W|^T + |b|, |G| |W|, |G|^T |X|
    ax, aw, ag = x.abs(), w.abs(), g.abs()
    close(y, y_ref, dtype, n=n_in, scale=term_scale(ax @ aw.T + (b.abs() if bias else 0)))  # sums over the inputs
    ours = [gx, lin.weight.grad] + ([lin.bias.grad] if bias else [])
    scales = [ag @ aw, ag.T @ ax, ag.sum(0)]
    for a, r, sc in zip(ours, grads_ref, scales): close(a, r, dtype, n=max(n, n_out), scale=term_scale(sc))  # outputs or batch
    assert not y.requires_grad and y.dtype == dtype and gx.shape == x.shape


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
    close(y, y_ref.detach(), dtype, n=n_in, scale=term_scale(ax @ aw.T + (lin.bias.value.abs() if bias else 0)))
    close(gx, xr.grad, dtype, n=n_out, scale=term_scale(ag @ aw))
    close(lin.weight.grad, ref.weight.grad, dtype, n=max(rows, 1), scale=term_scale(ag.T @ ax))  # summed over every leading dim
    if bias: close(lin.bias.grad, ref.bias.grad, dtype, n=max(rows, 1), scale=term_scale(ag.sum(0)))


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds,
       scale=st.floats(0.1, 50.0), act=st.sampled_from(['relu', 'tanh', 'sigmoid']))
def test_activations(shape, dtype, seed, scale, act):
    module, fn = {'relu': (ReLU, torch.relu), 'tanh': (Tanh, torch.tanh), 'sigmoid': (Sigmoid, torch.sigmoid)}[act]
    gen = torch.Generator().manual_seed(seed)
    x, g = randn(gen, *shape, dtype=dtype) * scale, randn(gen, *shape, dtype=dtype)
    y_ref, (gx_ref,) = autograd(fn, x, grad=g)
    m = module()
    close(m(x), y_ref, dtype, n=2)  # exp and a division (sigmoid), or tanh: a couple of roundings
    # the derivative's factor (1 - y^2 or y (1 - y)) cancels where the unit saturates: its terms are of the size of g
    close(m.backward(g), gx_ref, dtype, n=3, scale=g.abs().max().item())


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), dtype=dtypes, seed=seeds,
       hard=st.booleans(), saturate=st.booleans())
def test_losses(shape, dtype, seed, hard, saturate):
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(*shape, generator=gen, dtype=dtype)
    if saturate: p = torch.where(p < 0.2, 0.0, torch.where(p > 0.8, 1.0, p)).to(dtype)  # exact 0 and 1 too
    t = torch.rand(*shape, generator=gen, dtype=dtype)
    if hard: t = (t > 0.5).to(dtype)
    for ours, ref in [(LossMSE(), torch.nn.functional.mse_loss), (LossBCE(), torch.nn.functional.binary_cross_entropy)]:
        loss_ref, (gp_ref,) = autograd(lambda p: ref(p, t), p)
        loss = ours(p, t)
        assert loss.shape == () and not loss.requires_grad
        close(loss, loss_ref, dtype, n=p.numel())                    # a mean over every element
        close(ours.backward(), gp_ref, dtype, n=4)                   # elementwise: a few roundings per entry


@given(widths=st.lists(st.integers(1, 10), min_size=2, max_size=5), n=dims, dtype=dtypes, seed=seeds,
       act=st.sampled_from(['relu', 'tanh', 'sigmoid']), lr=st.floats(1e-3, 1.0), decay=st.floats(0.0, 0.5))
def test_mlp_training_steps(widths, n, dtype, seed, act, lr, decay):
    "Three full SGD steps (zero_grad, forward, BCE, backward, step) of a random MLP equal torch's."
    gen = torch.Generator().manual_seed(seed)
    Act, act_fn = {'relu': (ReLU, torch.relu), 'tanh': (Tanh, torch.tanh), 'sigmoid': (Sigmoid, torch.sigmoid)}[act]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]): layers += [Linear(a, b, dtype=dtype, generator=gen), Act()]
    model = Sequential(*layers, Linear(widths[-1], 1, dtype=dtype, generator=gen), Sigmoid())
    ref = [p.value.clone().requires_grad_() for p in model.parameters()]
    x = torch.rand(n, widths[0], generator=gen, dtype=dtype)
    y = (torch.rand(n, 1, generator=gen, dtype=dtype) > 0.5).to(dtype)

    def ref_forward(x):
        h = x
        for i in range(0, len(ref) - 2, 2): h = act_fn(h @ ref[i].T + ref[i + 1])
        return torch.sigmoid(h @ ref[-2].T + ref[-1])

    opt, bce = SGD(model.parameters(), lr=lr, decay=decay), LossBCE()
    chain = n + sum(widths)       # the reductions along the longest path, forward and back
    depth = 3 * (len(widths) + 1)  # the error is amplified layer by layer, over three steps
    for t in range(3):
        opt.zero_grad()
        loss = bce(model(x), y)
        model.backward(bce.backward())
        opt.step()
        loss_ref = torch.nn.functional.binary_cross_entropy(ref_forward(x), y)
        grads = torch.autograd.grad(loss_ref, ref)
        with torch.no_grad():
            for p, gr in zip(ref, grads): p -= lr / (1 + decay * t) * gr
        close(loss, loss_ref.detach(), dtype, n=chain, cond=depth)
    for p, r in zip(model.parameters(), ref): close(p.value, r.detach(), dtype, n=chain, cond=depth)


@pytest.mark.parametrize('grad_mode', [True, False])
def test_no_graph_in_either_grad_mode(grad_mode):
    with torch.set_grad_enabled(grad_mode):
        model = Sequential(Linear(3, 4), Tanh(), Linear(4, 1), Sigmoid())
        x = torch.rand(5, 3, requires_grad=True)
        out = model(x)
        bce = LossBCE()
        loss = bce(out, torch.ones(5, 1))
        g = model.backward(bce.backward())
        for t in (out, loss, g, *[p.value for p in model.parameters()], *[p.grad for p in model.parameters()]):
            assert not t.requires_grad and t.grad_fn is None


def test_gradcheck_on_every_module():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    for m in [Linear(4, 3), ReLU(), Tanh(), Sigmoid(), Sequential(Linear(4, 5), Tanh(), Linear(5, 2), Sigmoid())]:
        assert minidl.gradcheck(m, x)
    p = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    assert minidl.gradcheck(LossMSE(), p, torch.rand(6, 4, generator=gen, dtype=torch.float64))
    assert minidl.gradcheck(LossBCE(), p, torch.rand(6, 4, generator=gen, dtype=torch.float64))
