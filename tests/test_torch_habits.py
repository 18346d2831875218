"""A PyTorch user's habits: the same small programs written with torch.nn and with minidl agree (float64 values and
gradients), and where minidl differs on purpose (no autograd) the error says what to do instead."""
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import minidl
import minidl.nn as nn
from minidl.testing import assert_close
from minidl import (BCELoss, Conv2d, CrossEntropyLoss, Dropout, LeakyReLU, Linear, MSELoss, Module, Parameter, ReLU,
                    Sequential, Sigmoid, Tanh)

F64 = torch.float64
pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


def close(ours, ref, cond=1.0):
    """Float64 agreement under minidl.testing's policy: the reductions in these small programs are at most a few
    hundred terms (n=512), well conditioned (cond 1, or the number of layers a gradient crosses), with the absolute
    floor on the reference's scale for entries that cancel (softmax - one-hot)."""
    assert_close(ours, ref, n=512, cond=cond, equal_nan=True)


def copy_into_torch(ours: Module, ref: torch.nn.Module):
    "Give `ref` the parameters of `ours` (same state-dict keys)."
    ref.load_state_dict({k: v.clone() for k, v in ours.state_dict().items()})


# --- Linear -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('make', [lambda: Linear(4, 3), lambda: Linear(in_features=4, out_features=3),
                                  lambda: Linear(4, out_features=3), lambda: Linear(nb_input=4, nb_output=3)])
def test_linear_spellings(make):
    lin = make()
    assert (lin.in_features, lin.out_features, lin.nb_input, lin.nb_output) == (4, 3, 4, 3)
    assert repr(lin) == repr(torch.nn.Linear(in_features=4, out_features=3))


def test_linear_keywords_same_numbers_as_torch():
    torch.manual_seed(0); ref = torch.nn.Linear(in_features=5, out_features=2, bias=False, dtype=F64)
    torch.manual_seed(0); lin = Linear(in_features=5, out_features=2, bias=False, dtype=F64)
    close(lin.weight.value, ref.weight)  # the same draw for the same seed
    x, g = torch.randn(7, 5, dtype=F64), torch.randn(7, 2, dtype=F64)
    xr = x.clone().requires_grad_(); y = ref(xr); y.backward(g)
    close(lin(x), y); close(lin.backward(g), xr.grad); close(lin.weight.grad, ref.weight.grad)


@pytest.mark.parametrize('kwargs, args', [(dict(in_features=3, nb_input=3), ()), (dict(out_features=2, nb_output=2), (3,)),
                                          (dict(nb_input=3), (3, 2))])
def test_linear_two_names_for_one_argument(kwargs, args):
    with pytest.raises(TypeError, match='two names for one argument'): Linear(*args, **kwargs)


def test_linear_missing_size():
    with pytest.raises(TypeError, match='missing the argument out_features'): Linear(in_features=3)


# --- Parameter ------------------------------------------------------------------------------------------------------

def test_parameter_answers_tensor_questions_like_torch():
    v = torch.randn(3, 4, dtype=F64)
    p, q = Parameter(v.clone()), torch.nn.Parameter(v.clone())
    assert not isinstance(p, torch.Tensor)
    for f in (lambda t: t.numel(), lambda t: t.shape, lambda t: t.ndim, lambda t: t.dim(), lambda t: t.size(),
              lambda t: t.size(1), lambda t: t.size(-1), lambda t: t.dtype, lambda t: t.device, lambda t: t.requires_grad,
              lambda t: t.is_cuda):
        assert f(p) == f(q)
    assert torch.equal(p.data, q.data) and p.data is p.value
    assert torch.equal(p.detach(), q.detach())
    assert sum(t.numel() for t in Linear(4, 3).parameters()) == sum(t.numel() for t in torch.nn.Linear(4, 3).parameters())


def test_parameter_data_assignment():
    p = Parameter(torch.zeros(2, 3)); grad = p.grad
    new = torch.ones(2, 3)
    p.data = new
    assert p.value.data_ptr() == new.data_ptr() and p.grad is grad  # shared, as torch's `p.data = t`; the gradient is kept
    new += 1; assert torch.equal(p.value, new)
    for bad, what in [(torch.ones(3, 2), 'shape (2, 3)'), (torch.ones(2, 3, dtype=F64), 'torch.float32 on cpu'),
                      ([[1.0]], 'got list')]:
        with pytest.raises(ValueError, match='Parameter.data = t expects') as e: p.data = bad
        assert what in str(e.value)
        assert p.value.data_ptr() == new.data_ptr()  # a refused assignment changes nothing
    p.data.copy_(torch.full((2, 3), 2.0))
    assert torch.equal(p.value, torch.full((2, 3), 2.0))


