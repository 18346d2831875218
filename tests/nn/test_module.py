"""Parameter and Module: state dicts, buffers, moves and casts, traversal, saved tensors, the torch habits of
Parameter, and forward/backward hooks against torch.nn's."""
import copy
import pickle
import warnings

import pytest
import torch
from helpers import SMALL_PROGRAM, copy_into_torch

import minidl as M
from minidl import (
    BatchNorm1d,
    Conv2d,
    LayerNorm,
    Linear,
    LossMSE,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from minidl.testing import assert_clear_error, assert_close, assert_unchanged, snapshot


def test_register_buffer_refuses_to_shadow_a_parameter():
    m = Linear(3, 2)
    w = m.weight
    assert_clear_error(KeyError, "'weight' already exists", m.register_buffer, 'weight', torch.zeros(1))
    assert m.weight is w and m.buffers() == []


def test_register_buffer_again_replaces_the_buffer():
    bn = BatchNorm1d(3)
    bn.register_buffer('running_mean', torch.ones(3))  # re-registering a buffer is allowed (as torch)
    assert torch.equal(bn.running_mean, torch.ones(3))


def test_load_state_dict_failure_changes_nothing():
    m = Sequential(Linear(3, 4), BatchNorm1d(4), Linear(4, 1))
    before = snapshot(m)
    sd = {k: v.clone() + 1 for k, v in m.state_dict().items()}
    sd['2.weight'] = torch.zeros(2, 2)
    assert_clear_error(RuntimeError, ['2.weight', 'nothing was loaded'], m.load_state_dict, sd)
    assert_unchanged(before, snapshot(m))
    assert_clear_error(TypeError, 'dict of tensors', m.load_state_dict, [('0.weight', torch.zeros(4, 3))])


@pytest.mark.parametrize('bad, contains', [(torch.ones(1, device='meta'), 'cannot be copied'),
                                            (torch.ones(1, dtype=torch.complex64), 'complex')])
def test_load_state_dict_value_that_cannot_be_copied_changes_nothing(bad, contains):
    m = Sequential(Linear(3, 4), BatchNorm1d(4), Linear(4, 1))
    before = snapshot(m)
    sd = {k: v.clone() + 1 for k, v in m.state_dict().items()}
    sd['2.bias'] = bad  # the last key: every other one would have been copied already
    assert_clear_error(RuntimeError, ['2.bias', contains, 'nothing was loaded'], m.load_state_dict, sd)
    assert_unchanged(before, snapshot(m))


@pytest.mark.parametrize('args', [('float64',), ('nodevice',), (torch.int64,)])
def test_module_to_bad_arguments_change_nothing(args):
    m = Sequential(Linear(3, 2), BatchNorm1d(2))
    before = snapshot(m)
    with pytest.raises((TypeError, ValueError)) as info: m.to(*args)
    assert 'Sequential.to' in str(info.value)
    assert_unchanged(before, snapshot(m))


def test_train_mode_is_a_bool():
    assert_clear_error(TypeError, 'True or False', Linear(2, 2).train, 1)


F64 = torch.float64


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


def test_parameter_owns_expanded_memory_and_steps():
    b = torch.zeros(1).expand(4)
    lin = M.Linear(3, 4)
    lin.bias = M.Parameter(b)
    assert lin.bias.value.stride() == (1,) and lin.bias.value.data_ptr() != b.data_ptr()
    w = torch.randn(4, 3)
    # not copied otherwise
    assert M.Parameter(w).value.data_ptr() == w.data_ptr() and M.Parameter(w.t()).value.data_ptr() == w.data_ptr()
    opt = M.SGD(lin.parameters(), lr=0.1)
    loss = M.LossMSE(); loss(lin(torch.randn(5, 3)), torch.zeros(5, 4)); lin.backward(loss.backward())
    opt.step()  # every parameter updated in place, the bias included
    assert not torch.equal(lin.bias.value, torch.zeros(4)) and torch.equal(b, torch.zeros(4))
    sd = {k: v.clone() for k, v in lin.state_dict().items()}
    sd['bias'] = torch.ones(1).expand(4)                    # an expanded source loads (copied into owned memory)
    lin.load_state_dict(sd); assert torch.equal(lin.bias.value, torch.ones(4))


def test_load_state_dict_refuses_a_shared_memory_target_up_front():
    lin = M.Linear(3, 4)
    sd = {k: v.clone() + 1 for k, v in lin.state_dict().items()}
    lin.bias.value = torch.zeros(1).expand(4)  # replaced by hand
    w = lin.weight.value.clone()
    with pytest.raises(RuntimeError, match=r"bias: the model's tensor has elements that share memory "
                                           r".*nothing was loaded"):
        lin.load_state_dict(sd)
    assert torch.equal(lin.weight.value, w)   # the weight, before it in order, was not loaded either


@pytest.mark.parity
def test_parameter_answers_tensor_questions_like_torch():
    v = torch.randn(3, 4, dtype=F64)
    p, q = Parameter(v.clone()), torch.nn.Parameter(v.clone())
    assert not isinstance(p, torch.Tensor)
    for f in (
        lambda t: t.numel(),
        lambda t: t.shape,
        lambda t: t.ndim,
        lambda t: t.dim(),
        lambda t: t.size(),
        lambda t: t.size(1),
        lambda t: t.size(-1),
        lambda t: t.dtype,
        lambda t: t.device,
        lambda t: t.requires_grad,
        lambda t: t.is_cuda,
    ):
        assert f(p) == f(q)
    assert torch.equal(p.data, q.data) and p.data is p.value
    assert torch.equal(p.detach(), q.detach())
    assert sum(t.numel() for t in Linear(4, 3).parameters()) == sum(
        t.numel() for t in torch.nn.Linear(4, 3).parameters()
    )


@pytest.mark.parity
def test_parameter_data_assignment():
    p = Parameter(torch.zeros(2, 3)); grad = p.grad
    new = torch.ones(2, 3)
    p.data = new
    # shared, as torch's `p.data = t`; the gradient is kept
    assert p.value.data_ptr() == new.data_ptr() and p.grad is grad
    new += 1; assert torch.equal(p.value, new)
    for bad, what in [(torch.ones(3, 2), 'shape (2, 3)'), (torch.ones(2, 3, dtype=F64), 'torch.float32 on cpu'),
                      ([[1.0]], 'got list')]:
        with pytest.raises(ValueError, match='Parameter.data = t expects') as e: p.data = bad
        assert what in str(e.value)
        assert p.value.data_ptr() == new.data_ptr()  # a refused assignment changes nothing
    p.data.copy_(torch.full((2, 3), 2.0))
    assert torch.equal(p.value, torch.full((2, 3), 2.0))


@pytest.mark.parity
def test_parameter_requires_grad():
    p = Parameter(torch.zeros(2))
    assert p.requires_grad is True and p.requires_grad_() is p and p.requires_grad_(True) is p
    with pytest.raises(NotImplementedError, match='leave them out of the optimizer'): p.requires_grad_(False)


class Block(Module):
    "A composite module with named children (the torch way of writing a model)."
    def __init__(self):
        self.fc = Linear(3, 4); self.act = Tanh(); self.out = Sequential(Linear(4, 2), Sigmoid())
    def forward(self, x): return self.out(self.act(self.fc(x)))
    def backward(self, g, input_grad=True): return self.fc.backward(self.act.backward(self.out.backward(g)), input_grad)


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4); self.act = torch.nn.Tanh()
        self.out = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Sigmoid())
    def forward(self, x): return self.out(self.act(self.fc(x)))


