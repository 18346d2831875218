"""The digits experiment's Python API refuses bad arguments with one clear message, before any training."""
import pytest
import torch

pytest.importorskip('sklearn')
from minidl.experiments.digits import confusion_matrix, run_digits, run_digits_experiment
from minidl.experiments.digits_data import AugmentedSequential, RandomShift, random_shift, shift_offsets
from minidl.testing import assert_clear_error

T = torch.tensor


def test_confusion_matrix_refuses_labels_it_cannot_count():
    assert_clear_error(ValueError, 'y_pred in 0..9 (classes=10), got -1', confusion_matrix, T([1]), T([-1]))
    assert_clear_error(ValueError, 'y_pred in 0..9', confusion_matrix, T([9]), T([10]))
    assert_clear_error(ValueError, 'y_true in 0..9', confusion_matrix, T([10, 0]), T([0, 9]))
    assert_clear_error(TypeError, 'integer class indices', confusion_matrix, T([1.]), T([1.]))
    assert_clear_error(ValueError, 'as many predictions as labels', confusion_matrix, T([1, 2]), T([1]))
    assert_clear_error(ValueError, 'of shape (n,), got (1, 2)', confusion_matrix, T([[1, 2]]), T([[1, 2]]))
    assert_clear_error(ValueError, 'classes to be an integer >= 1, got 0', confusion_matrix, T([0]), T([0]), 0)
    assert confusion_matrix(T([0, 1, 1]), T([0, 1, 0]), 2).tolist() == [[1, 0], [1, 1]]


@pytest.mark.parametrize('kw, msg', [(dict(batch_size=0), 'batch_size to be an integer >= 1, got 0'),
                                     (dict(batch_size=None), 'batch_size to be an integer >= 1, got None'),
                                     (dict(epochs=0), 'epochs to be an integer >= 1, got 0'),
                                     (dict(epochs=-1), 'epochs to be an integer >= 1, got -1')])
def test_run_digits_checks_its_sizes(kw, msg):
    assert_clear_error(ValueError, ['run_digits', msg], run_digits, 'mlp', **kw)


def test_run_digits_experiment_refuses_a_string_for_names():
    assert_clear_error(TypeError, "got the string 'mlp'", run_digits_experiment, [0], names='mlp', epochs=1)


def test_random_shift_refuses_offsets_outside_the_padding_and_bad_arguments():
    x = torch.arange(16.).view(1, 1, 4, 4)
    assert_clear_error(ValueError, 'window corners in 0..2', random_shift, x, T([[-1, -1]]), 1)
    assert_clear_error(ValueError, 'window corners in 0..2', random_shift, x, T([[3, 3]]), 1)
    assert_clear_error(ValueError, 'expects size (h, w) with h * w = 16', random_shift, x.view(1, 16), T([[1, 1]]), 1)
    assert_clear_error(ValueError, 'n to be an integer >= 0, got -1', shift_offsets, -1)
    assert_clear_error(ValueError, 'pixels to be an integer >= 0, got -1', shift_offsets, 3, -1)
    assert_clear_error(TypeError, 'torch.Generator', shift_offsets, 3, 1, generator=5)
    assert_clear_error(ValueError, 'expects size (h, w) of positive integers, got 8', RandomShift, 1, size=8)
    assert torch.equal(random_shift(x, T([[1, 1]]), 1), x)


@pytest.mark.parametrize('steps', [1, 4])  # the first, checked call; then the container's fast path
def test_augmented_backward_refuses_a_module_run_on_its_own_before_any_gradient_changes(steps):
    "backward(input_grad=False) skips the augmentation, not the container's checks: nothing is added before it refuses."
    import minidl.nn as nn
    torch.manual_seed(0)
    m = AugmentedSequential(RandomShift(1, (4, 4)), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    mse, x, t = nn.MSELoss(), torch.randn(5, 16), torch.randn(5, 3)
    for _ in range(steps): m.zero_grad(); mse(m(x), t); m.backward(mse.backward(), input_grad=False)
    m.zero_grad(); mse(m(x), t)
    m[2](torch.randn(5, 6))  # a module of the chain called on its own between forward and backward
    assert_clear_error(RuntimeError, "its module 2 (ReLU) ran forward on its own", m.backward, mse.backward(),
                       input_grad=False)
    assert all(p.grad.abs().sum() == 0 for p in m.parameters())


def test_random_shift_backward_uses_the_shift_of_its_forward():
    shift, x, g = RandomShift(1, (4, 4)), torch.randn(3, 16), torch.randn(3, 16)
    torch.manual_seed(0); y = shift(x); expected = shift.backward(g)
    torch.manual_seed(0); assert torch.equal(shift(x), y)  # the same forward again (the same offsets)
    shift.pixels = 2  # changed between forward and backward: the backward still undoes the forward's shift of 1
    assert torch.equal(shift.backward(g), expected)


@pytest.mark.parametrize('edit', ['reshaped in place', 'replaced'])
def test_augmented_backward_refuses_a_bad_gradient_buffer_before_any_gradient_changes(edit):
    "After warm steps the container's checks are cached: a `.grad` reshaped in place or replaced is still seen first."
    import minidl.nn as nn
    torch.manual_seed(0)
    m = AugmentedSequential(RandomShift(1, (4, 4)), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    mse, x, t = nn.MSELoss(), torch.randn(5, 16), torch.randn(5, 3)
    for _ in range(3): m.zero_grad(); mse(m(x), t); m.backward(mse.backward(), input_grad=False)
    m.zero_grad(); mse(m(x), t)
    if edit == 'replaced': m[1].weight.grad = torch.zeros(7)
    else: m[1].weight.grad.unsqueeze_(0)
    assert_clear_error(RuntimeError, 'weight.grad has shape', m.backward, mse.backward(), input_grad=False)
    assert m[3].weight.grad.abs().sum() == 0 and m[3].bias.grad.abs().sum() == 0  # the last layer added nothing
