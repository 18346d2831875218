"""The shared checks: every validator of `minidl._checks` and its messages, and the mechanism by which `Module` and
`Loss` run a layer's maths inside its checks (called as `layer(x)` or as `layer.forward(x)`/`layer.backward(g)`)."""
import math

import pytest
import torch

from minidl import (
    SGD,
    Adam,
    BatchNorm1d,
    Conv2d,
    Linear,
    LossBCE,
    LossCrossEntropy,
    LossMSE,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from minidl._checks import (
    check_betas,
    check_finite,
    check_flag,
    check_grad,
    check_int,
    check_positive,
    check_rate,
    check_real,
    check_seed,
    check_size,
    check_tensor,
    fmt_shape,
)

# ------------------------------------------------------------------------------------------------ the validators

@pytest.mark.parametrize(
    'call,error,message',
    [
        (
            lambda: check_flag(1, 'bias', 'Linear'),
            TypeError,
            'Linear expects bias to be True or False, got 1',
        ),
        (
            lambda: check_flag(None, 'inplace', 'ReLU'),
            TypeError,
            'ReLU expects inplace to be True or False, got None',
        ),
        (
            lambda: check_int(0, 'step_size', 'StepLR'),
            ValueError,
            'StepLR expects step_size to be an integer >= 1, got 0',
        ),
        (
            lambda: check_int(-1, 'epochs', 'train', min=0),
            ValueError,
            'train expects epochs to be an integer >= 0, got -1',
        ),
        (
            lambda: check_int(2.0, 'world_size', 'ShardedSampler'),
            ValueError,
            'to be an integer >= 1, got 2.0',
        ),
        (lambda: check_int(True, 'n', 'x'), ValueError, 'got True'),
        (
            lambda: check_size(0, 'in_features', 'Linear'),
            ValueError,
            'Linear expects in_features to be a positive integer, got 0',
        ),
        (
            lambda: check_size(2**63, 'out_features', 'Linear'),
            ValueError,
            'a positive integer below 2**63, got 9223372036854775808',
        ),
        (
            lambda: check_size(2.5, 'num_features', 'BatchNorm1d'),
            ValueError,
            'to be a positive integer, got 2.5',
        ),
        (
            lambda: check_seed('0', 'seed', 'train'),
            TypeError,
            "train expects seed to be an integer, got str '0'",
        ),
        (
            lambda: check_seed(True, 'seed', 'gradcheck'),
            TypeError,
            'gradcheck expects seed to be an integer, got bool True',
        ),
        (
            lambda: check_seed(2**64, 'seed', 'train'),
            ValueError,
            'train expects a seed that torch accepts, an integer in [-2**63, 2**64)',
        ),
        (lambda: check_seed(-(2**63) - 1, 'seed', 'train'), ValueError, 'an integer in [-2**63, 2**64)'),
        (
            lambda: check_real('1', 'lr', 'SGD'),
            TypeError,
            "SGD expects lr to be a finite number >= 0, got '1'",
        ),
        (
            lambda: check_finite(math.inf, 'lr', 'train'),
            ValueError,
            'train expects lr to be a finite number, got inf',
        ),
        (
            lambda: check_rate(-0.1, 'momentum', 'SGD'),
            ValueError,
            'SGD expects momentum to be a finite number >= 0, got -0.1',
        ),
        (
            lambda: check_rate(math.nan, 'lr', 'SGD'),
            ValueError,
            'SGD expects lr to be a finite number >= 0, got nan',
        ),
        (lambda: check_rate(True, 'lr', 'SGD'), TypeError, 'got True'),
        (
            lambda: check_positive(0, 'T_max', 'CosineAnnealingLR'),
            ValueError,
            'CosineAnnealingLR expects T_max to be a finite number > 0, got 0',
        ),
        (   # the bound said is the one checked, for a negative value too
            lambda: check_positive(-1, 'max_lr', 'OneCycleLR'),
            ValueError,
            'OneCycleLR expects max_lr to be a finite number > 0, got -1',
        ),
        (lambda: check_positive(math.inf, 'max_lr', 'OneCycleLR'), ValueError, 'a finite number > 0, got inf'),
        (lambda: check_positive('1', 'max_lr', 'OneCycleLR'), TypeError, "a finite number > 0, got '1'"),
        (
            lambda: check_betas((0.9,), 'betas', 'Adam'),
            ValueError,
            'Adam expects betas to be two numbers in [0, 1), got (0.9,)',
        ),
        (lambda: check_betas((0.9, True), 'betas', 'Adam'), ValueError, 'two numbers in [0, 1)'),
        (
            lambda: check_tensor([1.0], 'input', 'ReLU'),
            TypeError,
            'ReLU expects the input to be a torch.Tensor, got list',
        ),
        (
            lambda: check_tensor(torch.ones(2, dtype=torch.long), 'target', 'LossMSE'),
            TypeError,
            'LossMSE expects a floating-point target, got dtype torch.int64 (convert with .float())',
        ),
        (
            lambda: check_grad(torch.ones(3), 'ReLU', shape=(2,), dtype=torch.float32),
            ValueError,
            'ReLU.backward expects a gradient of shape (2) (the shape of its forward output), got (3)',
        ),
        (
            lambda: check_grad(torch.ones(2).double(), 'ReLU', shape=(2,), dtype=torch.float32),
            TypeError,
            'ReLU.backward expects a gradient of dtype torch.float32 (the dtype of its forward output), got '
            'torch.float64',
        ),
        (
            lambda: check_grad(
                torch.ones(2, device='meta'),
                'ReLU',
                shape=(2,),
                dtype=torch.float32,
                device=torch.device('cpu'),
            ),
            RuntimeError,
            'ReLU.backward expects a gradient on cpu (the device of its forward output), got one on meta',
        ),
        (
            lambda: check_grad('g', 'Linear', shape=(2,), dtype=torch.float32),
            TypeError,
            'Linear expects the gradient to be a torch.Tensor, got str',
        ),
    ],
)
def test_validator_messages(call, error, message):
    with pytest.raises(error) as e: call()
    assert message in str(e.value)
    assert '\n' not in str(e.value)  # one line


def test_validators_return_canonical_values():
    import numpy as np
    assert check_int(np.int64(3), 'n', 'x') == 3 and type(check_int(np.int64(3), 'n', 'x')) is int
    assert check_seed(torch.tensor(5), 'seed', 'x') == 5 and check_seed(2**64 - 1, 'seed', 'x') == 2**64 - 1
    assert check_rate(1, 'lr', 'x') == 1.0 and type(check_rate(1, 'lr', 'x')) is float
    assert check_betas([0.5, 0.25], 'betas', 'x') == (0.5, 0.25)
    x = torch.ones(2, requires_grad=True)
    assert not check_tensor(x, 'input', 'x').requires_grad
    g = torch.ones(2)
    assert check_grad(g, 'x', shape=(2,), dtype=torch.float32) is g
    assert fmt_shape(torch.Size([3])) == '(3)' and fmt_shape(torch.Size([])) == '()' and fmt_shape((2, 3)) == '(2, 3)'


def test_checks_module_imports_nothing_from_minidl():
    import ast
    import inspect

    import minidl._checks as ck
    for node in ast.walk(ast.parse(inspect.getsource(ck))):
        if isinstance(node, ast.ImportFrom): assert node.level == 0 and not (node.module or '').startswith('minidl')
        if isinstance(node, ast.Import): assert not any(a.name.startswith('minidl') for a in node.names)


# ------------------------------------------------------------------------------------------------ the mechanism

def _state(m):
    "Every parameter value and gradient of `m`, copied."
    return [t.clone() for p in m.parameters() for t in (p.value, p.grad)]

def _same(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

def _layers():
    g = torch.Generator().manual_seed(0)
    return [
        (
            Linear(3, 2, generator=g),
            lambda: torch.randn(4, 3),
            [torch.randn(4, 5), torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3).double(), [1.0]],
        ),
        (
            Conv2d(2, 3, 3),
            lambda: torch.randn(2, 2, 5, 5),
            [torch.randn(2, 3, 5, 5), torch.randn(2, 2, 2, 2), torch.randn(2, 2, 5, 5).double()],
        ),
        (
            BatchNorm1d(3),
            lambda: torch.randn(4, 3),
            [torch.randn(4, 2), torch.randn(1, 3), torch.randn(4, 3).double()],
        ),
        (ReLU(), lambda: torch.randn(4, 3), [torch.ones(4, 3, dtype=torch.long), 'x']),
        (
            Sequential(Linear(3, 4), Tanh(), Linear(4, 2)),
            lambda: torch.randn(4, 3),
            [torch.randn(4, 2), torch.ones(4, 3, dtype=torch.long)],
        ),
    ]


@pytest.mark.parametrize('direct', [False, True], ids=['call', 'forward'])
@pytest.mark.parametrize('i', range(5))
def test_failed_forward_changes_nothing_and_forgets(i, direct):
    torch.manual_seed(0)
    layer, good, bads = _layers()[i]
    x = good(); y = layer(x); layer.backward(torch.ones_like(y))
    before = _state(layer)
    bufs = [b.clone() for b in layer.buffers()]
    for bad in bads:
        with pytest.raises((TypeError, ValueError, RuntimeError)): (layer.forward if direct else layer)(bad)
        assert _same(before, _state(layer)) and _same(bufs, [b.clone() for b in layer.buffers()])
        with pytest.raises(RuntimeError, match='backward called before forward|its last forward failed'):
            layer.backward(torch.ones_like(y))  # nothing stale is used
        assert _same(before, _state(layer))
    y2 = layer(x); assert y2.shape == y.shape  # and the layer still works


@pytest.mark.parametrize('i', range(5))
def test_failed_backward_changes_nothing(i):
    torch.manual_seed(0)
    layer, good, _ = _layers()[i]
    x = good(); y = layer(x)
    before = _state(layer)
    for bad in (
        torch.ones(y.shape[:-1] + (y.shape[-1] + 1,)),
        torch.ones_like(y).double(),
        torch.ones(y.shape, dtype=torch.long),
        None,
    ):
        with pytest.raises((TypeError, ValueError, RuntimeError)): layer.backward(bad)
        assert _same(before, _state(layer))
    layer.backward(torch.ones_like(y))  # the saved state survived the refused calls


@pytest.mark.parametrize('make', [lambda: Linear(3, 2), ReLU, Sigmoid, Tanh, lambda: Sequential(Linear(3, 3), ReLU())])
def test_in_place_edit_between_forward_and_backward_is_detected(make):
    layer = make()
    x = torch.randn(4, 3)
    y = layer(x)
    # (a container: what its last module saved)
    saved = layer.layers[-1]._saved[0] if isinstance(layer, Sequential) else layer._saved[0]
    saved.mul_(2)
    before = _state(layer)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): layer.backward(torch.ones_like(y))
    assert _same(before, _state(layer))


