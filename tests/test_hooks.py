"""Module hooks against torch.nn's on the same network (float64): which hooks fire, in which order, with which tensors;
handles that remove; replaced outputs and gradients; nested containers and user modules; hooks that raise."""
import copy, pickle
import pytest
import torch
from torch import nn

from minidl import Linear, Module, Parameter, ReLU, Sequential, Tanh, LossMSE


def close(a, b, rtol=1e-12):
    "float64 results of the same small products: a few ulps times the reduction length; floor scaled to the values"
    assert (a is None) == (b is None), (a, b)
    if a is None: return
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-13 * max(b.abs().max().item(), 1e-300))


def nets(seed=0):
    "A minidl network with a nested container and the torch.nn network with the same weights."
    torch.manual_seed(seed)
    ours = Sequential(Linear(6, 5), Tanh(), Sequential(Linear(5, 4), ReLU()), Linear(4, 3)).to(torch.float64)
    ref = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Sequential(nn.Linear(5, 4), nn.ReLU()), nn.Linear(4, 3)).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def record(model, log, backward=True, pre=False):
    "Register hooks on every module that log (kind, module name, tensors); returns the handles."
    hs = []
    for name, m in model.named_modules():
        hs.append(m.register_forward_hook(lambda mod, args, out, n=name: log.append(('fwd', n, args[0].detach(), out.detach()))))
        if pre: hs.append(m.register_forward_pre_hook(lambda mod, args, n=name: log.append(('pre', n, args[0].detach()))))
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
    for (k, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)


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
    for (k, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)


def test_hooks_fire_in_a_user_module_that_calls_its_children():
    "The pattern containers follow: child(x) / child.forward(x) forward, child.backward(g) backward."
    class TwoPaths(Module):  # y = a(x) + b(x): the input fans out, its gradients add up
        def __init__(self): self.a, self.b = Linear(3, 2).to(torch.float64), Linear(3, 2).to(torch.float64)
        def forward(self, x): return self.a(x) + self.b.forward(x)
        def backward(self, g, input_grad=True):
            ga = self.a.backward(g, input_grad)
            gb = self.b.backward(g, input_grad)
            return ga + gb if input_grad else None

    class TorchTwoPaths(nn.Module):
        def __init__(self): super().__init__(); self.a, self.b = nn.Linear(3, 2).double(), nn.Linear(3, 2).double()
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
    ours.zero_grad(); ours(x); ours.backward(g)  # the documented recovery: zero the gradients, forward again
    ref(x).backward(g)
    for (k, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()): close(p.grad, q.grad)
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
    "Residual and TransformerBlock call their children through the entry points: every child fires, backward in reverse."
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
    assert fwd.index('block.norm1') < fwd.index('block.self_attn') < fwd.index('block.norm2') < fwd.index('block.linear2')
    assert bwd.index('block.linear2') < bwd.index('block.linear1') < bwd.index('block.self_attn') < bwd.index('block.norm1')
    assert gx.shape == x.shape


def test_attention_maps_of_a_real_attention_layer():
    from minidl import CausalSelfAttention
    from minidl.diagnostics import AttentionMaps
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, 2, dtype=torch.float64)
    maps = AttentionMaps(Sequential(attn))
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    attn(x)
    maps.after_step()
    ((step, w),) = maps.maps['0']
    assert step == 0 and w.shape == (2, 4, 4)
    assert torch.equal(w, attn.attn_weights[0])                       # a copy of the first sample's maps
    assert torch.all(w.triu(1) == 0)                                   # the causal mask: no weight on the future
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, dtype=torch.float64))  # rows of a softmax: 4 terms each
