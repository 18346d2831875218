"""Shared fixtures of the test suite.

The torch oracles, the tolerance policy and the state snapshots are in `minidl.testing` (they are used by the notebooks
too); what is here belongs to pytest: the hypothesis profile, seeded generators, and a clean global state per test.
"""
import socket

import pytest
import torch
from hypothesis import settings

# Sweeps against PyTorch run 40 examples by default; no deadline, as a float64 step on a shared 2-core machine may take
# a while. Tests that need other settings say so with @settings(...). `pytest --hypothesis-profile stress` draws ten
# times as many, to see how close the tolerances come to failing (with MINIDL_TOLERANCE_LOG, see minidl.testing).
settings.register_profile('minidl', max_examples=40, deadline=None)
settings.register_profile('stress', max_examples=400, deadline=None)
settings.load_profile('minidl')


@pytest.fixture(autouse=True)
def torch_global_state():
    ("Each test starts from torch's default dtype, number of threads and global random state, and leaves "
     "them as it found them.")
    dtype, threads, rng = torch.get_default_dtype(), torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_default_dtype(dtype); torch.set_num_threads(threads); torch.set_rng_state(rng)


@pytest.fixture
def gen():
    "A torch.Generator seeded with 0: the random draws of a test, independent of the global state."
    return torch.Generator().manual_seed(0)


@pytest.fixture
def free_port():
    "A TCP port on 127.0.0.1 that is free now (for a distributed job's rendezvous)."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