@pytest.mark.parity
def test_module_traversal_like_torch():
    ours, ref = Block(), TorchBlock()
    assert [k for k, _ in ours.named_children()] == [k for k, _ in ref.named_children()]
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in ref.children()]
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in ref.named_modules()]
    assert [type(m).__name__ for m in ours.modules()][1:] == [type(m).__name__ for m in ref.modules()][1:]
    seen, seen_ref = [], []
    assert ours.apply(lambda m: seen.append(type(m).__name__)) is ours
    ref.apply(lambda m: seen_ref.append(type(m).__name__))
    assert seen[:-1] == seen_ref[:-1] and seen[-1] == 'Block'  # children first, then the parent


@pytest.mark.parity
def test_module_apply_initialises_like_torch():
    def init(m):
        if isinstance(m, (Linear, torch.nn.Linear)):
            w = m.weight.value if isinstance(m, Linear) else m.weight.data
            w.fill_(0.5)
    ours, ref = Block().double(), TorchBlock().double()
    copy_into_torch(ours, ref)
    ours.apply(init); ref.apply(init)
    x = torch.randn(5, 3, dtype=F64)
    assert_close(ours(x), ref(x), **SMALL_PROGRAM)


@pytest.mark.parity
@pytest.mark.parametrize('method, dtype', [('double', torch.float64), ('float', torch.float32), ('half', torch.float16),
                                           ('bfloat16', torch.bfloat16)])
def test_module_casts(method, dtype):
    ours, ref = Block(), TorchBlock()
    assert getattr(ours, method)() is ours
    getattr(ref, method)()
    assert [p.dtype for p in ours.parameters()] == [p.dtype for p in ref.parameters()] == [dtype] * 4
    assert all(p.grad.dtype == dtype for p in ours.parameters())


@pytest.mark.parity
def test_module_requires_grad_and_zero_grad():
    m = Block()
    assert m.requires_grad_() is m and m.requires_grad_(True) is m
    with pytest.raises(NotImplementedError, match='minidl has no autograd.*leave them out of the optimizer'):
        m.requires_grad_(False)
    with pytest.raises(TypeError, match='True or False'): m.requires_grad_(0)
    for flag in (True, False):
        for p in m.parameters(): p.grad += 1
        m.zero_grad(set_to_none=flag)
        assert all(isinstance(p.grad, torch.Tensor) and not p.grad.any() for p in m.parameters())
    with pytest.raises(TypeError, match='set_to_none to be True or False'): m.zero_grad(set_to_none=None)


@pytest.mark.parity
def test_forward_only_module_points_to_the_page():
    class Net(Module):
        def __init__(self): self.fc = Linear(2, 1)
        def forward(self, x): return self.fc(x)
    net = Net(); net(torch.randn(3, 2))
    with pytest.raises(NotImplementedError) as e: net.backward(torch.ones(3, 1))
    msg = str(e.value)
    for frag in ('Net must implement backward', 'no autograd', 'Writing your own module', 'coming_from_pytorch.html'):
        assert frag in msg, msg


def close(a, b, rtol=1e-12):
    "float64 results of the same small products: a few ulps times the reduction length; floor scaled to the values"
    assert (a is None) == (b is None), (a, b)
    if a is None: return
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-13 * max(b.abs().max().item(), 1e-300))


def nets(seed=0):
    "A minidl network with a nested container and the torch.nn network with the same weights."
    torch.manual_seed(seed)
    ours = Sequential(Linear(6, 5), Tanh(), Sequential(Linear(5, 4), ReLU()), Linear(4, 3)).to(torch.float64)
    ref = torch.nn.Sequential(
        torch.nn.Linear(6, 5),
        torch.nn.Tanh(),
        torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU()),
        torch.nn.Linear(4, 3),
    ).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def record(model, log, backward=True, pre=False):
    "Register hooks on every module that log (kind, module name, tensors); returns the handles."
    hs = []
    for name, m in model.named_modules():
        hs.append(
            m.register_forward_hook(
                lambda mod, args, out, n=name: log.append(('fwd', n, args[0].detach(), out.detach()))
            )
        )
        if pre:
            hs.append(
                m.register_forward_pre_hook(
                    lambda mod, args, n=name: log.append(('pre', n, args[0].detach()))
                )
            )
        if backward:
            hs.append(m.register_full_backward_hook(
                lambda mod, gi, go, n=name: log.append(('bwd', n, gi[0], go[0]))))
            if pre: hs.append(m.register_full_backward_pre_hook(lambda mod, go, n=name: log.append(('bpre', n, go[0]))))
    return hs