def test_in_place_edit_of_loss_inputs_is_detected():
    p, t = torch.full((4, 1), 0.3), torch.ones(4, 1)
    for loss in (LossBCE(), LossMSE()):
        loss(p.clone(), t.clone())
        (loss._saved[0]).add_(0.1)
        with pytest.raises(RuntimeError, match='modified by an inplace operation'): loss.backward()


@pytest.mark.parametrize('bias', [True, False])
def test_replaced_weight_of_wrong_shape_is_caught(bias):
    lin = Linear(3, 2, bias=bias)
    x = torch.randn(4, 3)
    lin(x); lin.backward(torch.ones(4, 2))  # the cache now says: checked
    before = _state(lin)
    lin.weight.value = torch.randn(4, 3)  # by hand, the wrong shape: the next call checks again
    with pytest.raises(RuntimeError, match=r"Linear's weight has shape \(4, 3\), expected \(2, 3\)"): lin(x)
    with pytest.raises(RuntimeError, match=r"Linear's weight has shape \(4, 3\), expected \(2, 3\)"): lin.forward(x)
    assert all(torch.equal(a, b) for a, b in zip(before[1::2], [p.grad for p in lin.parameters()]))


def test_replaced_gradient_is_caught_before_any_accumulation():
    lin = Linear(3, 2)
    x = torch.randn(4, 3); lin(x); lin.backward(torch.ones(4, 2))
    lin(x)
    lin.bias.grad = torch.zeros(5)
    w_grad = lin.weight.grad.clone()
    with pytest.raises(RuntimeError, match='Linear.backward: bias.grad has shape'): lin.backward(torch.ones(4, 2))
    assert torch.equal(lin.weight.grad, w_grad)  # the weight's gradient was not accumulated either


