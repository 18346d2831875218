"""`Sequential`'s one check per call: after a checked call, a call with the same metadata runs the modules' maths
directly; every guarantee of the checked path holds on it (hooks, in-place edits, replaced parameters, the mode,
clear errors, a failed call changing nothing)."""
import gc
import weakref

import pytest
import torch

from minidl import BatchNorm1d, Linear, LossBCE, LossMSE, Module, ReLU, Residual, Sequential, Sigmoid


def mlp(seed=0):
    torch.manual_seed(seed)
    return Sequential(Linear(3, 5), ReLU(), Linear(5, 1), Sigmoid())


def step(model, x, g=None):
    y = model(x)
    model.backward(torch.ones_like(y) if g is None else g)
    return y


def count_accepts(monkeypatch):
    "Count the calls of Linear's input and gradient checks."
    calls = {'fw': 0, 'bw': 0}
    fw, bw = Linear._accept, Linear._accept_grad
    def acc(self, x): calls['fw'] += 1; return fw(self, x)
    def acc_g(self, g): calls['bw'] += 1; return bw(self, g)
    monkeypatch.setattr(Linear, '_accept', acc)
    monkeypatch.setattr(Linear, '_accept_grad', acc_g)
    return calls


def test_second_call_skips_the_modules_checks_and_gives_the_same_results(monkeypatch):
    calls = count_accepts(monkeypatch)
    a, b = mlp(), mlp()
    x = torch.randn(4, 3)
    step(a, x)
    assert calls == {'fw': 2, 'bw': 2}                      # the first call: every Linear checks its input and gradient
    y = step(a, x)
    assert calls == {'fw': 2, 'bw': 2}                      # the same metadata: the maths alone
    step(b, x); step(b, x)
    assert calls == {'fw': 4, 'bw': 4}                      # b: checked once, then fast too
    assert torch.equal(y, b.forward(x))                      # same ops in the same order on the same values
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p.grad, q.grad)
    step(a, torch.randn(6, 3))                              # another shape: checked again
    assert calls == {'fw': 6, 'bw': 6}


def test_inputs_of_several_shapes_in_turn_each_take_the_fast_path(monkeypatch):
    "a batch run in pieces of different lengths: each shape is checked once, then remembered (up to _MAX_KEYS)"
    from minidl.nn.container import _MAX_KEYS
    calls = count_accepts(monkeypatch)
    a, xs = mlp(), [torch.randn(n, 3) for n in (4, 6, 5)]
    for x in xs: step(a, x)
    assert calls == {'fw': 6, 'bw': 6}                      # each shape checked once
    for _ in range(3):
        for x in xs: step(a, x)
    assert calls == {'fw': 6, 'bw': 6}                      # then each takes the maths alone, in turn
    a[0].weight.value = a[0].weight.value.clone()           # a parameter replaced: no remembered key matches
    for x in xs: step(a, x)
    assert calls == {'fw': 12, 'bw': 12}
    for n in range(1, _MAX_KEYS + 5): step(a, torch.randn(n, 3))
    assert len(a._fast_keys) == _MAX_KEYS and len(a._fast_grad_keys) == _MAX_KEYS  # bounded: the oldest dropped
    before = dict(calls)
    step(a, torch.randn(_MAX_KEYS + 4, 3))                  # the newest shapes are still remembered
    assert calls == before
    step(a, torch.randn(1, 3))                              # the oldest was dropped: checked again
    assert calls == {'fw': before['fw'] + 2, 'bw': before['bw'] + 2}


def test_hooks_registered_after_the_first_calls_run(monkeypatch):
    model, x = mlp(), torch.randn(4, 3)
    step(model, x); step(model, x)
    seen = []
    h1 = model[2].register_forward_hook(lambda m, args, out: seen.append('fw'))
    h2 = model[2].register_full_backward_hook(lambda m, gi, go: seen.append('bw'))
    step(model, x); step(model, x)
    assert seen == ['fw', 'bw', 'fw', 'bw']
    h1.remove(); h2.remove()
    step(model, x); step(model, x)
    assert seen == ['fw', 'bw', 'fw', 'bw']


def test_in_place_edit_between_forward_and_backward_is_detected_on_the_fast_path():
    model, x = mlp(), torch.randn(4, 3)
    step(model, x); step(model, x)
    y = model(x)
    before = [p.grad.clone() for p in model.parameters()]
    model[1]._saved[0].mul_(2)                               # the ReLU's output, also Linear 2's saved input
    with pytest.raises(RuntimeError, match=r"Linear.backward: a tensor saved by forward .* modified by an "
                                           r"inplace operation"):
        model.backward(torch.ones_like(y))
    for p, b in zip(model.parameters(), before): assert torch.equal(p.grad, b)  # nothing accumulated


