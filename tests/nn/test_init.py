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
