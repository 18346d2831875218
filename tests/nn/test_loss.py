"""Losses (MSE, BCE, cross-entropy) against torch: reductions, class indices and probabilities, weights, label
smoothing, ignored targets, empty batches, and the targets they refuse."""
import math

import pytest
import torch
import torch.nn.functional as F
import torch.nn.functional as TF
from helpers import SMALL_PROGRAM, dtypes, seeds, small
from hypothesis import example, given
from hypothesis import strategies as st

import minidl as M
import minidl.nn as nn
from minidl import BCELoss, CrossEntropyLoss, LossBCE, LossCrossEntropy, LossMSE, MSELoss
from minidl.testing import assert_clear_error, assert_close, assert_parity, autograd_grads

F64 = torch.float64


@pytest.mark.parametrize('loss, fn', [(LossMSE, TF.mse_loss), (LossBCE, TF.binary_cross_entropy)])
@pytest.mark.parametrize('shape', [(0, 1), (), (3, 1), (2, 3)])
def test_losses_edges_equal_torch(loss, fn, shape):
    torch.manual_seed(0)
    p = torch.rand(shape, dtype=F64) * 0.8 + 0.1
    if p.dim() == 2 and p.shape[0] > 1: p = p.t().contiguous().t()
    t = torch.rand(shape, dtype=F64).round()
    pt = p.clone().requires_grad_()
    lt = fn(pt, t)
    if p.numel(): lt.backward()
    l = loss()
    out = l(p, t)
    torch.testing.assert_close(out, lt.detach(), equal_nan=True)
    g = l.backward()
    assert g.shape == p.shape
    if p.numel(): torch.testing.assert_close(g, pt.grad)


@pytest.mark.parametrize('loss', [LossMSE, LossBCE])
def test_losses_refuse_bad_targets(loss):
    l = loss()
    p = torch.full((3, 1), 0.5)
    assert_clear_error(ValueError, 'same shape', l, p, torch.ones(3))
    assert_clear_error(TypeError, 'floating-point target', l, p, torch.ones(3, 1, dtype=torch.long))
    assert_clear_error(TypeError, 'same dtype', l, p, torch.ones(3, 1, dtype=F64))
    assert_clear_error(TypeError, 'torch.Tensor', l, p, 1.0)


@pytest.mark.parametrize('loss, bad', [
    (LossBCE, lambda: (torch.full((3, 1), 1.5), torch.ones(3, 1))),
    (LossCrossEntropy, lambda: (torch.zeros(2, 3), torch.tensor([1, 7]))),
    (LossMSE, lambda: (torch.zeros(2, 3), torch.zeros(3, 2))),
])
def test_failed_loss_forward_then_backward_raises(loss, bad):
    l = loss()
    good = (
        (torch.full((2, 3), 0.5), torch.ones(2, 3))
        if loss is not LossCrossEntropy
        else (torch.zeros(2, 3), torch.tensor([1, 2]))
    )
    l(*good)
    with pytest.raises((ValueError, TypeError, IndexError)): l(*bad())
    assert_clear_error(RuntimeError, 'last forward failed', l.backward)


def test_bce_target_modified_in_place_is_detected():
    l = LossBCE()
    t = torch.ones(3, 1)
    l(torch.full((3, 1), 0.5), t)
    t.zero_()
    assert_clear_error(RuntimeError, 'modified by an inplace operation', l.backward)


def test_bce_refuses_out_of_range_and_nan():
    l = LossBCE()
    assert_clear_error(ValueError, 'predictions in [0, 1]', l, torch.full((3, 1), 1.5), torch.ones(3, 1))
    assert_clear_error(ValueError, 'predictions in [0, 1]', l, torch.full((3, 1), math.nan), torch.ones(3, 1))
    assert_clear_error(ValueError, 'targets in [0, 1]', l, torch.full((3, 1), 0.5), torch.full((3, 1), 2.0))


# -100 is ignore_index
@pytest.mark.parametrize('target', [torch.tensor([0, 5]), torch.tensor([0, -1]), torch.tensor([0, -99])])
def test_cross_entropy_refuses_bad_class_indices(target):
    assert_clear_error(IndexError, 'class indices in [0, 3)', LossCrossEntropy(), torch.zeros(2, 3), target)