def compare(log, ref_log):
    assert [e[:2] for e in log] == [e[:2] for e in ref_log]
    for e, r in zip(log, ref_log):
        for a, b in zip(e[2:], r[2:]): close(a, None if b is None else b.detach())


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)


def test_same_calls_same_tensors_as_torch():
    ours, ref = nets()
    x, g = data()
    log, ref_log = [], []
    record(ours, log, pre=True); record(ref, ref_log, pre=True)
    ours(x); ours.backward(g)
    xr = x.clone().requires_grad_()
    ref(xr).backward(g)
    assert len(log) == 4 * 7
    compare(log, ref_log)
    # the module's own gradients are those of torch too (hooks change nothing)
    for (_, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)


@pytest.mark.filterwarnings('ignore:Full backward hook is firing')
def test_input_grad_false_gives_none_like_an_input_without_grad():
    "torch passes (None,) as grad_input for an input that does not require grad; minidl for input_grad=False."
    ours, ref = nets()
    x, g = data()
    log, ref_log = [], []
    record(ours, log); record(ref, ref_log)
    ours(x); ours.backward(g, input_grad=False)
    ref(x).backward(g)
    by_name = lambda L: {(e[0], e[1]): e[2:] for e in L}
    mine, theirs = by_name(log), by_name(ref_log)
    assert mine.keys() == theirs.keys()
    for k in mine:
        for a, b in zip(mine[k], theirs[k]): close(a, b)
    assert mine[('bwd', '0')][0] is None and mine[('bwd', '')][0] is None


def test_removed_hooks_stop_firing_and_cost_nothing():
    ours, ref = nets()
    x, g = data()
    log, ref_log = [], []
    hs, rhs = record(ours, log), record(ref, ref_log)
    for h in hs[::3]: h.remove()
    for h in rhs[::3]: h.remove()
    ours(x); ours.backward(g)
    ref(x.clone().requires_grad_()).backward(g)
    compare(log, ref_log)
    for h in hs: h.remove()
    for m in ours.modules():  # no hook left: the instance has no forward/backward of its own, only the class's
        assert 'forward' not in vars(m) and 'backward' not in vars(m)
        assert type(m).forward is Module.forward or m.forward.__func__ is type(m).forward


def test_replacing_outputs_and_grad_inputs_like_torch():
    "A shift of the output (identity Jacobian: exact without autograd) and a scaled grad_input, in both libraries."
    ours, ref = nets()
    x, g = data()
    for net in (ours, ref):
        net[1].register_forward_hook(lambda m, a, out: out + 0.5)
        net[2][0].register_full_backward_hook(lambda m, gi, go: (gi[0] * 3,))
        net[3].register_full_backward_pre_hook(lambda m, go: (go[0] * -2,))
    y = ours(x); gx = ours.backward(g)
    xr = x.clone().requires_grad_()
    yr = ref(xr); yr.backward(g)
    close(y, yr.detach())
    close(gx, xr.grad)
    for (_, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)


def test_hooks_fire_in_a_user_module_that_calls_its_children():
    "The pattern containers follow: child(x) / child.forward(x) forward, child.backward(g) backward."
    class TwoPaths(Module):  # y = a(x) + b(x): the input fans out, its gradients add up
        def __init__(self): self.a, self.b = Linear(3, 2).to(torch.float64), Linear(3, 2).to(torch.float64)
        def forward(self, x): return self.a(x) + self.b.forward(x)
        def backward(self, g, input_grad=True):
            ga = self.a.backward(g, input_grad)
            gb = self.b.backward(g, input_grad)
            return ga + gb if input_grad else None

    class TorchTwoPaths(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
        def forward(self, x): return self.a(x) + self.b(x)

    torch.manual_seed(0)
    ours, ref = TwoPaths(), TorchTwoPaths()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64); g = torch.randn(4, 2, dtype=torch.float64)
    log, ref_log = [], []
    record(ours, log); record(ref, ref_log)
    ours(x); ours.backward(g)
    ref(x.clone().requires_grad_()).backward(g)
    fw = lambda L: [e for e in L if e[0] == 'fwd']
    compare(fw(log), fw(ref_log))
    bw = lambda L: {e[1]: e[2:] for e in L if e[0] == 'bwd'}  # torch runs the two branches in its own order
    assert bw(log).keys() == bw(ref_log).keys()
    for k, v in bw(log).items():
        for a, b in zip(v, bw(ref_log)[k]): close(a, b)
    assert [e[1] for e in log if e[0] == 'bwd'][-1] == ''  # the container's hook comes after its children's


