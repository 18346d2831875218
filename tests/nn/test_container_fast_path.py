"""`Sequential`'s one check per call: after a checked call, a call with the same metadata runs the modules' maths
directly; every guarantee of the checked path holds on it (hooks, in-place edits, replaced parameters, the mode,
clear errors, a failed call changing nothing)."""
import pytest
import torch

from minidl import BatchNorm1d, Linear, LossBCE, Module, ReLU, Sequential, Sigmoid


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