def test_usual_call_skips_the_full_checks(monkeypatch):
    ("After one full check, the usual forward/backward compare metadata only: the full checks run again "
     "after an assignment.")
    lin = Linear(3, 2)
    x = torch.randn(4, 3)
    lin(x); lin.backward(torch.ones(4, 2))
    calls = []
    for name in ('_check_input', '_check_grad_output'):
        f = getattr(Linear, name)
        monkeypatch.setattr(Linear, name, lambda self, v, f=f, name=name: (calls.append(name), f(self, v))[1])
    for _ in range(3): lin(x); lin.backward(torch.ones(4, 2))
    assert calls == []
    lin.weight.value = lin.weight.value.clone()  # an assignment: checked once more, then cached again
    for _ in range(3): lin(x); lin.backward(torch.ones(4, 2))
    assert calls == ['_check_input', '_check_grad_output']


def test_maths_are_wrapped_once_and_documented():
    for cls in (Linear, ReLU, Conv2d, BatchNorm1d, Sequential):
        for name in ('forward', 'backward'):
            f = getattr(cls, name)
            assert hasattr(f, '__wrapped__') and not hasattr(f.__wrapped__, '__wrapped__')
            assert f.__doc__ == f.__wrapped__.__doc__ and f.__name__ == name


def test_user_module_without_saved_state_keeps_working():
    "A module of the user's that keeps its own state (no _save_for_backward) runs unchanged under the wrapper."
    class Scale(Module):
        def __init__(self): self.a = Parameter(torch.tensor(3.0))
        def forward(self, x): self.x = x; return self.a.value * x
        def backward(self, g): self.a.grad += (g * self.x).sum(); return self.a.value * g
    m = Scale()
    m(torch.ones(2)); assert torch.equal(m.backward(torch.ones(2)), torch.full((2,), 3.0))
    assert m.a.grad == 2.0
    m2 = Scale()
    with pytest.raises(RuntimeError, match='Scale.backward called before forward'): m2.backward(torch.ones(2))


