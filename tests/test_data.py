"""Property tests of the circle data generator (hypothesis) beyond the examples in nbs/07_data.ipynb."""
import math

import torch
from hypothesis import given, settings, strategies as st

from minidl.experiments.circle_data import CENTER, RADIUS, circle_dataset, circle_label, circle_train_test


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
