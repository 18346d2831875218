"""Sequential and Residual: torch's container habits (ordered dicts, slicing, append/insert), modes propagated,
failures half way that change nothing."""
import copy
import pickle
from collections import OrderedDict

import pytest
import torch
from helpers import SMALL_PROGRAM, copy_into_torch

import minidl
import minidl.nn as minidl_nn
from minidl import (
    BatchNorm1d,
    Dropout,
    Linear,
    LogSoftmax,
    Module,
    ModuleDict,
    ModuleList,
    Parameter,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
    gradcheck,
)
from minidl.testing import assert_clear_error, assert_close, assert_unchanged, snapshot


def test_sequential_failed_forward_half_way_then_backward_changes_nothing():
    torch.manual_seed(0)
    s = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    s(torch.randn(2, 3)); s.backward(torch.ones(2, 2))
    before = snapshot(s)
    assert_clear_error(TypeError, 'floating-point', s, torch.ones(2, 3, dtype=torch.long))
    assert_clear_error(RuntimeError, 'last forward failed', s.backward, torch.ones(2, 2))
    for m in s: assert_clear_error(RuntimeError, 'last forward failed', m.backward, torch.ones(2, 2))
    assert_unchanged(before, snapshot(s))


def test_sequential_bad_gradient_changes_nothing():
    s = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    s(torch.randn(2, 3))
    before = snapshot(s)
    assert_clear_error(ValueError, 'shape (2, 2)', s.backward, torch.ones(2, 3))
    assert_unchanged(before, snapshot(s))


def test_sequential_construction_errors():
    assert_clear_error(TypeError, 'Module instances', Sequential, lambda x: x)
    assert_clear_error(TypeError, 'instantiate it', Sequential, Linear)
    assert_clear_error(TypeError, 'Sequential(*modules)', Sequential, [Linear(2, 2)])
    r = ReLU()
    assert_clear_error(ValueError, 'more than once', Sequential, r, r)


def test_sequential_indexing_errors_are_clear():
    s = Sequential(Linear(2, 3), ReLU())
    assert_clear_error(IndexError, 'index 2 is out of range: it holds 2 modules', lambda: s[2])
    assert_clear_error(TypeError, 'integers or slices', lambda: s['0'])
    assert_clear_error(TypeError, 'integers or slices', lambda: s[1.0])
    assert s[-1] is s.layers[1] and s[torch.tensor(0)] is s.layers[0] and len(s[0:1]) == 1


F64 = torch.float64


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


def test_mlp_on_an_empty_batch():
    net = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid()).to(F64)
    y = net(torch.zeros(0, 2, dtype=F64))
    assert y.shape == (0, 1)
    assert net.backward(torch.zeros(0, 1, dtype=F64)).shape == (0, 2)
    assert all(p.grad.abs().sum() == 0 for p in net.parameters())


def named_pair():
    torch.manual_seed(0)
    ours = Sequential(OrderedDict([('fc1', Linear(4, 8)), ('act', ReLU()), ('fc2', Linear(8, 3))])).double()
    ref = torch.nn.Sequential(OrderedDict([('fc1', torch.nn.Linear(4, 8)), ('act', torch.nn.ReLU()),
                                           ('fc2', torch.nn.Linear(8, 3))])).double()
    copy_into_torch(ours, ref)
    return ours, ref


@pytest.mark.parity
def test_sequential_ordered_dict_like_torch():
    ours, ref = named_pair()
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    assert repr(ours) == repr(ref)
    assert ours.fc1 is ours[0] and ours.fc2 is ours[-1] and isinstance(ours.act, ReLU)
    x, g = torch.randn(6, 4, dtype=F64), torch.randn(6, 3, dtype=F64)
    xr = x.clone().requires_grad_(); y = ref(xr); y.backward(g)
    assert_close(ours(x), y, **SMALL_PROGRAM); assert_close(ours.backward(g), xr.grad, **SMALL_PROGRAM)
    for (k, p), (k_ref, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert k == k_ref; assert_close(p.grad, q.grad, **SMALL_PROGRAM)
    with pytest.raises(AttributeError, match="no attribute 'fc3'"): _ = ours.fc3


@pytest.mark.parity
def test_sequential_slicing_shares_and_keeps_names():
    ours, ref = named_pair()
    tail, tail_ref = ours[1:], ref[1:]
    assert isinstance(tail, Sequential) and tail[1] is ours.fc2
    assert list(tail.state_dict()) == list(tail_ref.state_dict())
    plain, plain_ref = (
        Sequential(Linear(2, 3), ReLU(), Linear(3, 1)),
        torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)),
    )
    assert list(plain[1:].state_dict()) == list(plain_ref[1:].state_dict()) == ['2.weight', '2.bias']
    assert len(plain[::2]) == 2 and len(plain) == 3 and [type(m) for m in plain] == [Linear, ReLU, Linear]


