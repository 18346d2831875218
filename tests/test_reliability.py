"""Reliability (issue 13) of the core, Linear, Sequential, gradcheck, data and plots: a failed call changes nothing,
saved tensors are version-checked, PyTorch's semantics at the edges (`to`, empty batches, seeds). The notebooks hold
the examples that teach; this file holds the sweeps and the parity with torch.nn."""
import copy

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minidl
from minidl import Linear, ReLU, Sequential, Sigmoid, Tanh
from minidl.nn.module import Module, Parameter
from minidl.experiments.circle_data import circle_dataset, circle_train_test
from minidl.testing import assert_close

F64 = torch.float64


# ---------------------------------------------------------------- Module.to / Parameter.to: torch.nn.Module.to's forms

TO_FORMS = [  # (args, kwargs) accepted by torch.nn.Module.to
    ((torch.float64,), {}),
    (('cpu',), {}),
    (('cpu', torch.float64), {}),
    ((torch.device('cpu'), torch.float16), {}),
    ((torch.zeros(1, dtype=torch.float64),), {}),
    ((), {'dtype': torch.float64}),
    ((), {'device': 'cpu', 'dtype': torch.bfloat16}),
    ((), {'tensor': torch.zeros(1, dtype=torch.float16)}),
    ((torch.float64, True), {}),
    ((torch.float64,), {'non_blocking': False}),
    ((None, torch.float64), {}),
    ((), {'memory_format': torch.channels_last}),
]


@pytest.mark.parametrize('args, kwargs', TO_FORMS)
def test_to_accepts_what_torch_accepts(args, kwargs):
    ref = torch.nn.Linear(3, 2).to(*args, **kwargs)
    ours = Linear(3, 2)
    assert ours.to(*args, **kwargs) is ours
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert (p.value.dtype, p.value.device) == (q.dtype, q.device)
        assert (p.grad.dtype, p.grad.device) == (q.dtype, q.device)
    p = Parameter(torch.ones(2))
    assert p.to(*args, **kwargs) is p and p.value.dtype == ref.weight.dtype and p.grad.dtype == ref.weight.dtype


@pytest.mark.parametrize('args, kwargs, exc, contains', [
    ((torch.int64,), {}, TypeError, 'floating-point dtype'),
    ((), {'dtype': torch.bool}, TypeError, 'got torch.bool'),
    ((), {'dtype': torch.complex64}, TypeError, 'got torch.complex64'),
    (('float64',), {}, TypeError, "got the string 'float64'"),
    ((), {'dtype': 'float32'}, TypeError, 'write torch.float32'),
    ((), {'dtype': float}, TypeError, 'floating-point torch.dtype'),
    (('nodevice',), {}, ValueError, "invalid device 'nodevice'"),
    ((2.0,), {}, TypeError, 'expects a device'),
    ((), {'colour': 'red'}, TypeError, "unexpected keyword argument 'colour'"),
    (('cpu',), {'device': 'cpu'}, TypeError, "two values for 'device'"),
    ((torch.zeros(1),), {'dtype': torch.float64}, TypeError, 'takes no device or dtype'),
    ((), {'non_blocking': 1}, TypeError, 'non_blocking to be True or False'),
    ((), {'memory_format': 'channels_last'}, TypeError, 'torch.memory_format'),
])
def test_to_refuses_clearly_and_changes_nothing(args, kwargs, exc, contains):
    m = Sequential(Linear(3, 2), Tanh())
    before = [(p.value, p.grad) for p in m.parameters()]
    with pytest.raises(exc, match=None) as info: m.to(*args, **kwargs)
    assert contains in str(info.value) and 'Sequential.to' in str(info.value)
    assert [(p.value, p.grad) for p in m.parameters()] == before
    with pytest.raises(exc) as info: Parameter(torch.ones(1)).to(*args, **kwargs)
    assert contains in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the failure of a move to an absent device')
def test_failed_move_changes_nothing():
    m = Sequential(Linear(3, 2), Linear(2, 1))
    x = torch.randn(4, 3)
    m(x)
    before = [(p.value, p.grad) for p in m.parameters()]
    with pytest.raises(RuntimeError, match='could not move'): m.to('cuda')
    assert [(p.value, p.grad) for p in m.parameters()] == before
    assert m.backward(torch.ones(4, 1)).shape == (4, 3)  # the saved state survived the failed move


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_to_cuda_and_back():
    m = Sequential(Linear(3, 2), Tanh()).to('cuda')
    assert all(p.value.is_cuda and p.grad.is_cuda for p in m.parameters())
    x = torch.randn(4, 3, device='cuda')
    m(x)
    with pytest.raises(RuntimeError, match='expects a gradient on cuda'): m[0].backward(torch.ones(4, 2))
    m.to(torch.zeros(1, dtype=F64))  # a CPU float64 tensor: back to the CPU, in float64
    assert all(p.value.device.type == 'cpu' and p.value.dtype == F64 for p in m.parameters())


def test_to_keeps_integer_buffers_and_casts_floating_ones():
    class WithBuffers(Module):
        def __init__(self):
            self.lin = Linear(2, 2)
            self.register_buffer('count', torch.tensor(0))
            self.register_buffer('mean', torch.zeros(2))
            self.register_buffer('absent', None)
    m = WithBuffers().to(torch.float64)
    assert (m.count.dtype, m.mean.dtype, m.absent) == (torch.int64, F64, None)


# ---------------------------------------------------------------- saved state: in-place changes, failed forwards, casts