def test_replaced_parameter_is_detected_on_the_fast_path():
    model, x = mlp(), torch.randn(4, 3)
    step(model, x); step(model, x)
    model[2].weight.value = torch.zeros(1, 4)                # the wrong shape, assigned by hand
    with pytest.raises(RuntimeError, match=r"Linear's weight has shape \(1, 4\), expected \(1, 5\)"):
        model(x)
    with pytest.raises(RuntimeError, match='nothing to backpropagate through'):
        model.backward(torch.ones(4, 1))


def test_wrong_gradient_after_fast_calls_gets_the_modules_error_and_changes_nothing():
    model, x = mlp(), torch.randn(4, 3)
    step(model, x); step(model, x)
    model(x)
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Sigmoid.backward expects a gradient of shape \(4, 1\)"):
        model.backward(torch.ones(4, 2))
    for p, b in zip(model.parameters(), before): assert torch.equal(p.grad, b)
    model.backward(torch.ones(4, 1))                         # the right one still works
    step(model, x)


def test_wrong_input_after_fast_calls_gets_the_modules_error():
    model, x = mlp(), torch.randn(4, 3)
    step(model, x); step(model, x)
    with pytest.raises(ValueError, match=r"Linear expects an input of shape \(\*, 3\)"):
        model(torch.randn(4, 2))
    with pytest.raises(TypeError, match='Linear has torch.float32 parameters but got a torch.float64 input'):
        model(x.double())
    step(model, x)


def test_mode_change_by_hand_is_seen_by_batchnorm():
    torch.manual_seed(0)
    model = Sequential(Linear(3, 4), BatchNorm1d(4), ReLU())
    x1 = torch.randn(1, 3)
    model.eval(); step(model, x1); step(model, x1)           # one sample in eval mode: fine
    model[1].training = True                                 # by hand, not through train()
    with pytest.raises(ValueError, match='Expected more than 1 value per channel when training'):
        model(x1)


def test_maths_refusal_on_the_fast_path_is_explained_by_the_module():
    # refuses in its maths (no declared checks) every third call
    class Picky(Module):
        n = 0
        def forward(self, x):
            Picky.n += 1
            if Picky.n % 3 == 0: raise RuntimeError('picky refused')
            self._saved, self._versions = (), ()
            return x
        def backward(self, g, input_grad=True): return g
    model, x = Sequential(Linear(3, 3), Picky()), torch.randn(2, 3)
    step(model, x); step(model, x)
    with pytest.raises(RuntimeError, match='picky refused'):
        model(x)
    with pytest.raises(RuntimeError, match='nothing to backpropagate through'):
        model.backward(torch.ones(2, 3))
    step(model, x)


def test_training_loop_equal_to_checked_calls():
    "Ten steps through the fast path and ten with each module called alone (always checked): identical parameters."
    a, b = mlp(1), mlp(1)
    loss_a, loss_b = LossBCE(), LossBCE()
    x, t = torch.rand(8, 3), (torch.rand(8, 1) > 0.5).float()
    for _ in range(10):
        for model, loss in ((a, loss_a), (b, loss_b)):
            if model is a: y = model(x)
            else:
                y = x
                for m in model: y = m(y)
            loss(y, t)
            g = loss.backward()
            if model is a: model.backward(g)
            else:
                for m in reversed(list(model)): g = m.backward(g)
            for p in model.parameters():
                p.value.sub_(0.1 * p.grad); p.grad.zero_()  # in place: `p.value -= ...` assigns, a full check
    assert a._ran is not None and a._fast_keys[a._ran] is a._ran  # the last steps ran on the fast path
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p.value, q.value)  # same ops, same order


# ---- what the key cannot see: each edit below leaves the key as it was, and must still be seen once warm

def warm(model, x, n=3):
    for _ in range(n): model.zero_grad(); step(model, x)


def test_layers_put_back_run_their_own_maths_not_the_last_learned_chain():
    "two chains in turn on one container: a remembered key never runs the other chain's maths"
    from minidl.testing import assert_close
    model, x = mlp(), torch.randn(4, 3)
    full = model.layers
    p1 = model(x); model.layers = full[:-1]; logits = model(x); model.layers = full
    for _ in range(3):
        assert torch.equal(model(x), p1)
        model.layers = full[:-1]; assert torch.equal(model(x), logits); model.layers = full
    assert_close(torch.sigmoid(logits), p1, n=1)