def test_parameter_requires_grad():
    p = Parameter(torch.zeros(2))
    assert p.requires_grad is True and p.requires_grad_() is p and p.requires_grad_(True) is p
    with pytest.raises(NotImplementedError, match='leave them out of the optimizer'): p.requires_grad_(False)


# --- Module ---------------------------------------------------------------------------------------------------------

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


def test_module_apply_initialises_like_torch():
    def init(m):
        if isinstance(m, (Linear, torch.nn.Linear)):
            w = m.weight.value if isinstance(m, Linear) else m.weight.data
            w.fill_(0.5)
    ours, ref = Block().double(), TorchBlock().double()
    copy_into_torch(ours, ref)
    ours.apply(init); ref.apply(init)
    x = torch.randn(5, 3, dtype=F64)
    close(ours(x), ref(x))


@pytest.mark.parametrize('method, dtype', [('double', torch.float64), ('float', torch.float32), ('half', torch.float16),
                                           ('bfloat16', torch.bfloat16)])
def test_module_casts(method, dtype):
    ours, ref = Block(), TorchBlock()
    assert getattr(ours, method)() is ours
    getattr(ref, method)()
    assert [p.dtype for p in ours.parameters()] == [p.dtype for p in ref.parameters()] == [dtype] * 4
    assert all(p.grad.dtype == dtype for p in ours.parameters())


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


def test_forward_only_module_points_to_the_page():
    class Net(Module):
        def __init__(self): self.fc = Linear(2, 1)
        def forward(self, x): return self.fc(x)
    net = Net(); net(torch.randn(3, 2))
    with pytest.raises(NotImplementedError) as e: net.backward(torch.ones(3, 1))
    msg = str(e.value)
    for frag in ('Net must implement backward', 'no autograd', 'Writing your own module', 'coming_from_pytorch.html'):
        assert frag in msg, msg


# --- Sequential ----------------------------------------------------------------------------------------------------

def named_pair():
    torch.manual_seed(0)
    ours = Sequential(OrderedDict([('fc1', Linear(4, 8)), ('act', ReLU()), ('fc2', Linear(8, 3))])).double()
    ref = torch.nn.Sequential(OrderedDict([('fc1', torch.nn.Linear(4, 8)), ('act', torch.nn.ReLU()),
                                           ('fc2', torch.nn.Linear(8, 3))])).double()
    copy_into_torch(ours, ref)
    return ours, ref