def test_forward_hook_that_raises_forgets_the_saved_state():
    ours, _ = nets()
    x, g = data()
    ours(x); ours.backward(g)
    before = [p.grad.clone() for p in ours.parameters()]
    h = ours[2][0].register_forward_hook(lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        ours(x)
    with pytest.raises(RuntimeError, match='its last forward failed'):
        ours.backward(g)
    for p, b in zip(ours.parameters(), before): assert torch.equal(p.grad, b)  # the failed backward added nothing
    h.remove()
    ours.zero_grad(); ours(x); ours.backward(g)
    for p, b in zip(ours.parameters(), before): close(p.grad, b)


def test_backward_hook_that_raises_keeps_the_hooks_and_a_rerun_is_clean():
    ours, ref = nets()
    x, g = data()
    calls = []
    def flaky(m, gi, go):
        calls.append(1)
        if len(calls) == 1: raise ValueError('flaky hook')
    h = ours[2].register_full_backward_hook(flaky)
    ours(x)
    with pytest.raises(ValueError, match='flaky hook'):
        ours.backward(g)
    assert list(vars(ours[2])['_backward_hooks'].values()) == [flaky]
    ours(x); ours.backward(g)  # the failed call left every gradient as it was: a retry counts the batch once
    ref(x).backward(g)
    for (_, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)
    h.remove()
    assert 'backward' not in vars(ours[2])


def test_bad_replacements_change_nothing_downstream():
    ours, _ = nets()
    x, g = data()
    ours(x)
    h = ours[3].register_full_backward_hook(lambda m, gi, go: (gi[0][:1],))
    with pytest.raises(RuntimeError, match='expected a tensor of shape'):
        ours.backward(g)
    h.remove()
    h = ours[0].register_full_backward_hook(lambda m, gi, go: (torch.zeros(7, 6, dtype=torch.float64),))
    ours(x)
    with pytest.raises(RuntimeError, match='a tensor for a grad_input that is None'):
        ours.backward(g, input_grad=False)
    h.remove()


def test_hooks_registered_or_removed_by_a_hook_do_not_disturb_the_running_loop():
    m = Tanh()
    order = []
    handles = {}
    def first(mod, args, out):
        order.append('first'); handles['first'].remove()
        handles['late'] = mod.register_forward_hook(lambda *a: order.append('late'))
    handles['first'] = m.register_forward_hook(first)
    handles['second'] = m.register_forward_hook(lambda *a: order.append('second'))
    m(torch.ones(2)); m(torch.ones(2))
    assert order == ['first', 'second', 'second', 'late']


def test_copy_and_pickle_keep_the_hooks():
    m = Sequential(Linear(2, 2), Tanh())
    m[1].register_forward_hook(_double)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        x = torch.ones(1, 2)
        torch.testing.assert_close(c(x), 2 * torch.tanh(c[0](x)), rtol=0, atol=0)  # the same ops in the same order


def _double(m, args, out): return 2 * out


def test_training_with_a_hook_is_unchanged():
    "An observing hook (returns None) changes no number of a training step."
    a, _ = nets(); b, _ = nets()
    x, g = data()
    seen = []
    for m in b.modules(): m.register_forward_hook(lambda mod, args, out: seen.append(out.std()))
    loss = LossMSE()
    for net in (a, b):
        net.zero_grad(); loss(net(x), g); net.backward(loss.backward(), input_grad=False)
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p.grad, q.grad)  # same ops, same order
    assert len(seen) == 7


def test_hooks_fire_inside_residual_and_transformer_block():
    ("Residual and TransformerBlock call their children through the entry points: every child fires, "
     "backward in reverse.")
    from minidl import Residual, TransformerBlock
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, dim_feedforward=16, dtype=torch.float64)
    model = Residual(block)
    fwd, bwd = [], []
    for name, m in model.named_modules():
        if not name: continue
        m.register_forward_hook(lambda mod, args, out, name=name: fwd.append(name))
        m.register_full_backward_hook(lambda mod, gi, go, name=name: bwd.append(name))
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y = model(x)
    gx = model.backward(torch.ones_like(y))
    children = [n for n, _ in model.named_modules() if n]
    assert set(fwd) == set(children) and fwd[-1] == 'block'  # the block's hook fires after all of its children's
    assert bwd[-1] == 'block' and set(bwd) == set(children)
    assert (
        fwd.index('block.norm1')
        < fwd.index('block.self_attn')
        < fwd.index('block.norm2')
        < fwd.index('block.linear2')
    )
    assert (
        bwd.index('block.linear2')
        < bwd.index('block.linear1')
        < bwd.index('block.self_attn')
        < bwd.index('block.norm1')
    )
    assert gx.shape == x.shape


@pytest.mark.parametrize('copier', [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copied_module_checks_everything_at_its_first_call(copier, monkeypatch):
    "A copy leaves the keys of its checks behind: in another process the edit counter could meet them by chance."
    from minidl.nn import module as module_module
    model = Sequential(Linear(3, 4, dtype=torch.float64), ReLU(), Linear(4, 2, dtype=torch.float64))
    x = torch.randn(5, 3, dtype=torch.float64)
    model.backward(torch.ones_like(model(x))); model(x)  # the checks' keys are recorded, the fast path learned
    recorded = Parameter._edits
    c = copier(model)
    assert not any(module_module._CHECK_KEYS & vars(m).keys() for m in (c, *c.layers))
    assert torch.equal(c(x), model(x))
    c.layers[0].weight.value = torch.zeros(4, 2, dtype=torch.float64)   # a wrong shape...
    monkeypatch.setattr(Parameter, '_edits', recorded)                 # ...where the counter meets the recorded value
    with pytest.raises(RuntimeError, match=r"Linear's weight has shape \(4, 2\), expected \(4, 3\)"): c(x)


@pytest.mark.parametrize('make, name', [
    (lambda: Linear(3, 4), 'bias'), (lambda: LayerNorm(4), 'bias'), (lambda: Conv2d(1, 2, 3), 'bias'),
])
def test_a_gradient_reshaped_in_place_is_refused_before_any_accumulation_once_warm(make, name):
    "the checks cached on Parameter._edits cannot see an in-place reshape: each backward compares its `.grad`s' shapes"
    from minidl.testing import assert_unchanged, snapshot
    m = make()
    x = torch.randn(2, 1, 5, 5) if isinstance(m, Conv2d) else torch.randn(5, 3 if isinstance(m, Linear) else 4)
    for _ in range(2): y = m(x); m.backward(torch.ones_like(y))
    m.zero_grad(); getattr(m, name).grad.unsqueeze_(0)
    y = m(x)
    before = snapshot(m)
    with pytest.raises(RuntimeError, match=f'{name}.grad has shape .* nothing was accumulated'):
        m.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(m))


@pytest.mark.parametrize('kind', ['expanded', 'requires_grad', 'inference'])
@pytest.mark.parametrize('make', [
    lambda: Linear(4, 3), lambda: LayerNorm(4), lambda: Conv2d(1, 4, 3), lambda: BatchNorm1d(4),
])
def test_a_gradient_that_cannot_be_added_to_in_place_is_refused_before_any_accumulation(make, kind):
    "an expanded `.grad` would silently sum every element's gradient into one number; the others fail part-way"
    m = make()
    x = torch.randn(2, 1, 5, 5) if isinstance(m, Conv2d) else torch.randn(6, 4)
    y = m(x)
    n = m.bias.value.numel()
    if kind == 'expanded': m.bias.grad = torch.zeros(1).expand(n)
    elif kind == 'requires_grad': m.bias.grad = torch.zeros(n, requires_grad=True)
    else:
        with torch.inference_mode(): m.bias.grad = torch.zeros(n)
    before = snapshot(m)
    with pytest.raises(RuntimeError, match='bias.grad .* cannot be added to it in place; nothing was accumulated'):
        m.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(m))