@pytest.mark.parity
def test_sequential_append_extend_insert_like_torch():
    ours, ref = Sequential(Linear(2, 3)), torch.nn.Sequential(torch.nn.Linear(2, 3))
    assert ours.append(ReLU()) is ours; ref.append(torch.nn.ReLU())
    assert ours.extend([Linear(3, 4), Tanh()]) is ours; ref.extend([torch.nn.Linear(3, 4), torch.nn.Tanh()])
    assert ours.insert(1, Linear(3, 3)) is ours; ref.insert(1, torch.nn.Linear(3, 3))
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.double(); ref.double(); copy_into_torch(ours, ref)
    x = torch.randn(5, 2, dtype=F64)
    assert_close(ours(x), ref(x), **SMALL_PROGRAM)
    named, named_ref = named_pair()
    named.append(Sigmoid()); named_ref.append(torch.nn.Sigmoid())
    assert [k for k, _ in named.named_children()] == [k for k, _ in named_ref.named_children()]


@pytest.mark.parity
def test_sequential_setitem_and_delitem_like_torch():
    ours = Sequential(Linear(2, 3), ReLU(), Linear(3, 4), Tanh())
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 4), torch.nn.Tanh())
    ours[1] = Sigmoid(); ref[1] = torch.nn.Sigmoid()
    ours[-1] = Linear(4, 1); ref[-1] = torch.nn.Linear(4, 1)
    del ours[2]; del ref[2]
    assert repr(ours) == repr(ref) and list(ours.state_dict()) == list(ref.state_dict())
    del ours[:1]; del ref[:1]
    assert repr(ours) == repr(ref)
    named, _ = named_pair()
    names = [k for k, _ in named.named_children()]
    named[0] = Linear(2, 8)
    assert [k for k, _ in named.named_children()] == names  # the replacement keeps the name
    del named[1]
    assert [k for k, _ in named.named_children()] == [names[0], *names[2:]]


@pytest.mark.parity
def test_sequential_setitem_and_delitem_refuse_clearly_and_change_nothing():
    lin = Linear(2, 2)
    s = Sequential(lin, Tanh())
    x = torch.randn(3, 2); s(x)
    for change, error, match in ((lambda: s.__setitem__(1, lin), ValueError, 'appears more than once'),
                                 (lambda: s.__setitem__(0, torch.nn.ReLU()), TypeError, 'expects Module instances'),
                                 (lambda: s.__setitem__(slice(0, 1), Tanh()), TypeError, 'takes an integer index'),
                                 (lambda: s.__setitem__(5, Tanh()), IndexError, 'index 5 is out of range'),
                                 (lambda: s.__delitem__(-3), IndexError, 'index -3 is out of range'),
                                 (lambda: s.__delitem__('0'), TypeError, 'indices must be integers or slices')):
        with pytest.raises(error, match=match): change()
        assert s.layers[0] is lin and len(s) == 2
    s.backward(torch.ones(3, 2))  # the refused changes left the forward's state
    s(x); s[1] = Sigmoid()
    with pytest.raises(RuntimeError, match='a module was replaced after its forward'): s.backward(torch.ones(3, 2))
    s(x); del s[1]
    with pytest.raises(RuntimeError, match='a module was removed after its forward'): s.backward(torch.ones(3, 2))