@pytest.mark.parametrize('target', [torch.tensor([0, 1], dtype=torch.int32), torch.tensor([True, False])])
def test_cross_entropy_refuses_non_int64_indices(target):
    assert_clear_error(TypeError, '.long()', LossCrossEntropy(), torch.zeros(2, 3), target)


@pytest.mark.parametrize('weight, smoothing', [(None, 0.0), (torch.tensor([0.2, 1.0, 3.0], dtype=F64), 0.1)])
def test_cross_entropy_empty_batch_like_torch(weight, smoothing):
    x, t = torch.zeros(0, 3, dtype=F64), torch.zeros(0, dtype=torch.long)
    out = LossCrossEntropy(weight, label_smoothing=smoothing)(x, t)
    ref = TF.cross_entropy(x, t, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(out, ref, equal_nan=True)


@pytest.mark.parametrize('args, exc, contains', [
    (('float64',), TypeError, 'torch.float64'),
    (('nodevice',), ValueError, "invalid device 'nodevice'"), ((torch.int64,), TypeError, 'floating-point'),
    ((torch.float64,), None, None),  # torch.nn.Module.to's positional dtype
])
def test_cross_entropy_to_parses_like_module_to(args, exc, contains):
    ce = LossCrossEntropy(weight=torch.ones(3))
    if exc is None:
        assert ce.to(*args) is ce and ce.weight.dtype == torch.float64
    else:
        assert_clear_error(exc, contains, ce.to, *args)
        assert ce.weight.dtype == torch.float32


def test_cross_entropy_hyper_parameters():
    assert_clear_error(ValueError, 'label_smoothing in [0, 1]', LossCrossEntropy, label_smoothing=math.nan)
    assert_clear_error(ValueError, 'label_smoothing in [0, 1]', LossCrossEntropy, label_smoothing=True)
    assert_clear_error(TypeError, 'floating-point tensor', LossCrossEntropy, weight=torch.ones(3, dtype=torch.long))
    assert_clear_error(
        TypeError,
        'torch.float32 weight',
        LossCrossEntropy(weight=torch.ones(3)),
        torch.zeros(2, 3, dtype=F64),
        torch.tensor([0, 1]),
    )


D = torch.float64


@pytest.mark.parametrize('loss_m,loss_t', [(M.LossMSE, torch.nn.MSELoss), (M.LossBCE, torch.nn.BCELoss)])
@pytest.mark.parametrize('shape', [(0,), (0, 1), (2, 0)])
def test_zero_size_losses_nan_mean_like_torch(loss_m, loss_t, shape):
    p, y = torch.rand(*shape, dtype=D), torch.rand(*shape, dtype=D)
    lm = loss_m(); l = lm(p, y); d = lm.backward()
    pt = p.clone().requires_grad_(); lt = loss_t()(pt, y); lt.backward()
    assert torch.isnan(l) and torch.isnan(lt) and d.shape == pt.grad.shape == shape


def test_zero_size_cross_entropy_like_torch():
    for ls in (0.0, 0.1):
        p, y = torch.randn(0, 3, dtype=D), torch.zeros(0, dtype=torch.long)
        lm = M.CrossEntropyLoss(label_smoothing=ls); l = lm(p, y); d = lm.backward()
        pt = p.clone().requires_grad_(); lt = torch.nn.CrossEntropyLoss(label_smoothing=ls)(pt, y); lt.backward()
        assert torch.isnan(l) and torch.isnan(lt) and d.shape == pt.grad.shape


def loss_pair(ours, ref_fn, p, t, reduction):
    "Our loss and gradient against torch's, for a random upstream gradient (chain rule through the reduction)."
    pr = p.clone().requires_grad_()
    ref = ref_fn(pr, t)
    g = torch.randn_like(ref)
    ref.backward(g)
    out = ours(p, t)
    grad = ours.backward(g) if reduction == 'none' else ours.backward() * g
    assert_close(out, ref, **SMALL_PROGRAM); assert_close(grad, pr.grad, **SMALL_PROGRAM)
    if reduction != 'none':  # a 0-dim upstream gradient is the chain rule's factor
        ours(p, t); assert_close(ours.backward(g), pr.grad, **SMALL_PROGRAM)


@pytest.mark.parity
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(6, 3), (4,), (2, 3, 5)])
def test_mse_and_bce_reductions(reduction, shape):
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(shape, generator=gen, dtype=F64) * 0.98 + 0.01
    t = torch.rand(shape, generator=gen, dtype=F64)
    loss_pair(MSELoss(reduction=reduction), lambda a, b: F.mse_loss(a, b, reduction=reduction), p, t, reduction)
    loss_pair(
        BCELoss(reduction=reduction),
        lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction),
        p,
        t,
        reduction,
    )
    loss_pair(nn.BCELoss(reduction=reduction), torch.nn.BCELoss(reduction=reduction), p, t, reduction)