def test_sequential_ordered_dict_like_torch():
    ours, ref = named_pair()
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    assert repr(ours) == repr(ref)
    assert ours.fc1 is ours[0] and ours.fc2 is ours[-1] and isinstance(ours.act, ReLU)
    x, g = torch.randn(6, 4, dtype=F64), torch.randn(6, 3, dtype=F64)
    xr = x.clone().requires_grad_(); y = ref(xr); y.backward(g)
    close(ours(x), y); close(ours.backward(g), xr.grad)
    for (k, p), (k_ref, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert k == k_ref; close(p.grad, q.grad)
    with pytest.raises(AttributeError, match="no attribute 'fc3'"): ours.fc3


def test_sequential_slicing_shares_and_keeps_names():
    ours, ref = named_pair()
    tail, tail_ref = ours[1:], ref[1:]
    assert isinstance(tail, Sequential) and tail[1] is ours.fc2
    assert list(tail.state_dict()) == list(tail_ref.state_dict())
    plain, plain_ref = Sequential(Linear(2, 3), ReLU(), Linear(3, 1)), torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    assert list(plain[1:].state_dict()) == list(plain_ref[1:].state_dict()) == ['2.weight', '2.bias']
    assert len(plain[::2]) == 2 and len(plain) == 3 and [type(m) for m in plain] == [Linear, ReLU, Linear]


def test_sequential_append_extend_insert_like_torch():
    ours, ref = Sequential(Linear(2, 3)), torch.nn.Sequential(torch.nn.Linear(2, 3))
    assert ours.append(ReLU()) is ours; ref.append(torch.nn.ReLU())
    assert ours.extend([Linear(3, 4), Tanh()]) is ours; ref.extend([torch.nn.Linear(3, 4), torch.nn.Tanh()])
    assert ours.insert(1, Linear(3, 3)) is ours; ref.insert(1, torch.nn.Linear(3, 3))
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.double(); ref.double(); copy_into_torch(ours, ref)
    x = torch.randn(5, 2, dtype=F64)
    close(ours(x), ref(x))
    named, named_ref = named_pair()
    named.append(Sigmoid()); named_ref.append(torch.nn.Sigmoid())
    assert [k for k, _ in named.named_children()] == [k for k, _ in named_ref.named_children()]


def test_sequential_same_instance_guard_kept():
    lin = Linear(2, 2)
    s = Sequential(lin, Tanh())
    for change in (lambda: s.append(lin), lambda: s.extend([Linear(2, 2), lin]), lambda: s.insert(0, lin),
                   lambda: s.append(s), lambda: Sequential(OrderedDict([('a', lin), ('b', lin)]))):
        with pytest.raises(ValueError, match='more than once|contain itself'): change()
    assert len(s) == 2  # a refused change changes nothing
    with pytest.raises(TypeError, match='non-empty strings without'): Sequential(OrderedDict([('a.b', Tanh())]))
    with pytest.raises(KeyError, match='would hide'): Sequential(OrderedDict([('forward', Tanh())]))


def test_sequential_append_after_forward_needs_a_new_forward():
    s = Sequential(Linear(2, 2)); s(torch.randn(3, 2))
    s.append(Tanh())
    with pytest.raises(RuntimeError, match='modules were added after its forward'): s.backward(torch.ones(3, 2))


# --- losses: reduction, ignore_index, (N, C, d1, ...) ---------------------------------------------------------------

def loss_pair(ours, ref_fn, p, t, reduction):
    "Our loss and gradient against torch's, for a random upstream gradient (chain rule through the reduction)."
    pr = p.clone().requires_grad_()
    ref = ref_fn(pr, t)
    g = torch.randn_like(ref)
    ref.backward(g)
    out = ours(p, t)
    grad = ours.backward(g) if reduction == 'none' else ours.backward() * g
    close(out, ref); close(grad, pr.grad)
    if reduction != 'none':  # a 0-dim upstream gradient is the chain rule's factor
        ours(p, t); close(ours.backward(g), pr.grad)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(6, 3), (4,), (2, 3, 5)])
def test_mse_and_bce_reductions(reduction, shape):
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(shape, generator=gen, dtype=F64) * 0.98 + 0.01
    t = torch.rand(shape, generator=gen, dtype=F64)
    loss_pair(MSELoss(reduction=reduction), lambda a, b: F.mse_loss(a, b, reduction=reduction), p, t, reduction)
    loss_pair(BCELoss(reduction=reduction), lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction), p, t, reduction)
    loss_pair(nn.BCELoss(reduction=reduction), torch.nn.BCELoss(reduction=reduction), p, t, reduction)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(7, 4), (3, 4, 5), (2, 4, 3, 2), (4,)])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('eps', [0.0, 0.2])
@pytest.mark.parametrize('ignore', [None, 1])
def test_cross_entropy_indices(reduction, shape, weighted, eps, ignore):
    gen = torch.Generator().manual_seed(2)
    C = shape[1] if len(shape) > 1 else shape[0]
    x = torch.randn(shape, generator=gen, dtype=F64) * 2
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, C, tshape, generator=gen)
    if len(shape) > 1: t.view(-1)[::3] = -100 if ignore is None else ignore  # ignored: those targets add nothing
    w = torch.rand(C, generator=gen, dtype=F64) + 0.1 if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction) | ({} if ignore is None else dict(ignore_index=ignore))
    loss_pair(CrossEntropyLoss(**kw), lambda a, b: F.cross_entropy(a, b, **kw), x, t, reduction)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('shape', [(7, 4), (2, 4, 3, 2)])
@pytest.mark.parametrize('weighted', [False, True])
def test_cross_entropy_probabilities(reduction, shape, weighted):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=F64)
    p = torch.softmax(torch.randn(shape, generator=gen, dtype=F64), 1)
    w = torch.rand(shape[1], generator=gen, dtype=F64) + 0.1 if weighted else None
    kw = dict(weight=w, label_smoothing=0.1, reduction=reduction)
    loss_pair(CrossEntropyLoss(**kw), lambda a, b: F.cross_entropy(a, b, **kw), x, p, reduction)