def test_inplace_change_of_saved_input_is_caught_in_every_shape():
    for shape in [(4, 3), (3,), (2, 4, 3)]:
        lin = Linear(3, 2)
        x = torch.randn(shape)
        y = lin(x)
        x[..., 0] = 1.0  # in place, through a view: the version counter is shared
        with pytest.raises(RuntimeError, match='modified by an inplace operation'): lin.backward(torch.ones_like(y))
        assert lin.weight.grad.abs().sum() == 0


def test_inplace_change_through_a_detached_alias_is_caught():
    lin = Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    lin(x)
    x.detach().add_(1)  # detach shares the version counter
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): lin.backward(torch.ones(4, 2))


def test_keyboard_interrupt_half_way_through_a_sequential():
    class Interrupt(Module):
        armed = False
        def forward(self, x):
            if self.armed: raise KeyboardInterrupt
            self._save_for_backward(x)
            return x
        def backward(self, g, input_grad=True):
            self._saved_tensors()
            return g
    stop = Interrupt()
    net = Sequential(Linear(2, 3), ReLU(), stop, Linear(3, 1), Sigmoid())
    net(torch.rand(5, 2))
    stop.armed = True
    with pytest.raises(KeyboardInterrupt): net(torch.rand(7, 2))
    grads = [p.grad.clone() for p in net.parameters()]
    for g in (torch.ones(7, 1), torch.ones(5, 1)):
        with pytest.raises(RuntimeError, match='its last forward failed .KeyboardInterrupt'): net.backward(g)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads))
    for m in net.modules(): assert m._saved is None


def test_failed_standalone_forward_forgets_previous_input():
    lin = Linear(3, 2)
    lin(torch.randn(4, 3))
    with pytest.raises(TypeError): lin(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match='its last forward failed .TypeError'): lin.backward(torch.ones(4, 2))
    lin(torch.randn(4, 3))
    with pytest.raises(ValueError): lin.forward(torch.randn(4, 2))  # forward called directly, not through __call__
    with pytest.raises(RuntimeError, match='backward called before forward'): lin.backward(torch.ones(4, 2))


def test_cast_after_forward_names_both_sides():
    net = Sequential(Linear(3, 2), Tanh(), Linear(2, 1))
    net(torch.randn(4, 3))
    net.to(torch.float64)
    with pytest.raises(RuntimeError, match=r'torch.float32 on cpu -> torch.float64 on cpu'):
        net.backward(torch.ones(4, 1, dtype=F64))
    net(torch.randn(4, 3, dtype=F64))
    net.to('cpu')  # nothing changes: the saved state is kept
    assert net.backward(torch.ones(4, 1, dtype=F64)).shape == (4, 3)


def test_gradient_of_another_dtype_or_device():
    lin = Linear(3, 2)
    lin(torch.randn(4, 3))
    with pytest.raises(TypeError, match='gradient of dtype torch.float32 .* got torch.float64'):
        lin.backward(torch.ones(4, 2, dtype=F64))
    with pytest.raises(RuntimeError, match='expects a gradient on cpu .* got one on meta'):
        lin.backward(torch.ones(4, 2, device='meta'))
    assert lin.weight.grad.abs().sum() == 0 and lin.bias.grad.abs().sum() == 0


# ---------------------------------------------------------------- empty batches and (*, in) inputs

@pytest.mark.parametrize('shape', [(0, 3), (3,), (2, 0, 3), (2, 4, 3), (1, 1, 1, 3)])
def test_linear_any_leading_shape_matches_torch(shape):
    torch.manual_seed(0)
    lin = Linear(3, 2, dtype=F64)
    ref = torch.nn.Linear(3, 2, dtype=F64)
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(shape, dtype=F64)
    g = torch.randn(shape[:-1] + (2,), dtype=F64)
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    yr.backward(g)
    y, gx = lin(x), lin.backward(g)
    rows = max(math.prod(shape[:-1]), 1)
    assert_close(y, yr.detach(), n=3)      # minidl.testing's policy: sums over the 3 inputs
    assert_close(gx, xr.grad, n=2)         # over the 2 outputs
    assert_close(lin.weight.grad, ref.weight.grad, n=rows)  # over every leading dimension
    assert_close(lin.bias.grad, ref.bias.grad, n=rows)
    assert lin.backward(g, input_grad=False) is None


@pytest.mark.parametrize('act, fn', [(ReLU, torch.relu), (Tanh, torch.tanh), (Sigmoid, torch.sigmoid)])
def test_activations_on_empty_batches(act, fn):
    x = torch.randn(0, 4, dtype=F64)
    m = act()
    assert m(x).shape == fn(x).shape == (0, 4)
    assert m.backward(torch.zeros(0, 4, dtype=F64)).shape == (0, 4)


def test_mlp_on_an_empty_batch():
    net = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid()).to(F64)
    y = net(torch.zeros(0, 2, dtype=F64))
    assert y.shape == (0, 1)
    assert net.backward(torch.zeros(0, 1, dtype=F64)).shape == (0, 2)
    assert all(p.grad.abs().sum() == 0 for p in net.parameters())


# ---------------------------------------------------------------- gradcheck

def test_gradcheck_on_non_contiguous_inputs_and_parameters():
    lin = Linear(4, 3)
    lin.weight.value = torch.randn(4, 3).t()  # a non-contiguous parameter too
    for x in (torch.randn(4, 5, dtype=F64).t(), torch.randn(5, 8, dtype=F64)[:, ::2], torch.randn(5, 4).expand(2, 5, 4)):
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


# ---------------------------------------------------------------- seeds

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
