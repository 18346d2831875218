"""Property-based parity tests for the "going further" layers (issue 8) against torch.nn + torch.autograd (the oracle):
Dropout, Softmax, LogSoftmax, LossCrossEntropy, BatchNorm1d/2d, LeakyReLU, GELU and minidl.nn.init, over random shapes,
in float32 (loose) and float64 (tight). The notebooks hold the worked examples and the error cases; this file sweeps."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings, strategies as st

import minidl
from minidl.testing import assert_close
import minidl.nn.init as minit
from minidl import (BatchNorm1d, BatchNorm2d, Dropout, GELU, LeakyReLU, Linear, LogSoftmax, LossCrossEntropy, Parameter,
                    ReLU, Sequential, Softmax)

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

F32 = dict(rtol=1e-4, atol=1e-5)  # float32 runs check the dtype path (loose); exactness is claimed in float64
dtypes = st.sampled_from([torch.float32, torch.float64])
seeds = st.integers(0, 2**31 - 1)
small = settings(max_examples=40, deadline=None)


def autograd(fn, *tensors, grad=None):
    "Value and input gradients of `fn(*tensors)` with torch.autograd."
    leaves = [t.clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


def close(a, b, dtype, n=1, cond=1.0, scale=None, **f32):
    "float64: minidl.testing's policy (a chain of n roundings, condition cond); float32: a loose bound (`f32` overrides)."
    if dtype == torch.float64: assert_close(a, b, n=n, cond=cond, scale=scale)
    else: torch.testing.assert_close(a, b, **{**F32, **f32})


@small
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1.0, 30.0, 1e4]), log=st.booleans(), data=st.data())
def test_softmax(shape, dtype, seed, scale, log, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype) * scale
    g = torch.randn(*shape, generator=gen, dtype=dtype)
    ours, ref = (LogSoftmax(dim), torch.log_softmax) if log else (Softmax(dim), torch.softmax)
    y_ref, (gx_ref,) = autograd(lambda t: ref(t, dim), x, grad=g)
    k = shape[dim]  # the softmax reduces over this many entries
    close(ours(x), y_ref, dtype, n=k, atol=1e-4 * (scale if log else 1))  # float32: log-probabilities of size ~scale
    # y (g - sum g y) cancels where the softmax saturates: its terms are of the size of g (k of them for LogSoftmax)
    close(ours.backward(g), gx_ref, dtype, n=k, scale=k * g.abs().max().item())


@small
@given(n=st.integers(1, 10), c=st.integers(1, 8), dtype=dtypes, seed=seeds, probs=st.booleans(), weighted=st.booleans(),
       smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]), scale=st.sampled_from([1.0, 10.0, 1e4]))
@example(n=5, c=1, dtype=torch.float64, seed=2**31 - 1, probs=False, weighted=True, smoothing=0.1, scale=1.0)  # one class: a zero gradient
def test_cross_entropy(n, c, dtype, seed, probs, weighted, smoothing, scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=dtype) * scale
    t = torch.rand(n, c, generator=gen, dtype=dtype) if probs else torch.randint(0, c, (n,), generator=gen)
    w = torch.rand(c, generator=gen, dtype=dtype) + 0.1 if weighted else None
    loss_ref, (gx_ref,) = autograd(lambda z: F.cross_entropy(z, t, weight=w, label_smoothing=smoothing), x)
    ce = LossCrossEntropy(weight=w, label_smoothing=smoothing)
    loss = ce(x, t)
    assert loss.shape == () and loss.dtype == dtype and torch.isfinite(loss)
    close(loss, loss_ref, dtype, n=n + c, atol=1e-4 * max(1.0, scale))  # a logsumexp over c classes, a mean over n
    # softmax over c classes; (p - y) w_t / sum w cancels (to exactly 0 for one class): compare on its terms' scale
    terms = (w.max() / w.min()).item() / n if weighted else 1 / n
    close(ce.backward(), gx_ref, dtype, n=c, scale=terms)


@small
@given(shape=st.lists(st.integers(1, 8), min_size=1, max_size=3), dtype=dtypes, seed=seeds,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), training=st.booleans())
def test_dropout(shape, dtype, seed, p, training):
    "Same seed, same mask as torch's dropout: outputs and gradients are bit-for-bit equal."
    x = torch.randn(*shape, dtype=dtype)
    g = torch.randn(*shape, dtype=dtype)
    torch.manual_seed(seed)
    y_ref, (gx_ref,) = autograd(lambda t: F.dropout(t, p, training=training), x, grad=g)
    torch.manual_seed(seed)
    d = Dropout(p).train(training)
    assert torch.equal(d(x), y_ref) and torch.equal(d.backward(g), gx_ref)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(['1d', '1d-L', '2d']), n=st.integers(1, 5), c=st.integers(1, 4), dtype=dtypes, seed=seeds,
       momentum=st.sampled_from([0.1, None, 0.7]), affine=st.booleans(), track=st.booleans(), steps=st.integers(1, 3),
       channels_last=st.booleans())
def test_batchnorm(kind, n, c, dtype, seed, momentum, affine, track, steps, channels_last):
    "A few training steps then one evaluation step: outputs, input and parameter gradients, buffers."
    gen = torch.Generator().manual_seed(seed)
    ours_cls, ref_cls, extra = {'1d': (BatchNorm1d, torch.nn.BatchNorm1d, ()), '1d-L': (BatchNorm1d, torch.nn.BatchNorm1d, (3,)),
                                '2d': (BatchNorm2d, torch.nn.BatchNorm2d, (2, 3))}[kind]
    kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    ours, ref = ours_cls(c, **kw), ref_cls(c, **kw)
    if affine:
        ours.weight.value.uniform_(0.5, 2, generator=gen)
        ours.bias.value.normal_(generator=gen)
        ref.load_state_dict(ours.state_dict())
    n = max(n, 2) if not extra else n  # (1, C) has one value per channel: refused in training (tested in the notebook)
    m = n * math.prod(extra)  # the statistics reduce over this many values per channel
    # float64: the policy; the backward's three terms cancel (their sum is orthogonal to 1 and x^): cond 4
    tol = dict(n=m, cond=4) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)  # float32: normalising a small batch
    for step in range(steps + 1):
        training = step < steps
        ours.train(training), ref.train(training)
        x = torch.randn(n, c, *extra, generator=gen, dtype=dtype) * 3 + 1
        g = torch.randn(n, c, *extra, generator=gen, dtype=dtype)
        if channels_last and x.dim() == 4: x, g = (t.to(memory_format=torch.channels_last) for t in (x, g))  # e.g. after MaxPool2d
        xr = x.clone().requires_grad_()
        y_ref = ref(xr)
        y_ref.backward(g)
        # the output (x - mean) gamma / sigma + beta cancels in x - mean: its terms are of the size of |x| max|gamma| / sigma;
        # the input gradient (g - mean g - x^ mean(g x^)) gamma / sigma cancels (to exactly 0 for two samples): its
        # terms are of the size of |g| max|gamma| / sigma; the parameters' gradients sum m terms of the size of |g| |x^|
        dims = [0] + list(range(2, x.dim()))
        batch_stats = training or not track  # without running statistics, evaluation normalises with the batch's too
        var = x.var(dims, unbiased=False) if batch_stats else ours.running_var
        sigma = (var + ours.eps).sqrt().min().item()
        gamma = ours.weight.value.abs().max().item() if affine else 1.0
        beta = ours.bias.value.abs().max().item() if affine else 0.0
        gmax = g.abs().max().item()
        mean = 0.0 if batch_stats else ours.running_mean.abs().max().item()
        y_scale = {'scale': (x.abs().max().item() + mean) * gamma / sigma + beta} if dtype == torch.float64 else {}
        close(ours(x), y_ref.detach(), dtype, **tol, **y_scale)
        close(ours.backward(g), xr.grad, dtype, **tol, **({'scale': gmax * gamma / sigma} if batch_stats and dtype == torch.float64 else {}))
        ref_params = dict(ref.named_parameters())
        pscale = {'scale': m * gmax * 4} if dtype == torch.float64 else {}  # |x^| <= sqrt(m), typically a few
        for name, p in ours.named_parameters(): close(p.grad, ref_params[name].grad, dtype, **tol, **pscale)
        ref_state = ref.state_dict()
        assert list(ours.state_dict()) == list(ref_state)
        for k, v in ours.state_dict().items():
            if v.is_floating_point(): close(v, ref_state[k], dtype, **tol)
            else: assert torch.equal(v, ref_state[k])  # num_batches_tracked: a count


@small
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), dtype=dtypes, seed=seeds, scale=st.floats(0.1, 20.0),
       act=st.sampled_from(['leaky', 'leaky-0.3', 'gelu', 'gelu-tanh']))
def test_leaky_relu_gelu(shape, dtype, seed, scale, act):
    ours, ref = {'leaky': (LeakyReLU(), F.leaky_relu), 'leaky-0.3': (LeakyReLU(0.3), lambda t: F.leaky_relu(t, 0.3)),
                 'gelu': (GELU(), F.gelu), 'gelu-tanh': (GELU('tanh'), lambda t: F.gelu(t, approximate='tanh'))}[act]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype) * scale
    g = torch.randn(*shape, generator=gen, dtype=dtype)
    y_ref, (gx_ref,) = autograd(ref, x, grad=g)
    close(ours(x), y_ref, dtype, n=4)                # erf or tanh and three more roundings per entry
    close(ours.backward(g), gx_ref, dtype, n=8, scale=g.abs().max().item())  # the derivative's terms cancel in the tails


@small
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), dtype=dtypes, seed=seeds,
       fn=st.sampled_from(['uniform_', 'normal_', 'xavier_uniform_', 'xavier_normal_', 'kaiming_uniform_', 'kaiming_normal_']),
       mode=st.sampled_from(['fan_in', 'fan_out']), nonlinearity=st.sampled_from(['relu', 'leaky_relu', 'tanh', 'linear']),
       gain=st.floats(0.1, 3.0))
def test_init(shape, dtype, seed, fn, mode, nonlinearity, gain):
    "With equal generators, minidl.nn.init draws exactly what torch.nn.init draws."
    kw = {'uniform_': dict(a=-gain, b=gain), 'normal_': dict(mean=gain, std=gain), 'xavier_uniform_': dict(gain=gain),
          'xavier_normal_': dict(gain=gain)}.get(fn, dict(a=gain, mode=mode, nonlinearity=nonlinearity))
    p, t = Parameter(torch.empty(shape, dtype=dtype)), torch.empty(shape, dtype=dtype)
    assert getattr(minit, fn)(p, generator=torch.Generator().manual_seed(seed), **kw) is p
    getattr(torch.nn.init, fn)(t, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(p.value, t)
    assert minit.calculate_gain(nonlinearity, gain) == torch.nn.init.calculate_gain(nonlinearity, gain)


def test_sequential_propagates_modes():
    "train()/eval() reach every layer of a nested Sequential; Dropout and BatchNorm follow them."
    model = Sequential(Linear(4, 8), BatchNorm1d(8), ReLU(), Sequential(Dropout(0.5), Linear(8, 3)), LogSoftmax())
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    x = torch.randn(5, 4)
    assert torch.equal(model(x), model(x))  # deterministic in eval
    model.train()
    assert all(m.training for m in model.modules())
    assert model[1].num_batches_tracked == 0
    model(x)
    assert model[1].num_batches_tracked == 1


def test_exports():
    import sys
    assert minidl.nn.init is sys.modules['minidl.nn.init']
    for name in ['LossCrossEntropy', 'CrossEntropyLoss', 'Dropout', 'BatchNorm1d', 'BatchNorm2d', 'Softmax', 'LogSoftmax',
                 'LeakyReLU', 'GELU', 'kaiming_normal_', 'calculate_gain']:
        assert name in minidl.__all__ and hasattr(minidl, name), name
    assert minidl.CrossEntropyLoss is minidl.LossCrossEntropy
    assert math.isclose(minidl.calculate_gain('relu'), math.sqrt(2))


def test_hot_path_reads_nothing_back():
    """Forward and backward run on the meta device (shapes only, no data): any .item(), bool(tensor), float(tensor) or
    value-dependent branch would raise there, so this shows the hot path never synchronises with the device."""
    meta = torch.device('meta')
    x, g = torch.randn(8, 6, device=meta), torch.randn(8, 6, device=meta)
    for m in [Dropout(0.3), Dropout(0.3).eval(), Softmax(), LogSoftmax(0), LeakyReLU(), GELU(), GELU('tanh'),
              BatchNorm1d(6, device=meta), BatchNorm1d(6, momentum=None, device=meta), BatchNorm1d(6, device=meta).eval(),
              BatchNorm1d(6, affine=False, track_running_stats=False, device=meta)]:
        assert m(x).device == meta and m.backward(g).shape == x.shape
    x4 = torch.randn(2, 6, 3, 3, device=meta)
    bn = BatchNorm2d(6, momentum=None, device=meta)
    assert bn(x4).device == meta and bn.backward(x4).shape == x4.shape
    t, p = torch.randint(0, 6, (8,), device=meta), torch.rand(8, 6, device=meta)
    for kw in [{}, dict(label_smoothing=0.1), dict(weight=torch.ones(6, device=meta), label_smoothing=0.2)]:
        for target in (t, p):
            ce = LossCrossEntropy(**kw)
            assert ce(x, target).shape == () and ce.backward().shape == x.shape
    w = Parameter(torch.empty(4, 3, device=meta))
    for f in (minit.kaiming_uniform_, minit.kaiming_normal_, minit.xavier_uniform_, minit.xavier_normal_): f(w)


def test_trains_multiclass_with_training_loop():
    "minidl.training.train with BatchNorm1d, GELU, Dropout, LossCrossEntropy and Kaiming init learns a 3-class problem."
    from minidl import SGD, train
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=gen)
    y = (torch.atan2(x[:, 1], x[:, 0]) + math.pi).mul(3 / (2 * math.pi)).long().clamp(max=2)  # three angular sectors
    lin1, lin2 = Linear(2, 32, generator=gen), Linear(32, 3, generator=gen)
    minit.kaiming_normal_(lin1.weight, nonlinearity='relu', generator=gen)
    model = Sequential(lin1, BatchNorm1d(32), GELU(), Dropout(0.1, generator=gen), lin2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids BLAS threads spinning on a shared machine
    try:
        hist = train(model, LossCrossEntropy(label_smoothing=0.05), SGD(model.parameters(), lr=0.5), x[:500], y[:500],
                     x[500:], y[500:], epochs=30, batch_size=50, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert hist.train_loss[-1] < hist.train_loss[0] and hist.test_accuracy[-1] > 0.9, hist
    assert not model.training or all(m.training for m in model.modules())
    assert model[1].num_batches_tracked == 30 * 10


def test_small_cnn_steps_match_torch():
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear,
    BatchNorm1d(momentum=None) and LossCrossEntropy: three SGD steps and an evaluation equal torch's in float64."""
    from minidl import Conv2d, Flatten, MaxPool2d, SGD
    nn = torch.nn
    gen = torch.Generator().manual_seed(0)
    dt = torch.float64
    ours = Sequential(Conv2d(2, 4, 3, padding=1, dtype=dt, generator=gen), BatchNorm2d(4, dtype=dt), ReLU(), MaxPool2d(2),
                      Flatten(), Linear(4 * 3 * 3, 5, dtype=dt, generator=gen), BatchNorm1d(5, momentum=None, dtype=dt))
    ref = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, dtype=dt), nn.BatchNorm2d(4, dtype=dt), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 5, dtype=dt), nn.BatchNorm1d(5, momentum=None, dtype=dt))
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