def test_optimizer_rechecks_after_a_replacement_or_an_edited_list():
    lin = Linear(3, 2)
    opt = SGD(lin.parameters(), lr=0.1); opt.step()
    lin.weight.value = torch.zeros(3, 2)  # the wrong shape for its gradient
    with pytest.raises(
        ValueError, match=r'the gradient of parameter 0 has shape \(2, 3\), expected \(3, 2\)'
    ):
        opt.step()
    lin.weight.value = torch.zeros(2, 3); opt.step(); assert opt.step_count == 2
    opt.param_groups[0]['params'].append(Parameter(torch.zeros(2)))  # edited by hand: noticed by the next step
    with pytest.raises(RuntimeError, match='the parameter groups hold 3 parameters, not the 2 of opt.params'):
        opt.step()
    assert opt.step_count == 2


def test_adam_step_after_grad_reshaped_in_place_is_refused():
    lin = Linear(3, 2); opt = Adam(lin.parameters()); opt.step()
    lin.weight.grad.unsqueeze_(0)
    before = lin.weight.value.clone()
    with pytest.raises(ValueError, match=r'has shape \(1, 2, 3\), expected \(2, 3\)'): opt.step()
    assert torch.equal(before, lin.weight.value)


def test_cross_entropy_bad_index_is_diagnosed_after_torch_refuses():
    ce = LossCrossEntropy()
    ce(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(IndexError, match=r'class indices in \[0, 4\) .* got values in \[0, 7\]'):
        ce(torch.randn(3, 4), torch.tensor([0, 7, 2]))
    with pytest.raises(RuntimeError, match='its last forward failed'): ce.backward()


@pytest.mark.parametrize('kw', [dict(cond=math.inf), dict(ulps=math.inf), dict(scale=math.inf), dict(scale=-1.0),
                                dict(scale=math.nan), dict(cond='x'), dict(ulps=0)])
def test_tolerance_settings_that_would_make_the_check_meaningless_are_refused(kw):
    "an infinite tolerance passes anything; a negative or NaN one fails inside torch.testing with its own message"
    from minidl.testing import assert_close
    e, wrong = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([5.0, -7.0], dtype=torch.float64)
    with pytest.raises(ValueError, match='tolerance expects'): assert_close(wrong, e, **kw)


def test_a_number_is_compared_in_the_results_dtype():
    from minidl.testing import assert_close
    assert_close(torch.tensor(1.0, dtype=torch.float64), 1.0)
    with pytest.raises(AssertionError): assert_close(torch.tensor(1.5, dtype=torch.float64), 1.0)