@pytest.mark.parity
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(7, 4), (3, 4, 5), (2, 4, 3, 2), (4,)])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('eps', [0.0, 0.2])
@pytest.mark.parametrize('ignore', [None, 1])
def test_cross_entropy_indices(reduction, shape, weighted, eps, ignore):
    gen = torch.Generator().manual_seed(2)
    C = shape[1] if len(shape) > 1 else shape[0]
    x = torch.randn(shape, generator=gen, dtype=F64) * 2
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, C, tshape, generator=gen)
    if len(shape) > 1: t.view(-1)[::3] = -100 if ignore is None else ignore  # ignored: those targets add nothing
    w = torch.rand(C, generator=gen, dtype=F64) + 0.1 if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction) | (
        {} if ignore is None else dict(ignore_index=ignore)
    )
    loss_pair(CrossEntropyLoss(**kw), lambda a, b: F.cross_entropy(a, b, **kw), x, t, reduction)


@pytest.mark.parity
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(7, 4), (2, 4, 3, 2)])
@pytest.mark.parametrize('weighted', [False, True])
def test_cross_entropy_probabilities(reduction, shape, weighted):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=F64)
    p = torch.softmax(torch.randn(shape, generator=gen, dtype=F64), 1)
    w = torch.rand(shape[1], generator=gen, dtype=F64) + 0.1 if weighted else None
    kw = dict(weight=w, label_smoothing=0.1, reduction=reduction)
    loss_pair(CrossEntropyLoss(**kw), lambda a, b: F.cross_entropy(a, b, **kw), x, p, reduction)


@pytest.mark.parity
def test_cross_entropy_every_target_ignored():
    x, t = torch.randn(3, 4, dtype=F64), torch.full((3,), -100)
    xr = x.clone().requires_grad_(); ref = F.cross_entropy(xr, t); ref.backward()
    ce = CrossEntropyLoss()
    assert ce(x, t).isnan() and ref.isnan()  # the mean of nothing
    assert_close(ce.backward(), xr.grad, **SMALL_PROGRAM)            # zeros, as torch


@pytest.mark.parity
def test_reduction_errors():
    for L in (MSELoss, BCELoss, CrossEntropyLoss):
        with pytest.raises(ValueError, match="reduction to be 'mean', 'sum' or 'none', got 'avg'"): L(reduction='avg')
    m = MSELoss(reduction='none'); m(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"backward expects grad_output, the gradient of the per-element "
                                        r"losses \(shape \(2, 3\)\)"):
        m.backward()
    with pytest.raises(ValueError, match='gradient of shape \\(2, 3\\)'): m.backward(torch.ones(3))
    m = MSELoss(reduction='sum'); m(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match='gradient of shape \\(\\)'): m.backward(torch.ones(2, 3))
    assert repr(MSELoss(reduction='sum')) == "LossMSE(reduction='sum')" and repr(MSELoss()) == 'LossMSE()'
    with pytest.raises(TypeError, match='ignore_index to be an integer'): CrossEntropyLoss(ignore_index=1.5)


@pytest.mark.parity
def test_cross_entropy_layout_errors():
    ce = CrossEntropyLoss()
    with pytest.raises(ValueError, match=r'class indices of shape \(2, 5\) for logits \(2, 3, 5\), got \(2, 3\)'):
        ce(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(IndexError, match=r'class indices in \[0, 3\).*besides ignore_index=-100'):
        ce(torch.randn(2, 3, 5), torch.full((2, 5), 3))


@pytest.mark.parity
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), dtype=dtypes, seed=seeds,
       hard=st.booleans(), saturate=st.booleans())