@pytest.mark.parity
def test_sequential_same_instance_guard_kept():
    lin = Linear(2, 2)
    s = Sequential(lin, Tanh())
    for change in (lambda: s.append(lin), lambda: s.extend([Linear(2, 2), lin]), lambda: s.insert(0, lin),
                   lambda: s.append(s), lambda: Sequential(OrderedDict([('a', lin), ('b', lin)]))):
        with pytest.raises(ValueError, match='more than once|contain itself'): change()
    assert len(s) == 2  # a refused change changes nothing
    with pytest.raises(TypeError, match='non-empty strings without'): Sequential(OrderedDict([('a.b', Tanh())]))
    with pytest.raises(KeyError, match='would hide'): Sequential(OrderedDict([('forward', Tanh())]))


@pytest.mark.parity
def test_sequential_append_after_forward_needs_a_new_forward():
    s = Sequential(Linear(2, 2)); s(torch.randn(3, 2))
    s.append(Tanh())
    with pytest.raises(RuntimeError, match='modules were added after its forward'): s.backward(torch.ones(3, 2))


@pytest.mark.parity
def test_sequential_propagates_modes():
    "train()/eval() reach every layer of a nested Sequential; Dropout and BatchNorm follow them."
    model = Sequential(Linear(4, 8), BatchNorm1d(8), ReLU(), Sequential(Dropout(0.5), Linear(8, 3)), LogSoftmax())
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    x = torch.randn(5, 4)
    assert torch.equal(model(x), model(x))  # deterministic in eval
    model.train()
    assert all(m.training for m in model.modules())
    assert model[1].num_batches_tracked == 0
    model(x)
    assert model[1].num_batches_tracked == 1


@pytest.mark.parity
def test_residual_matches_torch_and_gradcheck():
    lin1, lin2 = Linear(4, 6, dtype=F64), Linear(6, 4, dtype=F64)
    res = Residual(Sequential(lin1, Tanh(), lin2))
    r1, r2 = torch.nn.Linear(4, 6, dtype=F64), torch.nn.Linear(6, 4, dtype=F64)
    r1.load_state_dict(lin1.state_dict()); r2.load_state_dict(lin2.state_dict())
    x = torch.randn(3, 5, 4, dtype=F64); g = torch.randn_like(x)
    xr = x.clone().requires_grad_(); yr = xr + r2(torch.tanh(r1(xr))); yr.backward(g)
    # sums over 4 or 6 features, and over the 15 rows for the parameters; two layers with weights
    tol = dict(n=15, cond=2)
    assert_close(res(x), yr, **tol); assert_close(res.backward(g), xr.grad, **tol)
    for ours, ref in ((lin1, r1), (lin2, r2)):
        assert_close(ours.weight.grad, ref.weight.grad, **tol); assert_close(ours.bias.grad, ref.bias.grad, **tol)
    assert gradcheck(res, x[:2, :2])
    assert list(res.state_dict()) == ['block.0.weight', 'block.0.bias', 'block.2.weight', 'block.2.bias']


@pytest.mark.parity
def test_residual_errors():
    r = Residual(Linear(3, 2))
    with pytest.raises(ValueError, match=r'keep the shape of its input, got \(4, 3\) -> \(4, 2\)'): r(torch.ones(4, 3))
    with pytest.raises(RuntimeError, match='nothing to backpropagate'): r.backward(torch.ones(4, 2))
    with pytest.raises(TypeError, match='Module instance'): Residual(lambda x: x)


@pytest.mark.parity
def test_residual_refuses_a_block_that_changes_the_shape_even_where_the_sum_broadcasts():
    # x + f(x) would broadcast f(x)
    for block, x, shapes in ((Linear(3, 1), torch.ones(4, 3), r'\(4, 3\) -> \(4, 1\)'),
                             (Linear(1, 3), torch.ones(4, 1), r'\(4, 1\) -> \(4, 3\)'),   # ... or x
                             (Linear(3, 2), torch.ones(4, 3), r'\(4, 3\) -> \(4, 2\)')):  # torch refuses the sum
        r = Residual(block)
        with pytest.raises(ValueError, match=f'keep the shape of its input, got {shapes} from Linear'): r(x)
        with pytest.raises(RuntimeError, match='nothing to backpropagate through: its last forward failed'):
            r.backward(x)
        # called directly, not through __call__
        with pytest.raises(ValueError, match='keep the shape of its input'): r.forward(x)
        # no reason recorded
        with pytest.raises(RuntimeError, match='Residual.backward called before forward'): r.backward(x)