def test_cross_entropy_every_target_ignored():
    x, t = torch.randn(3, 4, dtype=F64), torch.full((3,), -100)
    xr = x.clone().requires_grad_(); ref = F.cross_entropy(xr, t); ref.backward()
    ce = CrossEntropyLoss()
    assert ce(x, t).isnan() and ref.isnan()  # the mean of nothing
    close(ce.backward(), xr.grad)            # zeros, as torch


def test_reduction_errors():
    for L in (MSELoss, BCELoss, CrossEntropyLoss):
        with pytest.raises(ValueError, match="reduction to be 'mean', 'sum' or 'none', got 'avg'"): L(reduction='avg')
    m = MSELoss(reduction='none'); m(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"backward expects grad_output, the gradient of the per-element losses \(shape \(2, 3\)\)"):
        m.backward()
    with pytest.raises(ValueError, match='gradient of shape \\(2, 3\\)'): m.backward(torch.ones(3))
    m = MSELoss(reduction='sum'); m(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match='gradient of shape \\(\\)'): m.backward(torch.ones(2, 3))
    assert repr(MSELoss(reduction='sum')) == "LossMSE(reduction='sum')" and repr(MSELoss()) == 'LossMSE()'
    with pytest.raises(TypeError, match='ignore_index to be an integer'): CrossEntropyLoss(ignore_index=1.5)


def test_cross_entropy_layout_errors():
    ce = CrossEntropyLoss()
    with pytest.raises(ValueError, match=r'class indices of shape \(2, 5\) for logits \(2, 3, 5\), got \(2, 3\)'):
        ce(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r'class indices in \[0, 3\).*besides ignore_index=-100'):
        ce(torch.randn(2, 3, 5), torch.full((2, 5), 3))


# --- inplace ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ours, ref', [(ReLU(inplace=True), torch.nn.ReLU(inplace=True)), (ReLU(), torch.nn.ReLU()),
                                       (LeakyReLU(0.2, inplace=True), torch.nn.LeakyReLU(0.2, inplace=True)),
                                       (LeakyReLU(), torch.nn.LeakyReLU())])
def test_inplace_activations(ours, ref):
    assert repr(ours) == repr(ref)
    x, g = torch.randn(5, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    keep = x.clone()
    xr = x.clone().requires_grad_(); y = ref(xr * 1)  # (torch refuses in place on a leaf: apply it to a copy)
    y.backward(g)
    close(ours(x), y); close(ours.backward(g), xr.grad)
    assert torch.equal(x, keep)  # minidl computes out of place: the input is kept


def test_dropout_inplace_repr():
    assert repr(Dropout(0.3, inplace=True)) == repr(torch.nn.Dropout(0.3, inplace=True))
    assert repr(Dropout(0.3)) == repr(torch.nn.Dropout(0.3))
    with pytest.raises(TypeError, match='inplace to be True or False'): Dropout(0.3, inplace='yes')


# --- Conv2d: padding 'same'/'valid', dilation -----------------------------------------------------------------------

@pytest.mark.parametrize('kernel, stride, padding, dilation', [
    (3, 1, 'same', 1), (4, 1, 'same', 1), ((2, 5), 1, 'same', (3, 2)), (2, 1, 'same', 3), (3, 1, 'valid', 1),
    (3, 1, 'valid', 2), (3, 2, 1, 2), ((3, 2), (2, 1), (2, 1), (1, 3))])
@pytest.mark.parametrize('mode', ['zeros', 'reflect', 'replicate', 'circular'])
def test_conv_padding_and_dilation_like_torch(kernel, stride, padding, dilation, mode):
    kw = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode, dtype=F64)
    torch.manual_seed(0); conv = Conv2d(3, 4, kernel, **kw)
    torch.manual_seed(0); ref = torch.nn.Conv2d(3, 4, kernel, **kw)
    assert repr(conv) == repr(ref) and (conv.padding, conv.dilation, conv.padding_mode) == (ref.padding, ref.dilation, ref.padding_mode)
    close(conv.weight.value, ref.weight)
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    xr = x.clone().requires_grad_()
    with warnings.catch_warnings():  # torch warns that 'same' with an even kernel copies the input
        warnings.simplefilter('ignore', UserWarning)
        y = ref(xr)
    g = torch.randn_like(y)
    y.backward(g)
    close(conv(x), y); close(conv.backward(g), xr.grad)
    close(conv.weight.grad, ref.weight.grad); close(conv.bias.grad, ref.bias.grad)
    if padding == 'same': assert y.shape[2:] == x.shape[2:]