def test_layers_assignment_is_checked_and_forgets_the_forward():
    model, x = mlp(), torch.randn(4, 3)
    warm(model, x)
    y = model(x)
    with pytest.raises(TypeError, match='Sequential expects Module instances, got int at position 1'):
        model.layers = (model.layers[0], 3)
    assert len(model.layers) == 4  # a refused assignment changes nothing
    model.layers = model.layers[:-1]
    assert model._names == ('0', '1', '2')
    with pytest.raises(RuntimeError, match='its modules were replaced after its forward'):
        model.backward(torch.ones_like(y))


@pytest.mark.parametrize('warmed', [False, True])
def test_a_module_called_on_its_own_between_forward_and_backward_is_refused(warmed):
    "its saved tensors are that call's: the container's backward would mix two inputs (a silently wrong gradient)"
    from minidl.testing import assert_unchanged, snapshot
    model, x = mlp(), torch.randn(4, 3)
    if warmed: warm(model, x)
    y = model(x)
    model[:2](torch.randn(4, 3))  # a slice shares the modules: Linear 0 and ReLU 1 ran again
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r'its module 0 \(Linear\) ran forward on its own after the Sequential'):
        model.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(model))
    y = model(x); model.backward(torch.ones_like(y))  # a new forward: fine again


@pytest.mark.parametrize('warmed', [False, True])
def test_a_block_called_on_its_own_between_forward_and_backward_is_refused(warmed):
    from minidl import Residual
    model, x = Sequential(Residual(Linear(3, 3)), Sigmoid()), torch.randn(4, 3)
    if warmed: warm(model, x)
    y = model(x)
    model[0].block(torch.randn(4, 3))
    with pytest.raises(RuntimeError, match=r'Residual.backward: its module block \(Linear\) ran forward on its own'):
        model.backward(torch.ones_like(y))


def test_a_module_run_by_the_container_refuses_the_gradient_of_its_own_earlier_output():
    model, x = mlp(), torch.randn(4, 3)
    warm(model, x)
    lin, mse = model[2], LossMSE()
    mse(lin(torch.randn(4, 5)), torch.zeros(4, 1)); g = mse.backward()
    model(x)  # the container's fast path runs lin's maths: lin now holds the container's input
    with pytest.raises(RuntimeError, match='got the gradient of an output of an earlier forward'): lin.backward(g)


@pytest.mark.parametrize('edit', ['unsqueeze_', 'resize_'])
def test_a_parameter_reshaped_in_place_is_refused_once_warm_as_cold(edit):
    model, x = mlp(), torch.randn(4, 3)
    warm(model, x)
    b = model[0].bias.value
    b.unsqueeze_(0) if edit == 'unsqueeze_' else b.resize_(1)
    with pytest.raises(RuntimeError, match=r"Linear's bias has shape \(1"): model(x)  # no silent broadcast


@pytest.mark.parametrize('edit', ['unsqueeze_', 'resize_', 't_', 'double'])
def test_a_gradient_changed_in_place_is_refused_before_any_accumulation_once_warm(edit):
    from minidl.testing import assert_unchanged, snapshot
    model, x = mlp(), torch.randn(4, 3)
    warm(model, x)
    y = model(x)
    gw = model[0].weight.grad
    if edit == 'unsqueeze_': gw.unsqueeze_(0)
    elif edit == 'resize_': gw.resize_(15)
    elif edit == 't_': gw.t_()  # (5, 3) -> (3, 5)
    else: gw.data = gw.double()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match='weight.grad has shape .* nothing was accumulated'):
        model.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize('warmed', [False, True])
def test_an_input_made_to_require_grad_after_forward_is_refused(warmed):
    "no version counter sees `requires_grad_()`: backward would build an autograd graph into `.grad`"
    model, x = mlp(), torch.randn(4, 3)
    if warmed: warm(model, x)
    model.zero_grad(); y = model(x)
    x.requires_grad_()
    with pytest.raises(RuntimeError, match='was made to require grad after forward'): model.backward(torch.ones_like(y))
    assert all(not p.grad.requires_grad and not p.grad.abs().sum() for p in model.parameters())
    x.requires_grad_(False); y = model(x); model.backward(torch.ones_like(y))  # and training goes on


def test_a_forward_given_to_an_instance_once_warm_is_called():
    model, x = mlp(), torch.randn(4, 3)
    warm(model, x)
    calls = []
    relu = model[1]
    def forward(h): calls.append(1); return type(relu).forward(relu, h)
    relu.forward = forward
    model(x); model(x)
    assert len(calls) == 2



