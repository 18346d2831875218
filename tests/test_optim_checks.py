"""An optimizer's step() checks every gradient (shape, dtype, device, no autograd history) and the learning rate's
representability in each parameter's dtype BEFORE updating anything: a failed step changes no parameter, buffer or
counter. Hyper-parameters are checked on every assignment. Schedules refuse bad settings without touching the optimizer."""
import math
import pytest
import torch

from minidl import (Parameter, Linear, ReLU, Sequential, SGD, Adam, AdamW, StepLR, CosineAnnealingLR, OneCycleLR)

OPTS = {'sgd': lambda ps, **kw: SGD(ps, momentum=0.9, **kw), 'adam': lambda ps, **kw: Adam(ps, amsgrad=True, **kw),
        'adamw': lambda ps, **kw: AdamW(ps, **kw)}


def state_of(params, opt):
    return ([p.value.clone() for p in params], [p.grad.clone() for p in params], opt.step_count,
            {k: [t.clone() for t in v] for k, v in opt.state.items()})


def same(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1])) and a[2] == b[2]
    assert a[3].keys() == b[3].keys() and all(torch.equal(x, y) for k in a[3] for x, y in zip(a[3][k], b[3][k]))


def model_and_opt(name, dtype=torch.float64, **kw):
    model = Sequential(Linear(3, 4, dtype=dtype), ReLU(), Linear(4, 2, dtype=dtype))
    ps = model.parameters()
    opt = OPTS[name](ps, **kw)
    for p in ps: p.grad += 0.5
    opt.step()  # buffers exist
    return ps, opt


@pytest.mark.parametrize('name', list(OPTS))
@pytest.mark.parametrize('bad,msg', [
    (lambda g: torch.ones(1, dtype=g.dtype), 'has shape (1), expected (2)'),            # would broadcast
    (lambda g: torch.ones(1, 2, dtype=g.dtype), 'has shape (1, 2), expected (2)'),      # would broadcast too
    (lambda g: g.float(), 'is torch.float32 on cpu, expected torch.float64 on cpu'),
    (lambda g: g.clone().requires_grad_(), 'requires grad'),
    (lambda g: None, 'is NoneType'),
    (lambda g: g.tolist(), 'is list')])
def test_bad_gradient_changes_nothing(name, bad, msg):
    ps, opt = model_and_opt(name)
    ps[-1].grad = bad(ps[-1].grad)  # the LAST parameter: the others would be updated first without the up-front check
    before = state_of(ps[:-1], opt)
    with pytest.raises((ValueError, TypeError), match=msg.replace('(', '\\(').replace(')', '\\)')): opt.step()
    same(state_of(ps[:-1], opt), before)


@pytest.mark.parametrize('name', list(OPTS))
def test_in_place_reshaped_gradient_is_caught(name):
    ps, opt = model_and_opt(name)
    ps[0].grad.unsqueeze_(0)  # same tensor object, new shape: the cached check still sees it
    with pytest.raises(ValueError, match='has shape \\(1, 4, 3\\), expected \\(4, 3\\)'): opt.step()
    ps[0].grad.squeeze_(0); opt.step(); assert opt.step_count == 2


@pytest.mark.parametrize('name', list(OPTS))
@pytest.mark.parametrize('dtype,lr,msg', [(torch.float32, 1e-46, 'round to 0'), (torch.float32, 1e39, 'round to infinity'),
                                          (torch.float16, 1e-9, 'round to 0'), (torch.bfloat16, 1e-42, 'round to 0'),
                                          (torch.float16, 7e4, 'round to infinity')])
def test_unrepresentable_learning_rate(name, dtype, lr, msg):
    p = Parameter(torch.ones(3, dtype=dtype))
    kw = {'eps': 1e-3} if name != 'sgd' else {}
    opt = OPTS[name]([p], lr=lr, **kw)
    p.grad += 1
    with pytest.raises(ValueError, match=msg): opt.step()
    assert torch.equal(p.value, torch.ones(3, dtype=dtype)) and opt.step_count == 0 and not opt.state
    opt.lr = 1e-3; opt.step(); assert opt.step_count == 1  # fine once the rate is representable


def test_float64_accepts_any_positive_rate():
    p = Parameter(torch.ones(3, dtype=torch.float64)); p.grad += 1
    SGD([p], lr=1e-300).step(); SGD([p], lr=0.0).step()


def test_schedule_rate_checked_at_step():
    p = Parameter(torch.ones(3)); opt = SGD([p], lr=0.1); p.grad += 1
    opt._set_scheduled('lr', float('nan'))
    with pytest.raises(ValueError, match='the learning rate is nan'): opt.step()
    assert torch.equal(p.value, torch.ones(3))


def test_model_cast_after_steps_is_reported():
    model = Sequential(Linear(3, 2)); opt = Adam(model.parameters()); opt.step()
    model.to(dtype=torch.float64)
    with pytest.raises(RuntimeError, match='exp_avg of parameter 0 has shape \\(2, 3\\), torch.float32 on cpu but the parameter has'):
        opt.step()
    opt2 = Adam(model.parameters()); opt2.step(); assert opt2.state['exp_avg'][0].dtype == torch.float64