@pytest.mark.parity
def test_residual_passes_on_the_blocks_own_errors_and_detaches():
    r = Residual(Linear(3, 3, dtype=F64))
    # a successful call first: its saved shapes must not explain the next
    r(torch.ones(4, 3, dtype=F64))
    with pytest.raises(ValueError, match=r'Linear expects an input of shape \(\*, 3\)'): r(torch.ones(5, 4, dtype=F64))
    with pytest.raises(TypeError, match='Linear expects the input to be a torch.Tensor, got list'): r([[1.0, 2.0, 3.0]])
    with pytest.raises(RuntimeError, match='Residual.backward has nothing to backpropagate through'):
        r.backward(torch.ones(4, 3, dtype=F64))
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    expected = x.detach() + r.block(x.detach())  # the same operations (before: a call of the block after the
    y = r(x); assert not y.requires_grad and y.grad_fn is None  # Residual's forward would leave it the block's state)
    assert torch.equal(y, expected)
    with pytest.raises(ValueError, match=r'Linear.backward expects a gradient of shape \(4, 3\)'):
        r.backward(torch.ones(4, 2, dtype=F64))


@pytest.mark.parity
def test_residual_in_a_sequential_fast_path_equals_checked_calls():
    torch.manual_seed(0); a = Sequential(Residual(Linear(4, 4, dtype=F64)), Tanh())
    torch.manual_seed(0); b = Residual(Linear(4, 4, dtype=F64))
    x, g = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    for _ in range(3):
        y = a(x); gx = a.backward(g)
        yb = torch.tanh(b(x)); gb = b.backward(g * (1 - yb * yb))
        assert_close(y, yb, n=4); assert_close(gx, gb, n=8)
    snap = snapshot(a)
    a[0].block.weight.grad = torch.zeros(2, dtype=F64)
    a(x)
    with pytest.raises(RuntimeError, match='weight.grad has shape'): a.backward(g)
    a[0].block.weight.grad = snap[0][0][1].clone()
    assert_unchanged(snap, snapshot(a))


def test_sequential_backward_refuses_a_bad_grad_before_any_layer_accumulates():
    "A replaced `.grad` in the first layer is refused before the later layers (run first in backward) add anything."
    m = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    x, g = torch.randn(5, 3), torch.ones(5, 2)
    m(x); m.backward(g)
    m[0].weight.grad = torch.zeros(7)
    m(x)
    before = [p.grad.clone() for p in m[2].parameters()]
    with pytest.raises(RuntimeError, match=r'weight\.grad has shape \(7\)'): m.backward(g)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, m[2].parameters()))


def test_a_module_shared_inside_two_children_is_refused():
    "Two blocks given the same activation (or a layer beside a residual around it) would overwrite its saved state."
    from minidl import GELU, Residual, TransformerBlock
    act = GELU()
    with pytest.raises(ValueError, match=r'the module GELU\(approximate=.none.\) appears more than once'):
        Sequential(TransformerBlock(8, 2, 16, activation=act), TransformerBlock(8, 2, 16, activation=act))
    lin = Linear(3, 3)
    with pytest.raises(ValueError, match='appears more than once'): Sequential(Residual(lin), lin)
    seq = Sequential(Residual(Linear(3, 3)))
    with pytest.raises(ValueError, match='appears more than once'): seq.append(Residual(seq[0].block))
    assert len(seq) == 1  # refused before anything changed


