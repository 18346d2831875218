"""Flatten against torch."""
import pytest
import torch
from helpers import FAST, seeds
from hypothesis import given
from hypothesis import strategies as st

from minidl import Flatten
from minidl.testing import assert_clear_error, torch_grads


def test_flatten_refuses_clearly_where_torch_raises_index_error():
    assert_clear_error(ValueError, 'start_dim', Flatten(), torch.zeros(3))
    assert_clear_error(ValueError, 'start_dim', Flatten(2, 1), torch.zeros(2, 3, 4))


@pytest.mark.parity
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


def test_flatten_dims_are_checked_when_written():
    f = Flatten()
    assert_clear_error(TypeError, 'Flatten expects start_dim to be an int, got 1.5', setattr, f, 'start_dim', 1.5)
    assert_clear_error(TypeError, "Flatten expects end_dim to be an int, got '2'", setattr, f, 'end_dim', '2')
    assert (f.start_dim, f.end_dim) == (1, -1)
    x = torch.randn(2, 3, 4); f(x); f.start_dim = 0
    assert_clear_error(RuntimeError, 'its start_dim was changed after its forward', f.backward, torch.ones(2, 12))
    assert f(x).shape == (24,)
