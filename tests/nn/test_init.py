"""minidl.nn.init against torch.nn.init: the same draws for the same seed."""
import pytest
import torch
from helpers import dtypes, seeds, small
from hypothesis import given
from hypothesis import strategies as st

import minidl.nn.init as minit
from minidl import Parameter

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


@small
@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    dtype=dtypes,
    seed=seeds,
    fn=st.sampled_from(
        ['uniform_', 'normal_', 'xavier_uniform_', 'xavier_normal_', 'kaiming_uniform_', 'kaiming_normal_']
    ),
    mode=st.sampled_from(['fan_in', 'fan_out']),
    nonlinearity=st.sampled_from(['relu', 'leaky_relu', 'tanh', 'linear']),
    gain=st.floats(0.1, 3.0),
)
def test_init(shape, dtype, seed, fn, mode, nonlinearity, gain):
    "With equal generators, minidl.nn.init draws exactly what torch.nn.init draws."
    kw = {'uniform_': dict(a=-gain, b=gain), 'normal_': dict(mean=gain, std=gain), 'xavier_uniform_': dict(gain=gain),
          'xavier_normal_': dict(gain=gain)}.get(fn, dict(a=gain, mode=mode, nonlinearity=nonlinearity))
    p, t = Parameter(torch.empty(shape, dtype=dtype)), torch.empty(shape, dtype=dtype)
    assert getattr(minit, fn)(p, generator=torch.Generator().manual_seed(seed), **kw) is p
    getattr(torch.nn.init, fn)(t, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(p.value, t)
    assert minit.calculate_gain(nonlinearity, gain) == torch.nn.init.calculate_gain(nonlinearity, gain)


INF, NAN = float('inf'), float('nan')


@pytest.mark.parametrize('fn, args, kw, contains', [
    ('xavier_uniform_', (), dict(gain=-1), 'xavier_uniform_ expects gain to be a finite number >= 0, got -1'),
    ('xavier_normal_', (), dict(gain=-1), 'xavier_normal_ expects gain to be a finite number >= 0, got -1'),
    ('xavier_normal_', (), dict(gain=INF), 'gain to be a finite number >= 0, got inf'),
    ('xavier_uniform_', (), dict(gain=1e300), 'from gain=1e+300) is more than torch.float32 can hold'),
    ('kaiming_uniform_', (), dict(a=NAN), 'a (the negative slope of leaky_relu) to be a finite number, got nan'),
    ('kaiming_normal_', (), dict(a=INF), 'a (the negative slope of leaky_relu) to be a finite number, got inf'),
    ('normal_', (0, INF), {}, 'normal_ expects std to be a finite number, got inf'),
    ('normal_', (INF, 1), {}, 'normal_ expects mean to be a finite number, got inf'),
    ('normal_', (NAN, 1), {}, 'normal_ expects mean to be a finite number, got nan'),
    ('normal_', (1e300, 1), {}, 'mean to be a number that torch.float32 can hold'),
    ('uniform_', (-INF, 0), {}, 'uniform_ expects a to be a finite number, got -inf'),
    ('uniform_', (-1e308, 1e308), {}, 'a to be a number that torch.float32 can hold'),
    ('uniform_', (-3e38, 3e38), {}, 'the range b - a = 6e+38 (from a=-3e+38 and b=3e+38) is more than torch.float32'),
])
def test_init_names_the_bad_argument(fn, args, kw, contains):
    "Every number is checked first, and the error names it (torch fills inf or raises its own message); nothing changes"
    from minidl.testing import assert_clear_error
    p = Parameter(torch.ones(3, 4))
    msg = assert_clear_error(ValueError, contains, getattr(minit, fn), p, *args, **kw)
    assert 'out of bounds' not in msg and 'expects a <= b' not in msg
    assert torch.equal(p.value, torch.ones(3, 4))


def test_init_no_weight_no_xavier_scale():
    from minidl.testing import assert_clear_error
    for fn in ('xavier_uniform_', 'xavier_normal_'):
        assert_clear_error(ValueError, 'fan_in + fan_out is 0 for a tensor of shape (0, 0)', getattr(minit, fn),
                           torch.empty(0, 0))
    assert minit.xavier_uniform_(torch.empty(0, 3)).shape == (0, 3)  # as torch: nothing to fill, but a scale


@pytest.mark.parametrize('fn, args, kw', [
    ('xavier_uniform_', (), dict(gain=0)), ('xavier_normal_', (), dict(gain=0)), ('normal_', (1.5, 0), {}),
    ('uniform_', (2, 2), {}), ('kaiming_uniform_', (), dict(a=-5)), ('kaiming_normal_', (), dict(a=-0.3)),
    ('uniform_', (-1e38, 1e38), {}),
])
def test_init_keeps_torch_semantics_where_torch_accepts(fn, args, kw):
    p, t = Parameter(torch.empty(4, 5)), torch.empty(4, 5)
    getattr(minit, fn)(p, *args, generator=torch.Generator().manual_seed(3), **kw)
    getattr(torch.nn.init, fn)(t, *args, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(p.value, t)
