"""Dropout against torch: training and evaluation, p = 0 and 1, NaN kept, hyper-parameters."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import dtypes, seeds, small
from hypothesis import given
from hypothesis import strategies as st

import minidl as M
from minidl import Dropout
from minidl.testing import assert_clear_error, autograd_grads

F64 = torch.float64


def test_dropout_hyper_parameters():
    for p in (float('nan'), -0.1, 1.5, True, torch.tensor(0.5)):
        assert_clear_error(ValueError, 'probability p in [0, 1]', Dropout, p)


def test_dropout_p1_and_eval_like_torch():
    d = Dropout(1.0)
    x = torch.randn(3, 4, dtype=F64)
    assert torch.equal(d(x), torch.zeros_like(x)) and torch.equal(d.backward(torch.ones_like(x)), torch.zeros_like(x))
    d.eval()
    assert d(x) is x or torch.equal(d(x), x)


def test_dropout_keeps_nan_like_torch():
    x = torch.full((500,), math.nan)
    assert M.Dropout(0.5)(x).isnan().all() and torch.nn.Dropout(0.5)(x).isnan().all()   # NaN * 0 is NaN in both
    assert M.Dropout(1.0)(x).isnan().all() and torch.nn.Dropout(1.0)(x).isnan().all()


@pytest.mark.parity
def test_dropout_inplace_repr():
    assert repr(Dropout(0.3, inplace=True)) == repr(torch.nn.Dropout(0.3, inplace=True))
    assert repr(Dropout(0.3)) == repr(torch.nn.Dropout(0.3))
    with pytest.raises(TypeError, match='inplace to be True or False'): Dropout(0.3, inplace='yes')


@pytest.mark.parity
@small
@given(shape=st.lists(st.integers(1, 8), min_size=1, max_size=3), dtype=dtypes, seed=seeds,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), training=st.booleans())
def test_dropout(shape, dtype, seed, p, training):
    "Same seed, same mask as torch's dropout: outputs and gradients are bit-for-bit equal."
    x = torch.randn(*shape, dtype=dtype)
    g = torch.randn(*shape, dtype=dtype)
    torch.manual_seed(seed)
    y_ref, (gx_ref,) = autograd_grads(lambda t: F.dropout(t, p, training=training), x, grad=g)
    torch.manual_seed(seed)
    d = Dropout(p).train(training)
    assert torch.equal(d(x), y_ref) and torch.equal(d.backward(g), gx_ref)


def test_a_generator_put_in_after_construction_is_named_when_it_is_refused():
    d = Dropout(0.5)
    d.generator = 123
    with pytest.raises(TypeError, match=r'Dropout.generator is a int, expected a torch.Generator or None'):
        d(torch.ones(3))
    d.generator = torch.Generator().manual_seed(0)
    d(torch.ones(3))