SETTINGS_CASES = [  # (layer, setting, a refused value and the error, a valid other value)
    (lambda: M.Dropout(0.3), 'p', 1.5, ValueError, r'a probability p in \[0, 1\], got 1.5', 0.5),
    (lambda: M.BatchNorm1d(4), 'momentum', 5.0, ValueError, r'momentum in \[0, 1\] or None', None),
    (lambda: M.BatchNorm1d(4), 'eps', -1.0, ValueError, 'eps to be a number >= 0', 1e-3),
    (lambda: M.LayerNorm(4), 'eps', -1.0, ValueError, 'eps to be a finite number > 0', 1e-3),
    (lambda: M.LeakyReLU(0.2), 'negative_slope', 'x', TypeError, 'negative_slope to be a number', 0.1),
    (lambda: M.GELU(), 'approximate', 'foo', ValueError, "approximate to be 'none' or 'tanh', got 'foo'", 'tanh'),
]


@pytest.mark.parametrize('make, name, bad, exc, msg, other', SETTINGS_CASES)
def test_a_setting_written_after_construction_is_checked_and_a_change_needs_a_new_forward(make, name, bad, exc, msg,
                                                                                          other):
    "as the constructor checks it; the last forward used the old value, so its backward would not match the new one"
    m = make()
    old = getattr(m, name)
    with pytest.raises(exc, match=msg): setattr(m, name, bad)
    assert getattr(m, name) == old  # a refused value changes nothing
    x = torch.randn(6, 4)
    y = m(x)
    setattr(m, name, old)  # the same value: nothing to forget
    m.backward(torch.ones_like(y))
    y = m(x)
    setattr(m, name, other)
    assert getattr(m, name) == other
    with pytest.raises(RuntimeError, match=f'its {name} was changed after its forward'): m.backward(torch.ones_like(y))
    y = m(x); m.backward(torch.ones_like(y))  # a new forward: fine


@pytest.mark.parametrize('make, names', [
    (lambda: M.Conv2d(3, 2, 3), ('kernel_size', 'stride', 'padding', 'dilation', 'padding_mode')),
    (lambda: M.MaxPool2d(2), ('kernel_size', 'stride', 'padding')), (lambda: M.AvgPool2d(2), ('kernel_size', 'stride')),
])
def test_geometry_fixed_at_construction_is_refused_when_written(make, names):
    "the layer computed its windows (and a convolution its padding and weight) from them: a new value would be ignored"
    m = make()
    for name in names:
        old = getattr(m, name)
        with pytest.raises(AttributeError, match=rf'{type(m).__name__}.{name} is fixed when the layer is made'):
            setattr(m, name, 2)
        assert getattr(m, name) == old


@pytest.mark.parametrize('where', ['module', 'sequential'])
def test_a_backward_hook_that_raises_leaves_every_gradient_as_it_was(where):
    "full backward hooks run after the maths has accumulated: a retry after a failed hook must not double gradients"
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64)
    m = Sequential(Linear(3, 4), ReLU(), Linear(4, 2)).double() if where == 'sequential' else Linear(3, 2).double()
    hooked = m[0] if where == 'sequential' else m
    y = m(x); m.backward(torch.ones_like(y))  # gradients that are not zero
    y = m(x)
    before = snapshot(m)
    def boom(mod, gi, go): raise ValueError('a hook that fails')
    h = hooked.register_full_backward_hook(boom)
    with pytest.raises(ValueError, match='a hook that fails'): m.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(m))
    h.remove()
    h = hooked.register_full_backward_hook(lambda mod, gi, go: (torch.zeros(1),))  # a wrong gradient returned
    with pytest.raises(RuntimeError, match='a backward hook returned'): m.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(m))
    h.remove()


