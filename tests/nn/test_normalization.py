"""BatchNorm1d/2d and LayerNorm against torch: batch and running statistics, empty batches, gradients, errors that
change nothing."""
import math

import pytest
import torch
from helpers import SETTINGS, dtypes, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import BatchNorm1d, BatchNorm2d, LayerNorm
from minidl.testing import assert_clear_error, assert_close, assert_parity, assert_unchanged, snapshot

F64 = torch.float64


@pytest.mark.parametrize('cls, shape', [(BatchNorm1d, (0, 3)), (BatchNorm1d, (0, 3, 4)), (BatchNorm2d, (0, 3, 2, 2))])
def test_batchnorm_empty_batch_like_torch(cls, shape):
    bn = cls(3, dtype=F64)
    ref = getattr(torch.nn, cls.__name__)(3, dtype=F64)
    bn(torch.zeros(shape, dtype=F64)); ref(torch.zeros(shape, dtype=F64))
    for k, v in ref.state_dict().items(): torch.testing.assert_close(bn.state_dict()[k], v, msg=k)


def test_batchnorm_one_value_per_channel_changes_nothing():
    bn = BatchNorm1d(3)
    before = snapshot(bn)
    assert_clear_error(ValueError, 'more than 1 value per channel', bn, torch.randn(1, 3))
    assert_unchanged(before, snapshot(bn))


def test_batchnorm_refuses_bad_inputs_clearly():
    bn = BatchNorm1d(3)
    assert_clear_error(ValueError, 'C=3 channels', bn, torch.randn(4, 5))
    assert_clear_error(TypeError, 'torch.float64 input', bn, torch.randn(4, 3, dtype=F64))
    assert_clear_error(ValueError, 'momentum', BatchNorm1d, 3, momentum=math.nan)
    assert_clear_error(ValueError, 'eps', BatchNorm1d, 3, eps=math.nan)


@pytest.mark.parity
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(['1d', '1d-L', '2d']), n=st.integers(1, 5), c=st.integers(1, 4), dtype=dtypes, seed=seeds,
       momentum=st.sampled_from([0.1, None, 0.7]), affine=st.booleans(), track=st.booleans(), steps=st.integers(1, 3),
       channels_last=st.booleans())
def test_batchnorm(kind, n, c, dtype, seed, momentum, affine, track, steps, channels_last):
    "A few training steps then one evaluation step: outputs, input and parameter gradients, buffers."
    gen = torch.Generator().manual_seed(seed)
    ours_cls, ref_cls, extra = {
        '1d': (BatchNorm1d, torch.nn.BatchNorm1d, ()),
        '1d-L': (BatchNorm1d, torch.nn.BatchNorm1d, (3,)),
        '2d': (BatchNorm2d, torch.nn.BatchNorm2d, (2, 3)),
    }[kind]
    kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    ours, ref = ours_cls(c, **kw), ref_cls(c, **kw)
    if affine:
        ours.weight.value.uniform_(0.5, 2, generator=gen)
        ours.bias.value.normal_(generator=gen)
        ref.load_state_dict(ours.state_dict())
    n = max(n, 2) if not extra else n  # (1, C) has one value per channel: refused in training (tested in the notebook)
    m = n * math.prod(extra)  # the statistics reduce over this many values per channel
    # float64: the policy; the backward's three terms cancel (their sum is orthogonal to 1 and x^): cond 4
    # float32: normalising a small batch
    tol = dict(n=m, cond=4) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)
    for step in range(steps + 1):
        training = step < steps
        ours.train(training), ref.train(training)
        x = torch.randn(n, c, *extra, generator=gen, dtype=dtype) * 3 + 1
        g = torch.randn(n, c, *extra, generator=gen, dtype=dtype)
        # e.g. after MaxPool2d
        if channels_last and x.dim() == 4: x, g = (t.to(memory_format=torch.channels_last) for t in (x, g))
        xr = x.clone().requires_grad_()
        y_ref = ref(xr)
        y_ref.backward(g)
        # the output (x - mean) gamma / sigma + beta cancels in x - mean: its terms are of the size of |x|
        # max|gamma| / sigma;
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
        assert_parity(ours(x), y_ref.detach(), dtype, **tol, **y_scale)
        assert_parity(
            ours.backward(g),
            xr.grad,
            dtype,
            **tol,
            **({'scale': gmax * gamma / sigma} if batch_stats and dtype == torch.float64 else {}),
        )
        ref_params = dict(ref.named_parameters())
        pscale = {'scale': m * gmax * 4} if dtype == torch.float64 else {}  # |x^| <= sqrt(m), typically a few
        for name, p in ours.named_parameters(): assert_parity(p.grad, ref_params[name].grad, dtype, **tol, **pscale)
        ref_state = ref.state_dict()
        assert list(ours.state_dict()) == list(ref_state)
        for k, v in ours.state_dict().items():
            if v.is_floating_point(): assert_parity(v, ref_state[k], dtype, **tol)
            else: assert torch.equal(v, ref_state[k])  # num_batches_tracked: a count


