"""gradcheck: its settings, edge inputs, and that it leaves the module and the input untouched."""
import math

import pytest
import torch
from helpers import trained_linear

import minidl
from minidl import Dropout, Linear, LossBCE, LossMSE, ReLU, Sequential, Sigmoid, Tanh, gradcheck
from minidl.testing import assert_clear_error, assert_unchanged, snapshot

F64 = torch.float64


@pytest.mark.parametrize('kw, exc, contains', [
    (dict(eps=0), ValueError, 'eps'), (dict(eps=math.nan), ValueError, 'eps'), (dict(eps=-1e-6), ValueError, 'eps'),
    (dict(atol=math.nan), ValueError, 'atol'), (dict(rtol=-1.0), ValueError, 'rtol'),
    (dict(seed=2**70), ValueError, 'seed'), (dict(seed=True), TypeError, 'seed'), (dict(seed=1.5), TypeError, 'seed'),
])
def test_gradcheck_refuses_bad_settings(kw, exc, contains):
    assert_clear_error(exc, [contains, 'gradcheck'], gradcheck, Tanh(), torch.randn(3, dtype=F64), **kw)


def test_gradcheck_says_when_the_module_is_random():
    assert_clear_error(ValueError, ['random', '.eval()'], gradcheck, Dropout(0.5), torch.randn(4, 3, dtype=F64))
    assert gradcheck(Dropout(0.5).eval(), torch.randn(4, 3, dtype=F64))


def test_gradcheck_extreme_valid_seeds():
    for seed in (0, -2**63, 2**64 - 1): assert gradcheck(Tanh(), torch.randn(3, dtype=F64), seed=seed)


@pytest.mark.parametrize(
    'x', [torch.randn(3, 4).t(), torch.randn(0, 3), torch.tensor(0.3), torch.randn(3, requires_grad=True)]
)
def test_gradcheck_edge_inputs(x):
    m = Linear(x.shape[-1], 2) if x.dim() == 2 else Tanh()
    assert gradcheck(m, x)


def test_gradcheck_leaves_module_and_input_untouched():
    m = trained_linear()
    before = snapshot(m)
    x = torch.randn(4, 3); x0 = x.clone()
    assert gradcheck(m, x)
    assert_unchanged(before, snapshot(m)); assert torch.equal(x, x0)


def test_gradcheck_on_non_contiguous_inputs_and_parameters():
    lin = Linear(4, 3)
    lin.weight.value = torch.randn(4, 3).t()  # a non-contiguous parameter too
    for x in (
        torch.randn(4, 5, dtype=F64).t(),
        torch.randn(5, 8, dtype=F64)[:, ::2],
        torch.randn(5, 4).expand(2, 5, 4),
    ):
        assert minidl.gradcheck(lin, x)


def test_gradcheck_catches_a_backward_that_accumulates_only_part():
    class HalfAccumulates(Linear):
        def backward(self, g, input_grad=True):
            self.bias.grad.zero_()  # overwrites the bias gradient only
            return super().backward(g, input_grad)
    with pytest.raises(AssertionError, match=r'parameter 1 \(3,\): two backward passes') as info:
        minidl.gradcheck(HalfAccumulates(4, 3), torch.randn(5, 4))
    assert 'parameter 0' not in str(info.value)
    assert minidl.gradcheck(HalfAccumulates(4, 3), torch.randn(5, 4), raise_exception=False) is False


def test_gradcheck_leaves_integer_targets_alone():
    seen = []
    class Picks:
        def __call__(self, p, t): return self.forward(p, t)
        def forward(self, p, t):
            seen.append(t.dtype)
            self.p, self.t = p, t
            return p.gather(1, t[:, None]).sum()
        def backward(self): return torch.zeros_like(self.p).scatter_(1, self.t[:, None], 1.0)
    for dtype in (torch.int64, torch.int32):
        assert minidl.gradcheck(Picks(), torch.randn(4, 3), torch.tensor([0, 2, 1, 1], dtype=dtype))
    assert set(seen) == {torch.int64, torch.int32}  # every call saw the target's own dtype


def test_gradcheck_refuses_what_is_not_a_module():
    for bad, contains in [(Linear, 'got the class Linear'), (print, 'got builtin_function_or_method'),
                          (torch.nn.Linear(2, 2), 'got Linear: it has no backward method'), (None, 'got NoneType')]:
        with pytest.raises(TypeError, match=None) as info: minidl.gradcheck(bad, torch.randn(3, 2))
        assert contains in str(info.value)