@pytest.mark.parametrize('copier', [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copy_made_between_forward_and_backward_backpropagates_what_the_forward_saved(copier):
    "The copy's version counters start again: it takes the original's saved state, unless that had been edited."
    torch.manual_seed(0)
    model = Sequential(Linear(3, 4, dtype=torch.float64), ReLU(), Linear(4, 2, dtype=torch.float64))
    x = torch.randn(5, 3, dtype=torch.float64)
    y = model(x)
    twin = copier(model)
    g = torch.randn_like(y)
    assert torch.equal(twin.backward(g), model.backward(g))
    for a, b in zip(twin.parameters(), model.parameters()): assert torch.equal(a.grad, b.grad)
    model(x); model.layers[0].weight.value.mul_(2)  # a saved tensor edited in place, then the copy
    twin = copier(model)
    with pytest.raises(RuntimeError, match='modified in place when it was copied'): twin.backward(g)


def _keep(mod, args, out):  # hooks that pickle can copy (module-level functions)
    return None


def _keep_grad(mod, grad_input, grad_output):
    return None


@pytest.mark.parametrize('copier', [copy.copy, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copy_of_a_hooked_module_runs_and_saves_on_itself(copier):
    "The hooked forward/backward are bound to the copy: a shallow copy's used to run (and save) on the original."
    torch.manual_seed(0)
    m = LayerNorm(4, dtype=F64)
    m.register_forward_hook(_keep); m.register_full_backward_hook(_keep_grad)
    x1, x2, g = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64) * 5 + 1, torch.randn(3, 4, dtype=F64)
    m(x1)
    c = copier(m)
    c(x2)
    ref = LayerNorm(4, dtype=F64); ref(x2)
    assert_close(c.backward(g), ref.backward(g))                     # the gradient of x2, the copy's own input
    assert vars(c)['forward'].__self__ is c and vars(c)['backward'].__self__ is c
    assert m._saved[0] is not c._saved[0]                            # the original kept its own state
    ref1 = LayerNorm(4, dtype=F64); ref1(x1)
    assert_close(m.backward(g), ref1.backward(g))


def test_torch_hook_options_are_refused_clearly():
    lin = Linear(3, 2)
    assert_clear_error(NotImplementedError, 'with_kwargs=True is an option of torch',
                       lin.register_forward_hook, _keep, with_kwargs=True)
    assert_clear_error(NotImplementedError, 'always_call=True is an option of torch',
                       lin.register_forward_hook, _keep, always_call=True)
    assert_clear_error(NotImplementedError, 'with_kwargs=True', lin.register_forward_pre_hook, _keep, with_kwargs=True)
    assert_clear_error(NotImplementedError, 'use register_full_backward_hook', lin.register_backward_hook, _keep)
    assert 'forward' not in vars(lin)


# --- a module held twice, torch's keyword arguments, a backward without input_grad, inference mode ---

class _Tied(Module):
    "One Linear under two names (`dec` is `enc`), and a BatchNorm1d after it: torch's weight tying."
    def __init__(self, lib):
        self.enc = lib.Linear(2, 2); self.dec = self.enc; self.bn = lib.BatchNorm1d(2)


class _TorchTied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Linear(2, 2); self.dec = self.enc; self.bn = torch.nn.BatchNorm1d(2)


def test_a_module_held_twice_is_visited_once_as_in_torch():
    m, t = _Tied(M), _TorchTied()
    names = lambda pairs: [k for k, _ in pairs]
    assert names(m.named_modules()) == names(t.named_modules()) == ['', 'enc', 'bn']
    assert names(m.named_children()) == names(t.named_children()) == ['enc', 'bn']
    assert len(m.modules()) == len(list(t.modules())) and len(m.children()) == len(list(t.children()))
    assert names(m.named_buffers()) == names(t.named_buffers())
    assert len(m.buffers()) == len(list(t.buffers())) == 3
    assert names(m.named_modules(remove_duplicate=False)) == names(t.named_modules(remove_duplicate=False))
    # state_dict keeps both names, as torch's
    assert list(m.state_dict()) == list(t.state_dict())
    assert m.load_state_dict(t.state_dict()) == ([], [])
    # apply: once per module, as torch
    m.enc.weight.value.fill_(1.0); t.enc.weight.data.fill_(1.0)
    m.apply(lambda x: isinstance(x, Linear) and x.weight.value.mul_(0.5))
    t.apply(lambda x: isinstance(x, torch.nn.Linear) and x.weight.data.mul_(0.5))
    assert m.enc.weight.value[0, 0].item() == t.enc.weight[0, 0].item() == 0.5
    m.double(); assert m.bn.running_mean.dtype == torch.float64  # moved once, still one tensor under both names
    assert m.state_dict()['enc.weight'] is m.state_dict()['dec.weight']


def test_torch_keyword_arguments_of_the_traversals_and_state_dict():
    torch.manual_seed(0)
    m, t = _Tied(M), _TorchTied()
    m.load_state_dict(t.state_dict())
    names = lambda pairs: [k for k, _ in pairs]
    for kw in ({}, {'prefix': 'model'}, {'recurse': False}, {'remove_duplicate': False}):
        assert names(m.named_parameters(**kw)) == names(t.named_parameters(**kw)), kw
        assert names(m.named_buffers(**kw)) == names(t.named_buffers(**kw)), kw
    assert m.parameters(recurse=False) == [] and m.bn.parameters(recurse=False) == [m.bn.weight, m.bn.bias]
    assert len(m.buffers(recurse=False)) == 0
    assert list(m.state_dict(prefix='x.')) == list(t.state_dict(prefix='x.'))
    dest = {}
    assert m.state_dict(destination=dest) is dest and list(dest) == list(t.state_dict())
    kept = m.state_dict(keep_vars=True)
    assert kept['bn.weight'] is m.bn.weight and kept['bn.running_mean'] is m.bn.running_mean
    assert m.load_state_dict(kept) == ([], [])  # Parameter entries load as their values
    r = m.load_state_dict({k: v for k, v in t.state_dict().items() if k != 'bn.bias'}, strict=False)
    assert isinstance(r, tuple) and (r.missing_keys, r.unexpected_keys) == (['bn.bias'], [])
    assert_clear_error(TypeError, 'expects prefix to be a str', m.named_parameters, prefix=1)
    assert_clear_error(TypeError, 'expects keep_vars to be True or False', m.state_dict, keep_vars='yes')
    before = snapshot(m)
    assert_clear_error(NotImplementedError, 'assign=True', m.load_state_dict, t.state_dict(), assign=True)
    assert_unchanged(before, snapshot(m))


def test_register_parameter_get_parameter_get_submodule_get_buffer_and_type():
    seq = Sequential(Linear(3, 4), BatchNorm1d(4))
    lin = seq[0]
    assert lin.get_submodule('') is lin and seq.get_submodule('1') is seq[1]
    assert seq.get_parameter('0.weight') is lin.weight and seq.get_buffer('1.running_mean') is seq[1].running_mean
    assert_clear_error(AttributeError, "has no parameter 'running_mean'", seq.get_parameter, '1.running_mean')
    assert_clear_error(AttributeError, "has no sub-module 'x'", lin.get_submodule, 'x')
    p = Parameter(torch.zeros(4))
    lin.register_parameter('extra', p)
    assert lin.get_parameter('extra') is p and 'extra' in dict(Module.named_parameters(lin))
    assert_clear_error(KeyError, "'in_features' already exists", lin.register_parameter, 'in_features', p)
    assert_clear_error(TypeError, 'expected a minidl Parameter', lin.register_parameter, 'other', torch.zeros(1))
    assert_clear_error(TypeError, 'torch.nn.Parameter', lin.register_parameter, 'other',
                       torch.nn.Parameter(torch.zeros(1)))
    lin.register_parameter('gone', None)
    lin.register_parameter('gone', Parameter(torch.ones(1)))  # a declared name takes a parameter later
    assert seq.type(torch.float64) is seq and lin.weight.value.dtype == torch.float64
    assert seq[1].num_batches_tracked.dtype == torch.int64  # as to(): integer buffers keep their dtype
    assert_clear_error(TypeError, 'floating-point', seq.type, torch.int32)


def test_a_non_persistent_buffer_moves_but_is_left_out_of_state_dict_as_in_torch():
    m, t = Linear(2, 2), torch.nn.Linear(2, 2)
    for x in (m, t): x.register_buffer('scratch', torch.zeros(3), persistent=False)
    assert list(m.state_dict()) == list(t.state_dict()) == ['weight', 'bias']
    assert [k for k, _ in m.named_buffers()] == ['scratch']
    m.double(); assert m.scratch.dtype == torch.float64
    m.register_buffer('scratch', torch.zeros(3))  # registered again, persistent
    assert list(m.state_dict()) == ['weight', 'bias', 'scratch']
    assert_clear_error(TypeError, 'persistent to be True or False', m.register_buffer, 'b', None, persistent=1)


def test_parameter_requires_grad_false_is_refused_clearly_however_written():
    p = Parameter(torch.zeros(2))
    for f in (lambda: setattr(p, 'requires_grad', False), lambda: Parameter(torch.zeros(2), requires_grad=False),
              lambda: p.requires_grad_(False)):
        assert_clear_error(NotImplementedError, 'leave them out of the optimizer', f)
    p.requires_grad = True
    assert p.requires_grad is True and Parameter(torch.zeros(1), requires_grad=True).requires_grad
    assert_clear_error(TypeError, 'requires_grad to be True or False', setattr, p, 'requires_grad', 1)


def test_zero_grad_gives_a_gradient_set_to_none_a_zero_tensor_again():
    m = Linear(2, 3).double()
    m.weight.grad = None
    m.zero_grad()
    g = m.weight.grad
    assert isinstance(g, torch.Tensor) and (g.shape, g.dtype) == (m.weight.value.shape, torch.float64)
    assert not g.any()
    y = m(torch.ones(4, 2, dtype=torch.float64)); m.backward(torch.ones_like(y))  # trains again
    m.bias.grad = 'x'
    assert_clear_error(TypeError, 'grad is str, expected a tensor of shape (3)', m.zero_grad)


class _TorchStyle(Module):
    "y = w * x, with torch's backward signature (no input_grad), keeping its own state."
    def __init__(self): self.w = Parameter(torch.linspace(0.5, 1.5, 3, dtype=torch.float64))
    def forward(self, x): self.x = x; return x * self.w.value
    def backward(self, g): self.w.grad += (g * self.x).sum(0); return g * self.w.value


def test_a_backward_without_input_grad_is_accepted_first_in_a_sequential():
    torch.manual_seed(0)
    x, g = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    ref = Sequential(_TorchStyle(), Linear(3, 2).double())
    ref(x); ref.backward(g)
    s = copy.deepcopy(ref); s.zero_grad()
    for _ in range(3):  # checked, then the container's fast path (each module's maths called directly)
        s.zero_grad(); s(x)
        assert s.backward(g, input_grad=False) is None
        for a, b in zip(s.parameters(), ref.parameters()): assert torch.equal(a.grad, b.grad)
    m = _TorchStyle(); m(x[:, :3])
    assert m.backward(torch.ones(5, 3, dtype=torch.float64), input_grad=False) is None
    assert torch.equal(m.backward(torch.ones(5, 3, dtype=torch.float64)), m.w.value.expand(5, 3))
    assert type(m).backward._math(m, torch.ones(5, 3, dtype=torch.float64), input_grad=False) is None
    from minidl.training import train
    s2 = Sequential(_TorchStyle(), Linear(3, 1).double())
    h = train(s2, LossMSE(), M.SGD(s2.parameters(), lr=0.1), x, torch.zeros(5, 1, dtype=torch.float64), epochs=1,
              progress=False)
    assert len(h.train_loss) == 1


class _Buggy(_TorchStyle):
    def backward(self, g, input_grad=True):
        self.w.grad += (g * self.x).sum(0)
        return g * self.w.value + None  # a mistake in the user's own code


def test_a_mistake_in_a_user_backward_is_not_reported_as_a_missing_forward():
    b = _Buggy()
    assert_clear_error(RuntimeError, 'called before forward', b.backward, torch.ones(2, 3))
    b(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match='unsupported operand') as e:
        b.backward(torch.ones(2, 3, dtype=torch.float64))
    assert 'called before forward' not in str(e.value) and '_Buggy.backward' in ''.join(e.value.__notes__)
    # a failed forward names itself; a successful forward since makes the user's own error stand again
    with pytest.raises(TypeError): b('not a tensor')
    assert_clear_error(RuntimeError, 'its last forward failed', b.backward, torch.ones(2, 3))
    b(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match='unsupported operand'): b.backward(torch.ones(2, 3, dtype=torch.float64))


def test_inference_mode_gets_a_clear_error_saying_what_to_use():
    torch.manual_seed(0)
    m = Sequential(Linear(2, 3), ReLU(), Linear(3, 1)).eval()
    x = torch.randn(4, 2)
    with torch.inference_mode():
        assert_clear_error(RuntimeError, ['torch.inference_mode()', 'Use torch.no_grad() instead'], m, x)
    with torch.no_grad(): y = m(x)  # what to use instead
    m.train(); y = m(x); m.backward(torch.ones_like(y))  # and the model works on outside
    for make in (lambda: Linear(2, 2), lambda: Linear(2, 2).double()):
        with torch.inference_mode(): made = make()
        dt = made.weight.value.dtype
        assert_clear_error(RuntimeError, ['weight.value is an inference tensor', 'clone'],
                           made, torch.ones(1, 2, dtype=dt))
        for p in made.parameters(): p.value, p.grad = p.value.clone(), p.grad.clone()  # the fix the error gives
        y = made(torch.ones(1, 2, dtype=dt)); made.backward(torch.ones_like(y))
    bn = BatchNorm1d(3)
    with torch.inference_mode():
        assert_clear_error(RuntimeError, 'torch.no_grad()', bn, torch.randn(5, 3))
    assert bn.num_batches_tracked.item() == 0  # refused before it changed anything


def test_a_copy_made_before_an_attribute_became_a_setting_still_loads():
    "an earlier version kept `dim`, `running_mean`... as plain attributes: its pickles load into the properties"
    import minidl.nn as mnn
    for m, renamed in ((mnn.Softmax(1), ('dim',)), (mnn.BatchNorm1d(3), ('running_mean', 'running_var', 'momentum'))):
        state = dict(m.__dict__)
        for k in renamed: state[k] = state.pop('_' + k)  # the earlier layout
        new = type(m).__new__(type(m)); new.__setstate__(state)
        assert all(k not in vars(new) for k in renamed)
        out = new(torch.randn(4, 3))
        assert out.shape == (4, 3) and new.state_dict().keys() == m.state_dict().keys()


def test_get_submodule_reaches_a_module_held_under_a_second_name():
    import minidl.nn as mnn

    class Holder(mnn.Module):
        def __init__(self): self.a = mnn.Linear(2, 2); self.b = self.a
        def forward(self, x): return self.a(x)
        def backward(self, g, input_grad=True): return self.a.backward(g, input_grad)

    h = mnn.Sequential(Holder())
    assert h.get_submodule('0.b') is h[0].a and h.get_parameter('0.b.weight') is h[0].a.weight


def test_a_copy_keeps_its_last_forward_and_an_older_copys_reference_to_saved_tensors_is_dropped():
    ("a copy between forward and backward still backpropagates what its forward saved (its version list is read again, "
     "and its forward is still the last); a pickle of an older version named that state by the saved tensors "
     "themselves (`_forward_saved`), which would keep them alive for good: dropped")
    lin = M.Linear(3, 2)
    lin(torch.randn(4, 3))
    c = copy.deepcopy(lin)
    assert c._forward_versions is c._versions and c._saved is not None
    state = lin.__getstate__()
    state['_forward_saved'] = state['_saved']; del state['_forward_versions']  # as an older version pickled it
    old = M.Linear.__new__(M.Linear); old.__setstate__(state)
    assert '_forward_saved' not in vars(old) and old._forward_versions is old._versions
    test_g = torch.ones(4, 2)
    assert_close(old.backward(test_g), lin.backward(test_g))


def test_a_list_of_references_to_modules_held_elsewhere_does_not_stop_a_model():
    ("a reference list is legitimate: no warning from the model's own forward (the walk from a nested container "
     "cannot see the module's holder); one, saying how to silence it, from a walk that starts below the holder")
    class Tied(M.Module):
        def __init__(self, other): self.fc, self.watch = M.Linear(4, 4), [other]
        def forward(self, x): return self.fc(x)
        def backward(self, g, input_grad=True): return self.fc.backward(g, input_grad)
    first = M.Linear(4, 4)
    model = M.Sequential(first, M.Sequential(M.ReLU(), Tied(first)))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for _ in range(3): y = model(torch.randn(3, 4)); model.backward(torch.ones_like(y))
        assert len(model.parameters()) == 4 and len(model.state_dict()) == 4
    with pytest.warns(UserWarning, match='name the attribute with a leading underscore'): model[1].parameters()


def test_add_module_and_register_module_as_torch():
    class Net(Module):
        def __init__(self): self.w = Parameter(torch.zeros(2))
    ours, ref = Net(), torch.nn.Module()
    ref.w = torch.nn.Parameter(torch.zeros(2))
    ours.add_module('fc', Linear(2, 3)); ours.register_module('act', Tanh()); ours.add_module('gone', None)
    ref.add_module('fc', torch.nn.Linear(2, 3)); ref.register_module('act', torch.nn.Tanh())
    ref.add_module('gone', None)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['w', 'fc.weight', 'fc.bias']
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in ref.named_modules()] == ['', 'fc', 'act']
    ours.add_module('fc', Linear(2, 4)); assert ours.fc.out_features == 4  # a module replaced, as torch
    before = snapshot(ours)
    assert_clear_error(KeyError, "Net.add_module: attribute 'w' already exists in Net (not a module)",
                       ours.add_module, 'w', Tanh())
    assert_clear_error(KeyError, "a non-empty name without '.'", ours.register_module, 'a.b', Tanh())
    assert_clear_error(TypeError, 'expects the name to be a str, got int', ours.add_module, 0, Tanh())
    bare = Linear(2, 2, bias=False)  # a parameter slot holding None is not a module's place
    assert_clear_error(KeyError, "attribute 'bias' already exists in Linear (not a module)", bare.add_module, 'bias',
                       Tanh())
    assert_clear_error(TypeError, ["expects a minidl Module or None, got", "PyTorch's"], ours.add_module, 'x',
                       torch.nn.ReLU())
    assert_unchanged(before, snapshot(ours))
    assert not hasattr(ours, 'x')
    ours.add_module('0', Tanh()); ours.add_module('gone', Tanh())  # torch's names: any without '.'; a declared slot
    assert [k for k, _ in ours.named_children()][-2:] == ['gone', '0']
    seq = Sequential(Linear(2, 2)); seq.register_module('out', Tanh())  # a container's own add_module: appended
    assert [k for k, _ in seq.named_children()] == ['0', 'out'] and seq(torch.ones(1, 2)).shape == (1, 2)


@pytest.mark.parametrize('make', [lambda: M.Identity(), lambda: M.Dropout(0.5).eval()])
def test_a_module_returning_its_input_keeps_the_stale_gradient_check_of_the_module_that_made_it(make):
    "An output passed through `Identity` (or an eval-mode Dropout) is still the maker's: its stale gradient is refused."
    model, through, mse = Sequential(Linear(2, 2), Tanh()), make(), LossMSE()
    x, t = torch.randn(3, 2), torch.randn(3, 2)
    y = model(x); through(y)
    model(torch.randn(3, 2))  # a validation forward before the backward
    mse(y, t)
    assert_clear_error(RuntimeError, 'gradient of an output of an earlier forward', model.backward, mse.backward())


def test_repr_prints_a_module_held_twice_under_both_names_as_torch():
    ours, ref = Module(), torch.nn.Module()
    ours.enc = Tanh(); ours.dec = ours.enc
    ref.enc = torch.nn.Tanh(); ref.dec = ref.enc
    assert repr(ours) == repr(ref)