class _Probe(Module):
    "Passes its input on; records, at each forward, whether the activation that `watch` points to was freed."
    def __init__(self): self.freed, self.watch = [], None
    def forward(self, x):
        if self.watch is not None: self.freed.append(self.watch() is None)
        return x.clone()
    def backward(self, g, input_grad=True): return g if input_grad else None


@pytest.mark.parametrize('where', ['after', 'inside', 'residual'])
def test_the_last_forwards_activations_are_freed_while_the_next_forward_runs(where):
    ("a new forward makes the last one's saved state stale: no container holds it while its modules run (each "
     "frees its own as it saves the new one), on the checked first call as on the fast path, nested containers too")
    probe = _Probe()
    if where == 'after':
        inner = Sequential(Linear(3, 4), ReLU(), Linear(4, 3), ReLU())
        model = Sequential(inner, probe)
    else:  # the probe inside a nested container, which the outer one's fast path runs
        inner = Sequential(Linear(3, 4), ReLU(), Linear(4, 3), ReLU(), probe)
        model = Sequential(Residual(inner) if where == 'residual' else inner, Linear(3, 1))
    x = torch.randn(5, 3)
    for _ in range(4):
        y = model(x); model.backward(torch.ones_like(y))
        probe.watch = weakref.ref(inner[1]._saved[0])  # the first ReLU's output, saved by it and by the next Linear
        del y
    assert probe.freed == [True, True, True]


def test_no_module_keeps_the_checked_calls_activations_once_the_fast_path_runs():
    "the checked first call tags each module's output; what tells a later state from it keeps no tensor alive"
    model, x = mlp(), torch.randn(4, 3)
    y = model(x); model.backward(torch.ones_like(y))
    first = [weakref.ref(t) for m in model for t in m._saved if isinstance(t, torch.Tensor) and t is not x]
    del y
    for _ in range(3): y = model(x); model.backward(torch.ones_like(y))
    gc.collect()
    assert first and all(r() is None or any(r() is p.value for p in model.parameters()) for r in first)


def test_a_nested_container_run_by_the_fast_path_refuses_the_gradient_of_its_own_earlier_output():
    "the inner container's maths, run by the outer one, replace its state: a gradient of its own call is stale"
    inner = Sequential(Linear(3, 4), ReLU())
    model, x = Sequential(inner, Linear(4, 1)), torch.randn(4, 3)
    warm(model, x)
    mse = LossMSE(); mse(inner(torch.randn(4, 3)), torch.zeros(4, 4)); g = mse.backward()
    model(x)  # the fast path runs inner's maths: inner now holds the outer call's state
    with pytest.raises(RuntimeError, match='got the gradient of an output of an earlier forward'): inner.backward(g)


class _Stateless(Module):
    "A module of a user's that saves nothing: y = 2 x."
    def forward(self, x): return 2 * x
    def backward(self, g, input_grad=True): return 2 * g if input_grad else None


@pytest.mark.parametrize('kind', ['stateless', 'composite'])
def test_a_module_of_yours_run_by_the_fast_path_refuses_the_gradient_of_its_own_earlier_output(kind):
    ("a module whose forward saves nothing (or that only holds modules) is called through its checked forward by the "
     "fast path: its own earlier output's gradient is then refused, as a built-in module's")
    mod = _Stateless() if kind == 'stateless' else Residual(Sequential(Linear(3, 3), ReLU()))
    model, x = Sequential(Linear(3, 3), mod, Linear(3, 1)), torch.randn(4, 3)
    warm(model, x)
    mse = LossMSE(); mse(mod(torch.randn(4, 3)), torch.zeros(4, 3)); g = mse.backward()
    model(x)  # the fast path runs mod again
    with pytest.raises(RuntimeError, match='got the gradient of an output of an earlier forward'): mod.backward(g)


def test_a_gradient_set_to_none_is_refused_by_backward_not_by_forward():
    "torch's habit `p.grad = None`: the forward runs (it needs no gradient), the backward says what to do instead."
    layer = Linear(2, 2)
    layer.weight.grad = None
    model = Sequential(layer, ReLU())
    for _ in range(2):
        y = model(torch.randn(3, 2))
        with pytest.raises(RuntimeError, match='weight.grad is NoneType.*reset gradients with zero_grad'):
            model.backward(torch.ones(3, 2))
    model.zero_grad()
    for _ in range(3): y = model(torch.randn(3, 2)); model.backward(torch.ones_like(y))