@pytest.mark.parity
def test_gradcheck_on_every_module(gen):
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    for m in [Linear(4, 3), ReLU(), Tanh(), Sigmoid(), Sequential(Linear(4, 5), Tanh(), Linear(5, 2), Sigmoid())]:
        assert minidl.gradcheck(m, x)
    p = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    assert minidl.gradcheck(LossMSE(), p, torch.rand(6, 4, generator=gen, dtype=torch.float64))
    assert minidl.gradcheck(LossBCE(), p, torch.rand(6, 4, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize('scale', [1, 255, 1000])
def test_a_right_backward_passes_whatever_the_size_of_its_outputs(scale):
    "the finite difference rounds at eps64 times the size of the output's terms: the tolerance grows with it"
    failures = 0
    for seed in range(10):
        torch.manual_seed(seed)
        failures += not gradcheck(Linear(16, 8), torch.rand(8, 16, dtype=torch.float64) * scale, raise_exception=False)
    assert failures == 0


def test_a_gradient_off_by_one_in_ten_thousand_fails_at_a_large_scale_too():
    class Off(Linear):
        def backward(self, g, input_grad=True):
            gx = super().backward(g, input_grad)
            self.weight.grad.mul_(1.0001)
            return gx
    torch.manual_seed(0)
    assert not gradcheck(Off(16, 8), torch.rand(8, 16, dtype=torch.float64) * 255, raise_exception=False)


@pytest.mark.parametrize('n', [1, 3])
def test_gradcheck_refuses_unreduced_losses_clearly(n):
    "One loss per element, even one: backward needs an upstream gradient; the same clear message for every size."
    assert_clear_error(TypeError, ["expected a scalar tensor", "reduction='none'"],
                       gradcheck, LossMSE(reduction='none'), torch.randn(n), torch.randn(n))


@pytest.mark.parametrize('make, strides', [
    (lambda: torch.randn(4, 6)[:, ::2], (6, 2)),       # sliced: kept
    (lambda: torch.randn(3, 4).t(), (1, 4)),           # transposed: kept
    (lambda: torch.randn(2, 3, 4).permute(2, 0, 1)[::2], (2, 12, 4)),
    (lambda: torch.randn(4, 1).expand(4, 3), (3, 1)),  # expanded: contiguous (elements are perturbed one at a time)
])
def test_gradcheck_keeps_the_input_strides(make, strides):
    seen = []

    class Noting(Linear):
        def forward(self, x):
            seen.append(x.stride())
            return super().forward(x)
    x = make()
    assert gradcheck(Noting(x.shape[-1], 2), x)
    assert seen[0] == strides


@pytest.mark.parametrize('case', ['nan input', 'inf input', 'inf target', 'nan parameter'])
def test_gradcheck_says_when_a_value_is_not_finite(case):
    "A NaN or an infinity is named before anything is computed (finite differences there would only report NaN)"
    x = torch.randn(2, 3, dtype=F64)
    if case == 'nan input': x[0, 1] = math.nan; args, where = (Linear(3, 2), x), 'the input holds 1 NaN and 0 infinite'
    elif case == 'inf input': x[1, 2] = math.inf; args, where = (ReLU(), x), 'the input holds 0 NaN and 1 infinite'
    elif case == 'inf target':
        args, where = (LossMSE(), x, torch.full((2, 3), math.inf)), 'the target holds 0 NaN and 6 infinite'
    else:
        m = Linear(3, 2); m.weight.value[0, 0] = math.nan
        args, where = (m, x), 'parameter 0 (2, 3) holds 1 NaN'
    kept = [a for a in args if isinstance(a, torch.Tensor) or hasattr(a, 'buffers')]  # (a loss holds nothing)
    before = snapshot(*kept)
    assert_clear_error(ValueError, ['gradcheck expects finite values', where], gradcheck, *args)
    assert_unchanged(before, snapshot(*kept))


@pytest.mark.parametrize('scale', [1.0, 1e2, 1e4])
def test_a_loss_whose_backward_forgets_a_factor_is_caught_at_any_size_of_the_predictions(scale):
    ("Large predictions close to their targets: the tolerance grows with what the finite difference really rounds "
     "(a derivative times its element), not with the elements themselves; the correct loss still passes.")
    from minidl import LossMSE
    class HalfMSE(LossMSE):
        def backward(self, grad_output=None):
            (d,) = self._saved
            return d / d.numel()  # the factor 2 forgotten
    gen = torch.Generator().manual_seed(0)
    target = scale * (1 + torch.rand(10, 10, generator=gen, dtype=torch.float64))
    pred = target + 1e-3 * torch.randn(10, 10, generator=gen, dtype=torch.float64)
    assert gradcheck(LossMSE(), pred, target)
    with pytest.raises(AssertionError, match='input: max abs error'): gradcheck(HalfMSE(), pred, target)


def test_a_module_that_draws_random_numbers_is_refused_whatever_its_masks():
    "Two forwards of Dropout(0.1) on two elements often agree: drawing random numbers is what tells it, every time."
    for seed in range(20):
        torch.manual_seed(seed)
        with pytest.raises(ValueError, match='it is random'):
            gradcheck(Dropout(0.1), torch.randn(2, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)  # its own generator too
    with pytest.raises(ValueError, match='it is random'):
        gradcheck(Dropout(0.1, generator=gen), torch.randn(2, dtype=torch.float64))
    assert gradcheck(Dropout(0.1).eval(), torch.randn(2, dtype=torch.float64))