@pytest.mark.parametrize('name', list(OPTS))
def test_hyper_parameters_checked_on_assignment(name):
    _, opt = model_and_opt(name)
    for k, v in [('lr', -1.0), ('lr', math.nan), ('lr', '0.1'), ('lr', True)]:
        with pytest.raises((ValueError, TypeError), match='finite number'): setattr(opt, k, v)
    if name == 'sgd':
        for k in ('momentum', 'dampening', 'weight_decay', 'decay'):
            with pytest.raises(ValueError): setattr(opt, k, -0.5)
    else:
        for v in [(1.0, 0.9), (0.9,), (0.9, -0.1), 'x']:
            with pytest.raises(ValueError, match='two numbers in \\[0, 1\\)'): opt.betas = v
        with pytest.raises(ValueError): opt.eps = -1e-8
    assert opt.lr > 0


@pytest.mark.parametrize('bad', [[], (), iter([])])
def test_empty_parameters(bad):
    with pytest.raises(ValueError, match='empty parameter list'): Adam(bad)


def test_parameters_validation():
    lin = Linear(2, 2)
    with pytest.raises(TypeError, match='pass model.parameters\\(\\)'): SGD(lin)
    with pytest.raises(TypeError, match='got Tensor at position 1'): AdamW([lin.weight, lin.bias.value])
    with pytest.raises(ValueError, match='same Parameter more than once'): Adam([lin.weight, lin.bias, lin.weight])
    with pytest.raises(TypeError, match='iterable of Parameters'): SGD(5)
    SGD(p for p in lin.parameters())  # a generator is fine


def test_schedule_failures_do_not_touch_the_optimizer():
    opt = SGD(Linear(2, 2).parameters(), lr=0.1)
    for make in [lambda: StepLR(opt, 0), lambda: CosineAnnealingLR(opt, -3), lambda: OneCycleLR(opt, 0.1, 10, pct_start=0.1),
                 lambda: OneCycleLR(opt, -1, 10), lambda: OneCycleLR(opt, 0.1, 10, anneal_strategy='step')]:
        with pytest.raises(ValueError): make()
        assert (opt.lr, opt.momentum) == (0.1, 0.0)
    s = OneCycleLR(opt, 0.1, 3)
    for _ in range(3): s.step()
    with pytest.raises(ValueError, match='tried to step 4 times'): s.step()
    assert s.last_epoch == 3


def test_step_is_cheap_when_nothing_changed():
    "The full check runs once; later steps only compare identities and shapes (no device sync: pure metadata)."
    model = Sequential(Linear(2, 25), ReLU(), Linear(25, 1))
    opt = Adam(model.parameters())
    opt.step()
    cache = opt._cache
    opt.step(); opt.zero_grad(); opt.step()
    assert opt._cache is cache  # not rebuilt
    model.to(dtype=torch.float64)
    with pytest.raises(RuntimeError): opt.step()


def test_parameter_list_changed_after_steps():
    lin = Linear(2, 2)
    opt = SGD([lin.weight], lr=0.1, momentum=0.9); opt.step()
    opt.params.append(lin.bias)
    with pytest.raises(RuntimeError, match='2 parameters but 1 momentum_buffer tensors'): opt.step()
    assert opt.step_count == 1


def test_gradient_on_another_device_is_refused():
    "A gradient on another device (here the 'meta' device, available without a GPU) is named with both sides."
    p = Parameter(torch.ones(2)); opt = Adam([p])
    p.grad = torch.zeros(2, device='meta')
    with pytest.raises(TypeError, match='is torch.float32 on meta, expected torch.float32 on cpu'): opt.step()
    assert torch.equal(p.value, torch.ones(2)) and not opt.state


def test_optimizer_modules_use_no_autograd_nor_torch_nn():
    import ast, pathlib, minidl
    pkg = pathlib.Path(minidl.__file__).parent
    for name in ('optim/optimizer', 'optim/sgd', 'optim/adam', 'optim/lr_scheduler', 'checkpoint'):
        tree = ast.parse((pkg / f'{name}.py').read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
                assert not any(m.startswith(('torch.nn', 'torch.autograd', 'torch.func')) for m in mods), (name, mods)
            if isinstance(node, ast.Attribute):
                assert not ast.unparse(node).startswith(('torch.nn', 'torch.autograd', 'torch.ops', 'torch.func')), name


@pytest.mark.parametrize('make_opt,make_sched', [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), lambda o: OneCycleLR(o, 0.1, 10)),
    (lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=1e-3), lambda o: CosineAnnealingLR(o, 10)),
    (lambda ps: AdamW(ps), lambda o: StepLR(o, 2))])
def test_steps_read_nothing_back(make_opt, make_sched):
    "zero_grad, step (its first, full check included) and the schedule read no tensor value back to the host."
    from unittest import mock
    import contextlib
    model = Sequential(Linear(2, 8), ReLU(), Linear(8, 1))
    for p in model.parameters(): p.grad += 0.1
    def refuse(*a, **k): raise AssertionError('read a tensor back to the host')
    with contextlib.ExitStack() as stack:
        for name in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy'):
            stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
        opt = make_opt(model.parameters()); sched = make_sched(opt)
        for _ in range(3):
            opt.step(); sched.step(); _ = opt.current_lr
        opt.zero_grad()
    assert opt.step_count == 3