def test_sequential_add_module_pop_get_submodule_like_torch():
    ours = Sequential(Linear(2, 3), ReLU())
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    ours.add_module('out', Linear(3, 1)); ref.add_module('out', torch.nn.Linear(3, 1))
    assert repr(ours) == repr(ref) and list(ours.state_dict()) == list(ref.state_dict())
    assert ours.get_submodule('out') is ours.out and ours.get_submodule('') is ours
    relu = ours[1]
    assert ours.pop(1) is relu and [k for k, _ in ours.named_children()] == ['0', 'out']
    nested = Sequential(Linear(2, 2), Residual(Sequential(Linear(2, 2), Tanh())))
    assert nested.get_submodule('1.block.0') is nested[1].block[0]
    assert_clear_error(AttributeError, "'weight' is a Parameter", nested.get_submodule, '0.weight')
    assert_clear_error(AttributeError, "it has no module named 'fc'; its modules: 0, 1", nested.get_submodule, 'fc')
    replaced = Linear(2, 2)
    nested.add_module('0', replaced)  # an existing name: replaced in its place, as torch
    assert nested[0] is replaced and len(nested) == 2


def test_sequential_add_module_and_pop_refuse_without_changing_anything():
    s = Sequential(Linear(2, 3), ReLU())
    assert_clear_error(TypeError, "without '.'", s.add_module, 'a.b', Tanh())
    assert_clear_error(KeyError, 'would hide the attribute Sequential.forward', s.add_module, 'forward', Tanh())
    assert_clear_error(ValueError, 'appears more than once', s.add_module, 'again', s[0])
    assert_clear_error(TypeError, 'Module instances', s.add_module, 'x', 'relu')
    assert_clear_error(IndexError, 'index 2 is out of range', s.pop, 2)
    assert [k for k, _ in s.named_children()] == ['0', '1']


def test_module_list_repr_groups_equal_modules_as_torch():
    def mods(nn): return [nn.Linear(2, 2), nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.Linear(3, 2), nn.Tanh()]
    assert repr(ModuleList(mods(minidl_nn))) == repr(torch.nn.ModuleList(mods(torch.nn)))
    assert repr(ModuleList()) == repr(torch.nn.ModuleList()) == 'ModuleList()'
    blocks = ModuleList([Sequential(Linear(2, 2), Tanh()) for _ in range(3)])
    assert repr(blocks).splitlines()[:2] == ['ModuleList(', '  (0-2): 3 x Sequential(']


class _Heads(Module):
    "A shared trunk and one linear head per key of a ModuleDict, their outputs concatenated (written as torch's)."
    def __init__(self, nn):
        self.trunk = nn.Sequential(nn.Linear(3, 6), nn.Tanh())
        self.heads = nn.ModuleDict({'cls': nn.Linear(6, 4), 'reg': nn.Linear(6, 1), 'drop': nn.Dropout(0.5)})

    def forward(self, x):
        h = self.trunk(x)
        return torch.cat([self.heads['cls'](self.heads['drop'](h)), self.heads['reg'](h)], dim=-1)

    def backward(self, g, input_grad=True):
        gh = self.heads['drop'].backward(self.heads['cls'].backward(g[:, :4])) + self.heads['reg'].backward(g[:, 4:])
        return self.trunk.backward(gh, input_grad=input_grad)


