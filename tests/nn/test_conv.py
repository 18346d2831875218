"""Conv2d against torch (strides, padding modes, dilation, groups of shapes by hypothesis), a small CNN's steps,
and the inputs it refuses."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import FAST, SMALL_PROGRAM, conv_cases, kernel_area, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import (
    SGD,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    LossCrossEntropy,
    LossMSE,
    MaxPool2d,
    ReLU,
    Sequential,
    gradcheck,
)
from minidl.testing import assert_clear_error, assert_close, assert_parity, torch_grads

F64 = torch.float64


def test_conv_huge_kernel_is_refused_clearly():
    assert_clear_error(ValueError, 'kernel_size', Conv2d, 1, 1, 10**20)


def test_conv_edges_equal_torch():
    torch.manual_seed(0)
    c = Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64)
    ref = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64)
    ref.load_state_dict({'weight': c.weight.value, 'bias': c.bias.value})
    for x in (torch.randn(0, 2, 5, 5, dtype=F64), torch.randn(2, 5, 5, 2, dtype=F64).permute(0, 3, 1, 2)):
        c.zero_grad(); ref.zero_grad()
        xt = x.clone().requires_grad_()
        yt = ref(xt)
        g = torch.randn(yt.shape, dtype=F64)
        yt.backward(g)
        torch.testing.assert_close(c(x), yt.detach())
        torch.testing.assert_close(c.backward(g), xt.grad)
        torch.testing.assert_close(c.weight.grad, ref.weight.grad)


def test_conv_refuses_bad_inputs_clearly():
    c = Conv2d(2, 3, 3)
    assert_clear_error(ValueError, 'x[None]', c, torch.zeros(2, 5, 5))
    assert_clear_error(ValueError, 'larger than the padded input', c, torch.zeros(1, 2, 2, 2))
    assert_clear_error(TypeError, 'torch.float64 input', c, torch.zeros(1, 2, 5, 5, dtype=F64))
    assert_clear_error(TypeError, 'int or a pair of ints', Conv2d, 2, 3, 3, stride=True)
    # 'same' and 'valid' are torch's
    assert_clear_error(ValueError, "'same' or 'valid', got 'full'", Conv2d, 2, 3, 3, padding='full')


@pytest.mark.parity
@pytest.mark.parametrize('kernel, stride, padding, dilation', [
    (3, 1, 'same', 1), (4, 1, 'same', 1), ((2, 5), 1, 'same', (3, 2)), (2, 1, 'same', 3), (3, 1, 'valid', 1),
    (3, 1, 'valid', 2), (3, 2, 1, 2), ((3, 2), (2, 1), (2, 1), (1, 3))])
@pytest.mark.parametrize('mode', ['zeros', 'reflect', 'replicate', 'circular'])
def test_conv_padding_and_dilation_like_torch(kernel, stride, padding, dilation, mode):
    kw = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode, dtype=F64)
    torch.manual_seed(0); conv = Conv2d(3, 4, kernel, **kw)
    torch.manual_seed(0); ref = torch.nn.Conv2d(3, 4, kernel, **kw)
    assert repr(conv) == repr(ref) and (conv.padding, conv.dilation, conv.padding_mode) == (
        ref.padding,
        ref.dilation,
        ref.padding_mode,
    )
    assert_close(conv.weight.value, ref.weight, **SMALL_PROGRAM)
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    xr = x.clone().requires_grad_()
    with warnings.catch_warnings():  # torch warns that 'same' with an even kernel copies the input
        warnings.simplefilter('ignore', UserWarning)
        y = ref(xr)
    g = torch.randn_like(y)
    y.backward(g)
    assert_close(conv(x), y, **SMALL_PROGRAM); assert_close(conv.backward(g), xr.grad, **SMALL_PROGRAM)
    assert_close(conv.weight.grad, ref.weight.grad, **SMALL_PROGRAM)
    assert_close(conv.bias.grad, ref.bias.grad, **SMALL_PROGRAM)
    if padding == 'same': assert y.shape[2:] == x.shape[2:]


@pytest.mark.parity
@pytest.mark.parametrize(
    'kwargs, exc, msg',
    [
        (dict(groups=2), ValueError, 'groups=1 only'),
        (dict(padding_mode='mirror'), ValueError, "padding_mode to be one of"),
        (dict(padding='same', stride=2), ValueError, "padding='same' needs stride 1"),
        (dict(padding='full'), ValueError, "'same' or 'valid', got 'full'"),
        (dict(dilation=0), ValueError, 'dilation to be positive'),
    ],
)
def test_conv_refuses_what_it_does_not_do(kwargs, exc, msg):
    with pytest.raises(exc, match=msg.replace('(', r'\(').replace(')', r'\)')): Conv2d(2, 2, 3, **kwargs)


@pytest.mark.parity
def test_conv_dilated_kernel_must_fit():
    with pytest.raises(ValueError, match='larger than the padded input'):
        Conv2d(1, 1, 3, dilation=3)(torch.randn(1, 1, 6, 6))


@pytest.mark.parity
def test_small_cnn_steps_match_torch():
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear,
    BatchNorm1d(momentum=None) and LossCrossEntropy: three SGD steps and an evaluation equal torch's in float64."""
    from minidl import Conv2d, Flatten, MaxPool2d
    nn = torch.nn
    gen = torch.Generator().manual_seed(0)
    dt = torch.float64
    ours = Sequential(
        Conv2d(2, 4, 3, padding=1, dtype=dt, generator=gen),
        BatchNorm2d(4, dtype=dt),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(4 * 3 * 3, 5, dtype=dt, generator=gen),
        BatchNorm1d(5, momentum=None, dtype=dt),
    )
    ref = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dt),
        nn.BatchNorm2d(4, dtype=dt),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5, dtype=dt),
        nn.BatchNorm1d(5, momentum=None, dtype=dt),
    )
    ref.load_state_dict(ours.state_dict())
    CHAIN = 2 * 9 + 4 * 9 + 6 * 36 + 36 + 5  # conv field, its backward, the batch statistics, the Linear, the classes
    loss_fn, opt = LossCrossEntropy(label_smoothing=0.1), SGD(ours.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(4):
        training = step < 3
        ours.train(training), ref.train(training)
        x = torch.randn(6, 2, 6, 6, generator=gen, dtype=dt)
        t = torch.randint(0, 5, (6,), generator=gen)
        opt.zero_grad(), ref_opt.zero_grad()
        loss = loss_fn(ours(x), t)
        ref_loss = F.cross_entropy(ref(x), t, label_smoothing=0.1)
        assert_close(loss, ref_loss.detach(), n=CHAIN, cond=5 * (step + 1))  # five layers with weights, step after step
        if training:
            ours.backward(loss_fn.backward(), input_grad=False)
            ref_loss.backward()
            opt.step(), ref_opt.step()
        ref_state = ref.state_dict()
        for k, v in ours.state_dict().items(): assert_close(v, ref_state[k], n=CHAIN, cond=5 * (step + 1))


@pytest.mark.parity
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
    y_terms = F.conv2d(ax, w.abs(), stride=s, padding=p).max().item() + (
        conv.bias.value.abs().max().item() if bias else 0
    )
    gx_terms = ag.max().item() * w.abs().sum((0, 2, 3)).max().item()
    gw_terms = ax.max().item() * ag.sum((0, 2, 3)).max().item()
    assert_parity(y, y_ref, dtype, n=c_in * kk, scale=y_terms)                   # a sum over the receptive field
    assert_parity(conv.backward(g), gx_ref, dtype, n=c_out * kk, scale=gx_terms)  # over the outputs each input feeds
    for p_, r in zip(conv.parameters(), grads_ref):
        assert_parity(p_.grad, r, dtype, n=n * y.shape[2] * y.shape[3], scale=gw_terms)


@pytest.mark.parity
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
    # the reductions along the longest path, and the batch's
    chain = k * k * (1 + c1 + c2) + c2 * side * side + n * hw * hw
    assert_parity(loss, loss_ref.detach(), n=chain, cond=4)            # cond: four layers with weights
    assert_parity(gx, xr.grad, n=chain, cond=4)
    for p, r in zip(net.parameters(), ref.parameters()): assert_parity(p.grad, r.grad, n=chain, cond=4)


@pytest.mark.parity
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


@pytest.mark.parity
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


@pytest.mark.parametrize('k', [1, 3])
def test_an_in_place_edit_of_the_weight_between_forward_and_backward_is_detected(k):
    "forward keeps a reshaped copy of the weight for kernels larger than 1x1: the weight's own version is checked too"
    from minidl.testing import assert_unchanged, snapshot
    c = Conv2d(3, 4, k, dtype=torch.float64)
    y = c(torch.randn(2, 3, 6, 6, dtype=torch.float64))
    c.weight.value.add_(1.0)
    before = snapshot(c)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): c.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(c))


@pytest.mark.parametrize('what, value, msg', [
    ('weight', torch.randn(2, 4, 3, 3, dtype=torch.float64),
     "Conv2d's weight has shape (2, 4, 3, 3), expected (4, 2, 3, 3)"),
    ('weight', torch.randn(4, 2, 2, 2, dtype=torch.float64), 'was weight.value replaced by hand'),
    ('bias', torch.zeros(1, dtype=torch.float64), "Conv2d's bias has shape (1), expected (4)"),
    ('bias', torch.zeros(4), 'but its bias is torch.float32 on cpu (a parameter was cast on its own)'),
])
def test_conv_refuses_parameters_put_in_by_hand(what, value, msg):
    "As torch, and as Linear: a weight or bias of the wrong shape (or cast on its own) is refused, not broadcast."
    c = Conv2d(2, 4, 3, dtype=torch.float64); x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    c(x)  # the usual path is warm: the check must still run after the assignment
    getattr(c, what).value = value
    assert_clear_error(RuntimeError, msg, c, x)