@pytest.mark.parity
@settings(**SETTINGS)
@given(
    lead=st.lists(st.integers(0, 4), min_size=0, max_size=2),
    norm=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    affine=st.booleans(),
    bias=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3, 1e-30]),
    scale=st.sampled_from([1.0, 1e3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_layernorm_matches_torch(lead, norm, affine, bias, eps, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    ours = LayerNorm(norm, eps=eps, elementwise_affine=affine, bias=bias, dtype=F64)
    ref = torch.nn.LayerNorm(norm, eps=eps, elementwise_affine=affine, bias=bias, dtype=F64)
    for p in ref.parameters():
        with torch.no_grad(): p.copy_(torch.randn(p.shape, dtype=F64, generator=gen))
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(*lead, *norm, dtype=F64, generator=gen) * scale + 1
    g = torch.randn(x.shape, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    yr = ref(xr); yr.backward(g)
    # x - mean carries a rounding error of a few ulps of |x|, which the normalisation multiplies by s =
    # 1/sqrt(var + eps):
    # cond = |x| s, the amplification of that error in xhat = (x - mean) s; the terms downstream are of the size of
    # |xhat| <= sqrt(F) times what multiplies xhat (|g|, |gamma|), which the backward's three terms cancel to
    # a small sum
    top = lambda t: float(t.detach().abs().max()) if t.numel() else 0.0
    F = math.prod(norm)
    s_max = float((x.reshape(-1, max(1, F)).var(1, correction=0) + eps).rsqrt().max()) if x.numel() else 0.0
    cond = max(1.0, top(x) * s_max)
    w, b = (top(ref.weight) if affine else 1.0), (top(ref.bias) if affine and bias else 0.0)
    # the mean and the variance: F terms
    assert_close(ours(x), yr, n=F, cond=cond, scale=top(x) * s_max * w + b)
    # three terms, each <= this
    assert_close(ours.backward(g), xr.grad, n=F, cond=cond, scale=s_max * top(g) * w * (2 + F))
    for (name, p), (rname, rp) in zip(ours.named_parameters(), ref.named_parameters()):
        assert name == rname
        # sums over the rows
        assert_close(p.grad, rp.grad, n=max(1, x.numel() // F), cond=cond, scale=top(g) * math.sqrt(F))


@pytest.mark.parity
def test_layernorm_errors_change_nothing():
    ln = LayerNorm(4, dtype=F64)
    ln(torch.randn(3, 4, dtype=F64)); ln.backward(torch.ones(3, 4, dtype=F64))
    snap = snapshot(ln)
    for bad, text in [
        (torch.ones(3, 5, dtype=F64), r'input of shape \(\*, 4\)'),
        (torch.ones(3, 4), 'float64 parameters'),
        (torch.ones(3, 4, dtype=torch.long), 'floating-point'),
    ]:
        with pytest.raises((ValueError, TypeError), match=text): ln(bad)
        assert_unchanged(snap, snapshot(ln))
    ln(torch.randn(3, 4, dtype=F64))
    with pytest.raises(ValueError, match=r'gradient of shape \(3, 4\)'): ln.backward(torch.ones(2, 4, dtype=F64))
    assert_unchanged(snap, snapshot(ln))
    ln.weight.grad = None
    with pytest.raises(RuntimeError, match='weight.grad is NoneType'): ln.backward(torch.ones(3, 4, dtype=F64))


@pytest.mark.parity
@pytest.mark.parametrize('norm', [8, (2, 4)])
def test_layernorm_gradients_accumulate_like_torch(norm):
    ("Two backward passes add up in `.grad` (the one-dimensional case adds G^T 1 with addmv_), also into a "
     "strided `.grad`.")
    gen = torch.Generator().manual_seed(0)
    ours, ref = LayerNorm(norm, dtype=F64), torch.nn.LayerNorm(norm, dtype=F64)
    for p in ref.parameters():
        with torch.no_grad(): p.copy_(torch.randn(p.shape, dtype=F64, generator=gen))
    ours.load_state_dict(ref.state_dict())
    if norm == 8:  # a gradient buffer that is a strided view: accumulated in place all the same
        ours.weight.grad = torch.zeros(16, dtype=F64)[::2]
    shape, F, g_sum = ((6, 8) if norm == 8 else (6, 2, 4)), 8, 0.0
    top = lambda t: float(t.detach().abs().max())
    for _ in range(2):
        x, g = torch.randn(shape, dtype=F64, generator=gen) * 3 + 1, torch.randn(shape, dtype=F64, generator=gen)
        xr = x.clone().requires_grad_()
        ref(xr).backward(g)
        s_max = float((x.reshape(-1, F).var(1, correction=0) + ours.eps).rsqrt().max())
        cond, w = max(1.0, top(x) * s_max), top(ref.weight)  # as in test_layernorm_matches_torch
        assert_close(ours(x), ref(x), n=F, cond=cond, scale=top(x) * s_max * w + top(ref.bias))
        assert_close(ours.backward(g), xr.grad, n=F, cond=cond, scale=s_max * top(g) * w * (2 + F))
        g_sum += float(g.reshape(-1, F).abs().sum(0).max())  # the row sums of both passes, |xhat| <= sqrt(F)
    for p, rp in zip(ours.parameters(), ref.parameters()):
        assert_close(p.grad, rp.grad, n=2 * 6, cond=cond, scale=g_sum * math.sqrt(F))


@pytest.mark.parametrize('eps', [0, 0.0, -1e-5, math.inf, math.nan, True, '1e-5'])
def test_layernorm_refuses_an_eps_that_is_not_positive_and_finite(eps):
    "eps = 0 divides 0 by 0 on a constant row, where rounding can leave finite nonsense instead of torch's NaN."
    with pytest.raises(ValueError, match=r'LayerNorm expects eps to be a finite number > 0 .*got'):
        LayerNorm(4, eps=eps)


def test_layernorm_with_a_parameter_cast_on_its_own_is_refused_before_anything():
    ln = LayerNorm(6)
    ln.bias.to(F64)  # the bias alone
    x = torch.randn(4, 6)
    with pytest.raises(RuntimeError, match=r"weight is torch.float32 on cpu but its bias is torch.float64 on cpu "
                                           r"\(a parameter was cast on its own\)"):
        ln(x)
    ln.to(F64)
    assert ln(x.double()).dtype == F64


@pytest.mark.parametrize('cls, shape', [(BatchNorm1d, (4, 3)), (BatchNorm1d, (4, 3, 2)), (BatchNorm2d, (4, 3, 2, 2))])
@pytest.mark.parametrize('what, value, msg', [
    ('weight', torch.ones(4, dtype=torch.float64), 'weight.value has shape (4), expected a tensor of shape (3)'),
    ('running_mean', torch.zeros(4, dtype=torch.float64), 'running_mean has shape (4), expected a tensor of shape (3)'),
    ('running_var', torch.ones(3), 'but its running_var is torch.float32 on cpu'),
])
@pytest.mark.parametrize('training', [True, False])
def test_batchnorm_checks_state_put_in_by_hand_before_updating(cls, shape, what, value, msg, training):
    bn = cls(3, dtype=torch.float64).train(training); x = torch.randn(shape, dtype=torch.float64)
    bn(x)  # warm: the check must still run after the assignment
    if what == 'weight': bn.weight.value = value
    else: setattr(bn, what, value)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    assert_clear_error(RuntimeError, msg, bn, x)
    for k, v in bn.state_dict().items(): assert torch.equal(v, before[k]), k  # nothing was updated


def test_running_statistics_follow_track_running_stats_as_read_at_each_call():
    ("torch reads the flag at every forward: set to False on a trained layer, the statistics and the count stay, and "
     "eval mode still uses them; buffers set to None by hand still count the batches.")
    gen = torch.Generator().manual_seed(0)
    ours, ref = BatchNorm1d(3, dtype=torch.float64), torch.nn.BatchNorm1d(3, dtype=torch.float64)
    for m in (ours, ref): m.track_running_stats = False
    for _ in range(3):
        x = torch.randn(8, 3, generator=gen, dtype=torch.float64) + 2
        ours(x); ref(x)
    for k, v in ref.state_dict().items(): torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)
    x = torch.full((2, 3), 5.0, dtype=torch.float64)
    ours.eval(); ref.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    ours, ref = BatchNorm1d(3, dtype=torch.float64), torch.nn.BatchNorm1d(3, dtype=torch.float64)
    for m in (ours, ref): m.running_mean = m.running_var = None
    for _ in range(2):
        x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
        ours(x); ref(x)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 2


@pytest.mark.parametrize('momentum', [1.0, None, 0.5])
def test_an_infinite_batch_statistic_stays_infinite_in_the_running_statistics(momentum):
    "(1 - a) old + a new, as torch's kernel: a lerp gives NaN for an infinite new value once a >= 1/2."
    ours, ref = BatchNorm1d(3, momentum=momentum, dtype=torch.float64), torch.nn.BatchNorm1d(3, momentum=momentum,
                                                                                           dtype=torch.float64)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 0] = float('inf')
    x[:, 1] *= 1e300  # its variance overflows
    ours(x); ref(x)
    for k in ('running_mean', 'running_var'):
        torch.testing.assert_close(getattr(ours, k), getattr(ref, k), rtol=1e-12, atol=0, equal_nan=True)
        assert getattr(ours, k).isnan().tolist() == getattr(ref, k).isnan().tolist()


@pytest.mark.parametrize('bad', ['expanded', 'requires_grad', 'inference'])
def test_a_buffer_that_cannot_be_updated_in_place_is_refused_before_any_is_updated(bad):
    bn = BatchNorm1d(3, dtype=torch.float64)
    if bad == 'expanded': bn.running_var = torch.ones(1, dtype=torch.float64).expand(3)
    elif bad == 'requires_grad': bn.running_var = torch.ones(3, dtype=torch.float64, requires_grad=True)
    else:
        with torch.inference_mode(): bn.running_var = torch.ones(3, dtype=torch.float64)
    before = snapshot(bn)
    with pytest.raises(RuntimeError, match="BatchNorm1d's running_var .* nothing was updated"):
        bn(torch.randn(8, 3, dtype=torch.float64))
    assert_unchanged(before, snapshot(bn))


def test_a_state_dict_without_num_batches_tracked_loads_where_torch_loads_it():
    "torch fills the count in for a state dict with no version recorded (or one before 2), and refuses it otherwise."
    ref = torch.nn.BatchNorm1d(3)
    ref(torch.randn(8, 3))
    plain = {k: v for k, v in ref.state_dict().items() if k != 'num_batches_tracked'}  # a dict of its own: no version
    versioned = ref.state_dict(); del versioned['num_batches_tracked']  # torch's, version 2 recorded
    for sd, loads in ((plain, True), (versioned, False)):
        ours, theirs = BatchNorm1d(3), torch.nn.BatchNorm1d(3)
        ours.num_batches_tracked.fill_(7); theirs.num_batches_tracked.fill_(7)
        if loads:
            assert tuple(theirs.load_state_dict(sd)) == tuple(ours.load_state_dict(sd)) == ([], [])
            assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 7
            assert torch.equal(ours.running_mean, ref.running_mean)
        else:
            with pytest.raises(RuntimeError, match='num_batches_tracked'): theirs.load_state_dict(sd)
            before = snapshot(ours)
            with pytest.raises(RuntimeError, match='missing keys: num_batches_tracked'): ours.load_state_dict(sd)
            assert_unchanged(before, snapshot(ours))
