"""minidl.testing's own guarantees: assert_parity never loosens the policy, snapshots catch every change they claim
to, and wrong arguments get clear errors."""
import math

import pytest
import torch

from minidl import AdamW, Dropout, Linear, Sequential
from minidl.testing import (
    assert_clear_error,
    assert_close,
    assert_parity,
    assert_unchanged,
    snapshot,
    tolerance,
)

A = torch.tensor([1.0], dtype=torch.float64)


@pytest.mark.parametrize('dtype', ['float64', None, torch.float16, torch.int64])
def test_assert_parity_refuses_a_dtype_it_has_no_policy_for(dtype):
    assert_clear_error(ValueError, 'dtype torch.float32 or torch.float64', assert_parity, A + 1e-6, A, dtype)


def test_assert_parity_float64_bounds_only_tighten():
    assert_clear_error(ValueError, 'declared to run in torch.float32', assert_parity, A, A, torch.float32)
    with pytest.raises(AssertionError, match='tightened'): assert_parity(A + 1e-15, A, torch.float64, rtol=0, atol=0)
    assert_parity(A + 1e-15, A, torch.float64, atol=1e-4)     # a float32 bound: the policy still applies...
    with pytest.raises(AssertionError): assert_parity(A + 1e-6, A, torch.float64, atol=1e-4)  # ...and is strict
    with pytest.raises(TypeError, match="unexpected keyword argument 'ulp'"): assert_parity(A, A, ulp=3)
    assert_clear_error(ValueError, 'atol to be a finite number >= 0', assert_parity, A, A, atol=float('nan'))
    f = A.float()
    with pytest.raises(AssertionError): assert_parity(f + 1e-5, f, torch.float32, rtol=0, atol=0)  # float32: applied


def test_numbers_get_clear_errors():
    assert_clear_error(TypeError, "tolerance expects expected to be a torch.Tensor", tolerance, 1.0)
    assert_clear_error(TypeError, "assert_close expects actual to be a torch.Tensor", assert_close, 1.0, 1.0)
    assert_close(torch.tensor(1.0, dtype=torch.float64), 1.0)   # a number as the expected value: the result's dtype


def _changed(before, after):
    with pytest.raises(AssertionError, match='a failed call changed'): assert_unchanged(before, after)


def test_snapshot_sees_modes_settings_flags_and_signs():
    net = Sequential(Linear(2, 2), Dropout(0.5))
    s = snapshot(net); net.eval(); _changed(s, snapshot(net))
    opt = AdamW(net.parameters(), lr=0.1, weight_decay=0.01)
    for key, value in (('weight_decay', 5.0), ('betas', (0.1, 0.2)), ('amsgrad', True)):
        s = snapshot(opt); old = opt.param_groups[0][key]
        opt.param_groups[0][key] = value; _changed(s, snapshot(opt)); opt.param_groups[0][key] = old
        assert_unchanged(s, snapshot(opt))
    x = torch.zeros(3); s = snapshot(x); x.requires_grad_(); _changed(s, snapshot(x))
    _changed(snapshot(torch.zeros(2)), snapshot(-torch.zeros(2)))
    _changed(snapshot(0.0), snapshot(-0.0))
    nan = torch.tensor([float('nan')], dtype=torch.float64)
    assert_unchanged(snapshot(nan), snapshot(-nan))   # NaN equals NaN, whatever its sign or payload


def test_assert_clear_error_refuses_to_check_nothing():
    with pytest.raises(ValueError, match='checks nothing'): assert_clear_error(ValueError, [], int, 'x')


def test_assert_close_does_not_truncate_a_number_to_an_integer_result():
    "1.5 against an integer result would be compared as 1 and pass: it fails, as torch's own assert_close."
    from minidl.testing import assert_close
    for actual, expected in ((torch.tensor(1), 1.5), (torch.tensor(True), 0.5), (torch.tensor(0), 0.999),
                             (torch.tensor(3), math.nan), (torch.tensor(True), 2),
                             (torch.tensor(44, dtype=torch.int8), 300), (torch.tensor(0, dtype=torch.uint8), -256)):
        with pytest.raises(AssertionError, match='cannot equal'): assert_close(actual, expected)
    assert_close(torch.tensor(2), 2.0); assert_close(torch.tensor(True), 1); assert_close(torch.tensor(1.5), 1.5)


def test_a_snapshot_of_a_loss_compares_its_settings_and_weight():
    from minidl import LossCrossEntropy
    loss = LossCrossEntropy(weight=torch.ones(3), label_smoothing=0.1)
    before = snapshot(loss)
    assert_unchanged(before, snapshot(loss))  # nothing done: unchanged (a deep copy compared by identity never was)
    loss(torch.randn(2, 3), torch.tensor([0, 2]))
    assert_unchanged(before, snapshot(loss))  # a call changes no setting
    loss.weight.mul_(2)
    with pytest.raises(AssertionError, match='weight'): assert_unchanged(before, snapshot(loss))