@pytest.mark.parity
def test_module_dict_model_equals_torch_over_steps_and_state_dicts_both_ways():
    class TorchHeads(torch.nn.Module):
        def __init__(self):
            super().__init__(); _Heads.__init__(self, torch.nn)

        def forward(self, x):
            h = self.trunk(x)
            return torch.cat([self.heads['cls'](self.heads['drop'](h)), self.heads['reg'](h)], dim=-1)
    torch.manual_seed(0)
    ours, ref = _Heads(minidl_nn).to(dtype=torch.float64).eval(), TorchHeads().double().eval()
    assert not ours.heads['drop'].training  # eval() reaches the modules of a ModuleDict
    assert list(ours.state_dict()) == list(ref.state_dict())  # 'heads.cls.weight', ...
    ref.load_state_dict(ours.state_dict())
    opt, ref_opt = minidl.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    x, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad(); y = ours(x); ours.backward(2 * (y - t) / y.numel())
        ref_opt.zero_grad(); ((ref(x) - t) ** 2).mean().backward()
        opt.step(); ref_opt.step()
    for (k, p), (k_ref, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert k == k_ref; assert_close(p.value, q.detach(), **SMALL_PROGRAM)
    back = _Heads(minidl_nn).to(dtype=torch.float64)
    back.load_state_dict(ref.state_dict())  # torch's state dict into minidl's
    assert_close(back.eval()(x), ref(x).detach(), **SMALL_PROGRAM)


def test_module_dict_operations_and_refusals_change_nothing():
    md = ModuleDict([('a', Linear(2, 2)), ('b', ReLU())])
    ref = torch.nn.ModuleDict([('a', torch.nn.Linear(2, 2)), ('b', torch.nn.ReLU())])
    for d in (md, ref):
        d['c'] = type(d['b'])(); d.update({'z': type(d['b'])()}); del d['b']
        assert list(d) == list(d.keys()) == ['a', 'c', 'z'] and len(d) == 3 and 'a' in d and 'b' not in d
    assert repr(md) == repr(ref).replace('torch.nn.', '')
    copied = copy.deepcopy(md); assert copied.keys() == md.keys() and copied['a'] is not md['a']
    assert pickle.loads(pickle.dumps(md)).keys() == ['a', 'c', 'z']
    before = snapshot(md)
    assert_clear_error(TypeError, "ModuleDict.update expects Module instances, got int for key 'q'", md.update,
                       [('p', Tanh()), ('q', 3)])
    assert_clear_error(KeyError, "would hide the attribute ModuleDict.items", md.update, {'items': Tanh()})
    assert_clear_error(KeyError, "the key '_p' starts with '_'", md.__setitem__, '_p', Tanh())
    assert_clear_error(TypeError, "non-empty strings without '.', got 'a.b'", md.__setitem__, 'a.b', Tanh())
    assert_clear_error(KeyError, "ModuleDict has no module 'b'; its keys: 'a', 'c', 'z'", md.__getitem__, 'b')
    assert_clear_error(KeyError, "has no module 'b'", md.pop, 'b')
    assert_clear_error(TypeError, 'ModuleDict has no forward or backward', md, torch.ones(1, 2))
    assert_clear_error(ValueError, 'cannot contain itself', md.__setitem__, 'me', md)
    assert_clear_error(ValueError, 'cannot contain itself', md.add_module, 'in', ModuleDict({'back': md}))
    assert_clear_error(KeyError, "the key '_z' starts with '_'", md.add_module, '_z', Tanh())
    assert_clear_error(TypeError, "expects Module instances, got NoneType for key 'w'", md.add_module, 'w', None)
    md.note = 'kept'
    assert_clear_error(KeyError, "attribute 'note' already exists in ModuleDict", md.__setitem__, 'note', Tanh())
    del md.note
    assert_unchanged(before, snapshot(md))
    assert md.keys() == ['a', 'c', 'z'] and md.pop('a').out_features == 2 and md.keys() == ['c', 'z']
    md.clear(); assert len(md) == 0 and md.parameters() == []


@pytest.mark.parametrize('steps', [0, 3])  # the checked call; then the container's fast path
def test_nested_container_refuses_before_the_outer_modules_add_to_their_gradients(steps):
    inner, head = Sequential(Linear(4, 6), ReLU()), Linear(6, 2)
    model, x = Sequential(inner, head), torch.randn(5, 4)
    for _ in range(steps): model.zero_grad(); model.backward(torch.ones_like(model(x)))
    model.zero_grad(); y = model(x)
    inner[0](torch.randn(5, 4))  # a module of the inner chain called on its own
    assert_clear_error(RuntimeError, 'its module 0 (Linear) ran forward on its own', model.backward, torch.ones_like(y))
    assert all(p.grad.abs().sum() == 0 for p in model.parameters())  # nothing was added, the head's gradient included


@pytest.mark.parametrize('steps', [0, 3])  # the checked call; then the container's fast path
def test_a_parameter_replaced_between_forward_and_backward_is_refused_and_nothing_changes(steps):
    model, x = Sequential(Linear(4, 3), Tanh(), Sequential(Linear(3, 2))), torch.randn(5, 4)
    for _ in range(steps): model.zero_grad(); model.backward(torch.ones_like(model(x)))
    model.zero_grad(); y = model(x)
    old = model[2][0].bias
    model[2][0].bias = Parameter(old.value.clone())  # the forward used `old`
    before = snapshot(model)
    assert_clear_error(RuntimeError, "2.0.bias holds another Parameter than the one its forward used", model.backward,
                       torch.ones_like(y))
    assert_unchanged(before, snapshot(model)); assert old.grad.abs().sum() == 0
    model[2][0].bias = old; model.backward(torch.ones_like(y))  # put back: accepted
    model[0].weight.grad = torch.zeros(3, 4); Linear(2, 2)  # a gradient assigned, another model made: not refused
    model.zero_grad(); y = model(x); model[0].weight.grad = torch.zeros(3, 4); Linear(2, 2)
    model.backward(torch.ones_like(y))


def test_a_module_run_again_by_a_hook_during_the_forward_is_refused_by_backward():
    ("A forward hook on a later module that calls an earlier one (a probe) replaces that module's saved state during "
     "the container's forward: backward refuses, before any gradient is added, instead of mixing two inputs.")
    torch.manual_seed(0)
    l1, l2 = Linear(3, 3, dtype=torch.float64), Linear(3, 1, dtype=torch.float64)
    seq = Sequential(l1, Tanh(), l2)
    probe, x = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    h = l2.register_forward_hook(lambda m, a, o: l1(probe))
    seq(x)
    before = snapshot(seq)
    with pytest.raises(RuntimeError, match=r'module 0 \(Linear\) ran forward .* a second time during it'):
        seq.backward(torch.ones(4, 1, dtype=torch.float64))
    assert_unchanged(before, snapshot(seq))
    h.remove()
    seq(x); seq.backward(torch.ones(4, 1, dtype=torch.float64))  # without the probe: accepted


@pytest.mark.parametrize('wrap', [False, True])
def test_an_empty_sequential_checks_the_gradient_as_torch(wrap):
    "No module checks it: the container does, against its output (its input), before returning it."
    model = Sequential()
    if wrap: model = Residual(model)
    x = torch.randn(2, 3)
    model(x)
    for g, exc, match in ((torch.ones(5, 7), ValueError, r'gradient of shape \(2, 3\)'),
                          (torch.ones(3), ValueError, r'gradient of shape \(2, 3\)'),
                          (torch.ones(2, 3, dtype=torch.float64), TypeError, 'gradient of dtype torch.float32')):
        with pytest.raises(exc, match=match): model.backward(g)
    g = torch.ones(2, 3)
    assert torch.equal(model.backward(g), 2 * g if wrap else g)


def test_a_residual_returns_a_gradient_without_autograd_history():
    model = Residual(Linear(3, 3))
    model(torch.randn(2, 3))
    gx = model.backward(torch.ones(2, 3, requires_grad=True))
    assert not gx.requires_grad and gx.grad_fn is None


def test_a_forward_refused_by_a_later_module_leaves_the_running_statistics_as_they_were():
    "BatchNorm updated its statistics before Linear refused the input: the container puts them back (torch keeps them)."
    from minidl import BatchNorm1d
    model = Sequential(BatchNorm1d(3), Linear(4, 2))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r'Linear expects an input of shape \(\*, 4\)'): model(torch.randn(8, 3) + 5)
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize('how', ['refused', 'Ctrl-C'])
def test_a_warm_sequential_puts_the_running_statistics_back_when_a_later_module_fails(how):
    "The fast path too: a module after the BatchNorm fails (a setting put in since, Ctrl-C) and the statistics stay."
    from minidl import BatchNorm1d, Dropout
    class Stop(Module):
        fail = False
        def forward(self, x):
            if self.fail: raise KeyboardInterrupt
            return x * 1.0
        def backward(self, g, input_grad=True): return g
    last = Dropout(0.5) if how == 'refused' else Stop()
    model = Sequential(BatchNorm1d(3), last)
    for _ in range(3): y = model(torch.randn(8, 3)); model.backward(torch.ones_like(y))  # the fast path is learned
    assert model._fast_keys
    if how == 'refused': last.generator = 'not a generator'
    else: last.fail = True
    before = snapshot(model)
    with pytest.raises(TypeError if how == 'refused' else KeyboardInterrupt): model(torch.randn(8, 3) + 5)
    assert_unchanged(before, snapshot(model))