def test_losses(shape, dtype, seed, hard, saturate):
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(*shape, generator=gen, dtype=dtype)
    if saturate: p = torch.where(p < 0.2, 0.0, torch.where(p > 0.8, 1.0, p)).to(dtype)  # exact 0 and 1 too
    t = torch.rand(*shape, generator=gen, dtype=dtype)
    if hard: t = (t > 0.5).to(dtype)
    for ours, ref in [(LossMSE(), torch.nn.functional.mse_loss), (LossBCE(), torch.nn.functional.binary_cross_entropy)]:
        loss_ref, (gp_ref,) = autograd_grads(lambda p: ref(p, t), p)
        loss = ours(p, t)
        assert loss.shape == () and not loss.requires_grad
        assert_parity(loss, loss_ref, dtype, n=p.numel())                    # a mean over every element
        assert_parity(ours.backward(), gp_ref, dtype, n=4)                   # elementwise: a few roundings per entry


@pytest.mark.parity
@small
@given(n=st.integers(1, 10), c=st.integers(1, 8), dtype=dtypes, seed=seeds, probs=st.booleans(), weighted=st.booleans(),
       smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]), scale=st.sampled_from([1.0, 10.0, 1e4]))
# one class: a zero gradient
@example(n=5, c=1, dtype=torch.float64, seed=2**31 - 1, probs=False, weighted=True, smoothing=0.1, scale=1.0)
def test_cross_entropy(n, c, dtype, seed, probs, weighted, smoothing, scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=dtype) * scale
    t = torch.rand(n, c, generator=gen, dtype=dtype) if probs else torch.randint(0, c, (n,), generator=gen)
    w = torch.rand(c, generator=gen, dtype=dtype) + 0.1 if weighted else None
    loss_ref, (gx_ref,) = autograd_grads(lambda z: F.cross_entropy(z, t, weight=w, label_smoothing=smoothing), x)
    ce = LossCrossEntropy(weight=w, label_smoothing=smoothing)
    loss = ce(x, t)
    assert loss.shape == () and loss.dtype == dtype and torch.isfinite(loss)
    # a logsumexp over c classes, a mean over n
    assert_parity(loss, loss_ref, dtype, n=n + c, atol=1e-4 * max(1.0, scale))
    # softmax over c classes; (p - y) w_t / sum w cancels (to exactly 0 for one class): compare on its terms' scale
    terms = (w.max() / w.min()).item() / n if weighted else 1 / n
    assert_parity(ce.backward(), gx_ref, dtype, n=c, scale=terms)


def test_cross_entropy_takes_byte_indices_and_raises_index_error_out_of_range_as_torch():
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    ours, ref = LossCrossEntropy(), torch.nn.CrossEntropyLoss()
    assert torch.equal(ours(x, t.to(torch.uint8)), ours(x, t))
    torch.testing.assert_close(ours(x, t.to(torch.uint8)), ref(x, t.to(torch.uint8)), rtol=1e-15, atol=0)
    bad = torch.tensor([0, 1, 3, 0])
    with pytest.raises(IndexError): ref(x, bad)
    with pytest.raises(IndexError, match=r'class indices in \[0, 3\)'): ours(x, bad)
    with pytest.raises(TypeError, match='positional'): LossCrossEntropy(None, 0.1)  # torch's 2nd is size_average


@pytest.mark.parametrize('make', [LossMSE, LossBCE, LossCrossEntropy])
def test_a_reduction_written_after_construction_is_checked_and_a_changed_one_needs_a_new_forward(make):
    "backward would otherwise return the gradient of another reduction than the loss forward computed"
    loss = make(reduction='sum')
    with pytest.raises(ValueError, match=r"expects reduction to be 'mean', 'sum' or 'none', got 'avg'"):
        loss.reduction = 'avg'
    assert loss.reduction == 'sum'  # a refused setting changes nothing
    p = torch.rand(4, 3)
    t = torch.tensor([0, 1, 2, 0]) if make is LossCrossEntropy else torch.rand(4, 3)
    loss(p, t)
    loss.reduction = 'mean'
    with pytest.raises(RuntimeError, match='its reduction was changed after its forward'): loss.backward()
    loss(p, t); loss.backward()  # a new forward: fine


def test_cross_entropy_settings_written_after_construction_are_checked():
    loss = LossCrossEntropy()
    with pytest.raises(ValueError, match=r'expects label_smoothing in \[0, 1\], got 5.0'): loss.label_smoothing = 5.0
    with pytest.raises(TypeError, match='expects ignore_index to be an integer'): loss.ignore_index = 1.5
    assert (loss.label_smoothing, loss.ignore_index) == (0.0, -100)
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss(x, t); loss.label_smoothing = 0.2
    with pytest.raises(RuntimeError, match='its label_smoothing was changed after its forward'): loss.backward()


