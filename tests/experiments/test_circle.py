"""The circle data: shapes, labels, balance, seeds, and the arguments it refuses."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl.experiments.circle_data import CENTER, RADIUS, circle_dataset, circle_label, circle_train_test
from minidl.testing import assert_clear_error


def test_circle_data_refuses_bad_arguments():
    assert_clear_error(ValueError, 'at least 1', circle_dataset, 0)
    assert_clear_error(TypeError, 'n must be an int', circle_dataset, True)
    assert_clear_error(TypeError, 'n must be an int', circle_dataset, 3.0)
    assert circle_dataset(torch.tensor(3), seed=0)[0].shape == (3, 2)  # an integer, like the seeds
    assert_clear_error(ValueError, 'seed', circle_dataset, 3, seed=2**64)
    assert_clear_error(TypeError, 'floating-point', circle_dataset, 3, dtype='float64')
    assert_clear_error(ValueError, 'either seed or generator', circle_dataset, 3, seed=1, generator=torch.Generator())
    assert circle_dataset(3, seed=-2**63)[0].shape == (3, 2) and circle_dataset(3, seed=2**64 - 1)[0].shape == (3, 2)


def test_circle_data_huge_n_is_refused_clearly():
    assert_clear_error(ValueError, 'n', circle_dataset, 2**70)


def test_circle_label_refuses_non_tensors():
    assert_clear_error(TypeError, 'circle_label expects', circle_label, [[0.5, 0.5]])
    assert_clear_error(ValueError, '(n, 2)', circle_label, torch.zeros(2))
    assert circle_label(torch.zeros(0, 2)).shape == (0, 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(-2**63, 2**64 - 1))
def test_every_seed_torch_accepts_works(seed):
    x, y = circle_dataset(3, seed=seed)
    torch.testing.assert_close(x, torch.rand(3, 2, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(circle_train_test(3, 2, seed=seed)[0], x)


@settings(max_examples=10, deadline=None)
@given(seed=st.one_of(st.integers(2**64, 2**70), st.integers(-2**70, -2**63 - 1)))
def test_seeds_torch_refuses_are_named(seed):
    for call in (lambda: circle_dataset(3, seed=seed), lambda: circle_train_test(seed=seed)):
        with pytest.raises(ValueError, match=str(seed)): call()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), seed=st.integers(0, 2**31 - 1))
def test_shapes_range_labels_determinism(n, seed):
    x, y = circle_dataset(n, seed=seed)
    assert x.shape == (n, 2) and y.shape == (n, 1) and x.dtype == y.dtype == torch.float32
    assert bool((x >= 0).all() and (x < 1).all())
    inside = ((x[:, 0] - CENTER[0])**2 + (x[:, 1] - CENTER[1])**2 < RADIUS**2).float()
    assert torch.equal(y.squeeze(1), inside)
    x2, y2 = circle_dataset(n, seed=seed)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_disk_has_area_one_half():
    assert math.isclose(math.pi * RADIUS**2, 0.5)
    assert RADIUS < 0.5  # the disk lies inside the unit square


def test_balance_over_seeds():
    fracs = torch.tensor([circle_dataset(1000, seed=s)[1].mean().item() for s in range(50)])
    assert abs(fracs.mean().item() - 0.5) < 0.01          # unbiased
    assert 0.005 < fracs.std().item() < 0.03              # about sqrt(0.25/1000) = 0.016


def test_label_float64_boundary():
    x = torch.tensor([[0.5 + RADIUS * 0.999, 0.5], [0.5 + RADIUS * 1.001, 0.5]], dtype=torch.float64)
    assert circle_label(x).squeeze(1).tolist() == [1.0, 0.0]


def test_train_test_independent_and_global_rng_untouched():
    state = torch.get_rng_state()
    xtr, ytr, xte, yte = circle_train_test(1000, 1000, seed=0)
    assert not torch.equal(xtr, xte)
    assert torch.equal(torch.get_rng_state(), state)