@pytest.mark.parametrize('kwargs, exc, msg', [(dict(groups=2), ValueError, 'groups=1 only'),
                                              (dict(padding_mode='mirror'), ValueError, "padding_mode to be one of"),
                                              (dict(padding='same', stride=2), ValueError, "padding='same' needs stride 1"),
                                              (dict(padding='full'), ValueError, "'same' or 'valid', got 'full'"),
                                              (dict(dilation=0), ValueError, 'dilation to be positive')])
def test_conv_refuses_what_it_does_not_do(kwargs, exc, msg):
    with pytest.raises(exc, match=msg.replace('(', r'\(').replace(')', r'\)')): Conv2d(2, 2, 3, **kwargs)


def test_conv_dilated_kernel_must_fit():
    with pytest.raises(ValueError, match='larger than the padded input'): Conv2d(1, 1, 3, dilation=3)(torch.randn(1, 1, 6, 6))


# --- the nn namespace ------------------------------------------------------------------------------------------------

def test_nn_namespace():
    for name in ['Linear', 'ReLU', 'Sequential', 'CrossEntropyLoss', 'MSELoss', 'BCELoss', 'Module', 'Parameter',
                 'Conv2d', 'MaxPool2d', 'Flatten', 'Dropout', 'BatchNorm1d', 'Softmax', 'LeakyReLU', 'Tanh', 'Sigmoid']:
        assert getattr(nn, name) is getattr(minidl, name), name
        assert hasattr(torch.nn, name), name
    assert nn.init is minidl.nn.init and callable(nn.init.kaiming_uniform_)
    assert not any(hasattr(nn, n) for n in ('SGD', 'Adam', 'LossMSE', 'Loss'))
    own = {'Residual', 'CausalSelfAttention', 'TransformerBlock'}  # minidl's own blocks: torch.nn has no such class
    assert set(nn.__all__) - own <= set(dir(torch.nn))
    for name in ['Embedding', 'LayerNorm', 'GELU'] + sorted(own): assert getattr(nn, name) is getattr(minidl, name), name


def test_a_torch_program_with_minidl_nn():
    "A tiny classifier written the torch way; only the backward line differs."
    def program(nn, x, t):
        torch.manual_seed(0)
        model = nn.Sequential(OrderedDict([('fc1', nn.Linear(in_features=4, out_features=16)), ('act', nn.ReLU(inplace=True)),
                                           ('fc2', nn.Linear(16, 3))])).double()
        loss_fn = nn.CrossEntropyLoss(reduction='sum', ignore_index=-100)
        return model, loss_fn
    x, t = torch.randn(8, 4, dtype=F64), torch.tensor([0, 1, 2, -100, 1, 0, 2, 2])
    ours, loss_fn = program(nn, x, t)
    ref, ref_loss_fn = program(torch.nn, x, t)
    loss = loss_fn(ours(x), t); ours.backward(loss_fn.backward())
    loss_ref = ref_loss_fn(ref(x), t); loss_ref.backward()
    close(loss, loss_ref)
    for (k, p), (k_ref, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert k == k_ref and p.numel() == q.numel() and p.requires_grad == q.requires_grad
        close(p.grad, q.grad, cond=2)  # two layers


# --- pooling keywords ----------------------------------------------------------------------------------------------

def test_pooling_keywords_at_torch_defaults():
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    for ours, ref in [(minidl.MaxPool2d(2, 2, 0, 1, False, False), torch.nn.MaxPool2d(2, 2, 0, 1, False, False)),
                      (minidl.AvgPool2d(3, 1, 1, False, True, None), torch.nn.AvgPool2d(3, 1, 1, False, True, None))]:
        close(ours(x), ref(x))
    for make, msg in [(lambda: minidl.MaxPool2d(2, dilation=2), 'dilation=1 only'),
                      (lambda: minidl.MaxPool2d(2, ceil_mode=True), 'ceil_mode=False only'),
                      (lambda: minidl.AvgPool2d(2, count_include_pad=False), 'count_include_pad=True only')]:
        with pytest.raises(ValueError, match=msg): make()