@pytest.mark.parametrize('loss', [MSELoss, BCELoss, CrossEntropyLoss])
def test_losses_take_torch_device_and_dtype_habits(loss):
    crit = loss()
    for call in (lambda c: c.to('cpu'), lambda c: c.to(torch.device('cpu')), lambda c: c.cpu(), lambda c: c.double(),
                 lambda c: c.float(), lambda c: c.half(), lambda c: c.bfloat16()):
        assert call(crit) is crit
    assert_clear_error(ValueError, "got an invalid device 'gpu'", crit.to, 'gpu')


def test_cross_entropy_casts_and_moves_its_weight():
    ce = CrossEntropyLoss(weight=torch.ones(3))
    assert ce.double().weight.dtype == torch.float64 and ce.float().weight.dtype == torch.float32


def test_cross_entropy_refuses_ignore_index_with_probabilities():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match='ignore_index is not supported for floating point target'):
        TF.cross_entropy(x, torch.rand(4, 3), ignore_index=1)  # what torch does
    assert_clear_error(ValueError, 'ignore_index applies to class indices only',
                       CrossEntropyLoss(ignore_index=1), x, torch.rand(4, 3))
    p = torch.full((4, 3), 1 / 3)
    assert_close(CrossEntropyLoss(ignore_index=-5)(x, p), TF.cross_entropy(x, p, ignore_index=-5))


def test_a_loss_under_inference_mode_says_what_to_do():
    from minidl import LossBCE, LossMSE
    for loss in (LossBCE(), LossMSE()):
        with torch.inference_mode(), pytest.raises(RuntimeError, match=r'Use torch.no_grad\(\) instead'):
            loss(torch.rand(3), torch.rand(3))
    with torch.inference_mode(): p = torch.rand(3)
    with pytest.raises(RuntimeError, match=r'got an inference tensor .*clone it outside inference mode'):
        LossBCE()(p, torch.rand(3))  # (LossMSE saves only p - t, a tensor of its own: it takes one)
    loss = LossBCE(); loss(p.clone(), torch.rand(3)); loss.backward()


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('ignored', [False, True])
def test_cross_entropy_with_an_infinite_weight_on_an_absent_class_equals_torch(reduction, ignored):
    "weight = 1 / class counts with a class absent: an ignored row, or the unsmoothed gradient, must not read inf * 0."
    gen = torch.Generator().manual_seed(0)
    w = 1 / torch.tensor([0.0, 3.0, 2.0, 5.0], dtype=torch.float64)  # class 0 never appears: weight inf
    x = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([1, 2, 3, -100 if ignored else 1])
    g = torch.randn(4, generator=gen, dtype=torch.float64) if reduction == 'none' else None
    ours = LossCrossEntropy(weight=w, reduction=reduction)
    xr = x.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(xr, t, weight=w, reduction=reduction)
    ref.backward(g if g is not None else None)
    loss = ours(x, t)
    assert_close(loss, ref.detach(), n=8)
    assert_close(ours.backward(g) if g is not None else ours.backward(), xr.grad, n=8)


def test_a_cross_entropy_weight_written_after_construction_is_checked_as_the_constructors():
    loss = LossCrossEntropy()
    with pytest.raises(TypeError, match='weight to be a floating-point tensor or None, got list'):
        loss.weight = [1.0, 2.0]
    with pytest.raises(ValueError, match=r'weight of shape \(C\)'): loss.weight = torch.ones(2, 2)
    loss.weight = torch.ones(3, requires_grad=True)  # kept without autograd history, as the constructor keeps it
    assert not loss.weight.requires_grad
    out = loss(torch.randn(2, 3), torch.tensor([0, 2]))
    assert out.grad_fn is None
    loss.weight = torch.full((3,), 2.0)  # a new weight after the forward: the backward waits for a new forward
    with pytest.raises(RuntimeError, match='weight was changed after its forward'): loss.backward()


def test_bce_names_a_prediction_just_above_one_and_refuses_torchs_weight_clearly():
    with pytest.raises(ValueError, match=r'got values in \[0.5, 1.00000001\]'):
        LossBCE()(torch.tensor([0.5, 1.00000001], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(NotImplementedError, match=r"LossBCE has no weight .*reduction='none'"):
        LossBCE(weight=torch.ones(2))
