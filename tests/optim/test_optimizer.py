"""The Optimizer base class: parameter groups like torch.optim, state dicts both ways, hyper-parameters checked
when written, steps that fail changing nothing."""
import copy
import inspect
import math
from unittest import mock

import pytest
import torch
from helpers import OPT_PAIRS, close_after_steps, groups_of, pair, step_both, trained_linear

import minidl
from minidl import SGD, Adam, AdamW, CosineAnnealingLR, Linear, Parameter, ReLU, Sequential
from minidl.testing import assert_clear_error, assert_unchanged, snapshot

F64 = torch.float64
OPTS = [(SGD, dict(lr=0.1)), (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)), (Adam, {}),
        (AdamW, dict(amsgrad=True))]


@pytest.mark.parametrize('opt, kw', OPTS)
@pytest.mark.parametrize('bad, exc, contains', [
    (torch.ones(3), ValueError, 'never broadcast'), (torch.ones(2, 3, dtype=F64), TypeError, 'torch.float64'),
    (None, TypeError, 'NoneType'), (torch.ones(2, 3, requires_grad=True), ValueError, 'requires grad'),
])
def test_optimizer_step_with_a_bad_gradient_changes_nothing(opt, kw, bad, exc, contains):
    m = trained_linear()
    o = opt(m.parameters(), **kw)
    o.step()
    m.weight.grad = bad
    values, state = [p.value.clone() for p in m.parameters()], snapshot(o)
    assert_clear_error(exc, contains, o.step)
    assert all(torch.equal(a, p.value) for a, p in zip(values, m.parameters()))
    assert_unchanged(state, snapshot(o))


@pytest.mark.parametrize('opt, kw', OPTS)
def test_optimizer_hyper_parameters(opt, kw):
    m = trained_linear()
    for lr in (math.nan, math.inf, -1.0):
        assert_clear_error(ValueError, 'finite number >= 0', opt, m.parameters(), lr=lr)
    for lr in (True, '0.1', torch.tensor(0.1)):
        assert_clear_error(TypeError, 'finite number >= 0', opt, m.parameters(), lr=lr)
    o = opt(m.parameters(), **kw)
    lr = o.lr
    assert_clear_error(ValueError, 'finite number >= 0', setattr, o, 'lr', math.nan)
    assert o.lr == lr
    o.lr = 1e-50  # representable in float64, not in the float32 parameters
    before = [p.value.clone() for p in m.parameters()]
    assert_clear_error(ValueError, 'not representable', o.step)
    assert all(torch.equal(a, p.value) for a, p in zip(before, m.parameters())) and o.step_count == 0


def test_optimizer_after_model_cast_refuses_clearly():
    m = trained_linear()
    o = Adam(m.parameters()); o.step()
    m.to(F64)
    assert_clear_error(RuntimeError, 'create the optimizer after model.to', o.step)


def test_optimizer_parameter_lists():
    m = trained_linear()
    assert_clear_error(ValueError, 'empty parameter list', SGD, [])
    assert_clear_error(ValueError, 'more than once', SGD, [m.weight, m.weight])
    assert_clear_error(TypeError, 'model.parameters()', SGD, m)
    assert_clear_error(TypeError, 'got Tensor at position 0', SGD, [torch.ones(2)])
    assert_clear_error(ValueError, 'two numbers in [0, 1)', Adam, m.parameters(), betas=(1.0, 0.9))
    assert_clear_error(ValueError, 'two numbers in [0, 1)', Adam, m.parameters(), betas=(math.nan, 0.9))
    assert_clear_error(TypeError, 'True or False', Adam, m.parameters(), amsgrad=1)


def test_optimizer_load_state_dict_all_or_nothing():
    m = trained_linear()
    o = Adam(m.parameters()); o.step()
    sd = copy.deepcopy(o.state_dict())
    before = snapshot(o)
    bad = copy.deepcopy(sd); bad['param_groups'][0]['lr'] = math.nan  # torch's layout
    assert_clear_error(ValueError, 'lr', o.load_state_dict, bad)
    bad = copy.deepcopy(sd); del bad['state'][1]
    assert_clear_error(ValueError, 'one tensor per parameter', o.load_state_dict, bad)
    bad = copy.deepcopy(sd); bad['step_count'] = True
    assert_clear_error(ValueError, 'step_count', o.load_state_dict, bad)
    assert_unchanged(before, snapshot(o))


@pytest.mark.parametrize('name', list(OPT_PAIRS))
def test_per_group_settings_and_writes_mid_training(name):
    ours, theirs, kw = OPT_PAIRS[name]
    ps, qs, grads = pair(1)
    per = [{'lr': kw['lr'] / 5}, {'weight_decay': 0.0}]
    opt, ref = ours(groups_of(ps, per), **kw), theirs(groups_of(qs, per), **kw)
    assert opt.defaults.items() >= {k: v for k, v in kw.items()}.items()
    for g, r in zip(opt.param_groups, ref.param_groups):  # defaults filled in as torch
        assert {k: g[k] for k in g if k in r and k != 'params'} == {k: r[k] for k in g if k in r and k != 'params'}
        assert all(a is b for a, b in zip(g['params'], ps[0:2] if g is opt.param_groups[0] else ps[2:4]))
    for t, gs in enumerate(grads[:60]):
        if t == 20:  # written as a user or a schedule would
            for o in (opt, ref): o.param_groups[1]['lr'] = 0.002
        if t == 40:
            key, v = ('momentum', 0.5) if ours is SGD else ('betas', (0.8, 0.99))
            for o in (opt, ref): o.param_groups[0][key] = v
        step_both(ps, qs, opt, ref, gs)
    for p, q in zip(ps, qs): close_after_steps(p.value, q)
    assert [g['lr'] for g in opt.param_groups] == [g['lr'] for g in ref.param_groups]


@pytest.mark.parametrize('name', ['sgd', 'adam', 'adamw'])
def test_add_param_group_mid_training(name):
    "A group added after 15 steps: its own settings, and (Adam) its own step count for the bias correction, as torch."
    ours, theirs, kw = OPT_PAIRS[name]
    ps, qs, grads = pair(2)
    opt, ref = ours(ps[:2], **kw), theirs(qs[:2], **kw)
    for t, gs in enumerate(grads[:40]):
        if t == 15:
            opt.add_param_group({'params': ps[2:], 'lr': 0.003}); ref.add_param_group({'params': qs[2:], 'lr': 0.003})
        n = len(opt.params)
        step_both(ps[:n], qs[:n], opt, ref, gs[:n])
    for p, q in zip(ps, qs): close_after_steps(p.value, q)
    if ours is not SGD:
        assert [float(s['step']) for s in opt.state_dict()['state'].values()] == [
            float(ref.state[q]['step']) for q in qs
        ]


def test_lr_attribute_and_groups():
    ps, _, _ = pair()
    opt = SGD(groups_of(ps, [{}, {'lr': 0.5}]), lr=0.1)
    with pytest.raises(AttributeError, match='different values'): _ = opt.lr
    opt.lr = 0.2  # sets every group, checked first
    assert [g['lr'] for g in opt.param_groups] == [0.2, 0.2] and opt.lr == 0.2
    with pytest.raises(ValueError, match='finite number >= 0'): opt.lr = -1.0
    assert [g['lr'] for g in opt.param_groups] == [0.2, 0.2]
    with pytest.raises(TypeError, match='either Parameters or parameter groups'): SGD([ps[0], {'params': [ps[1]]}])
    with pytest.raises(ValueError, match='more than once'): SGD([{'params': ps[:2]}, {'params': ps[1:3]}])
    with pytest.raises(ValueError, match="needs 'params'"): opt.add_param_group({'lr': 0.1})
    with pytest.raises(ValueError, match='more than once'): opt.add_param_group({'params': [ps[0]]})
    opt.add_param_group({'params': Parameter(torch.zeros(2))})  # a single Parameter, as torch accepts a single tensor
    # a new group's settings: the defaults, as torch
    assert len(opt.param_groups) == 3 and opt.param_groups[2]['lr'] == opt.defaults['lr'] == 0.1


@pytest.mark.parametrize(
    'key,value,msg',
    [
        ('lr', -0.1, 'the learning rate of parameter group 1 is -0.1'),
        ('lr', math.nan, 'the learning rate of parameter group 1 is nan'),
        ('lr', '0.1', "param_groups[1]['lr'] to be a finite number"),
        ('momentum', -0.5, "param_groups[1]['momentum'] to be a finite number >= 0"),
        ('nesterov', 1, "param_groups[1]['nesterov'] to be True or False"),
        ('dampening', 0.5, 'Nesterov momentum requires'),
        ('weight_decay', math.inf, "param_groups[1]['weight_decay']"),
        ('lr', None, "param_groups[1]['lr']"),
    ],
)
def test_written_value_checked_at_next_step_changes_nothing(key, value, msg):
    ps, _, grads = pair()
    opt = SGD(groups_of(ps, [{}, {'nesterov': True}]), lr=0.1, momentum=0.9)
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    opt.step()
    opt.param_groups[1][key] = value  # the last group: the first would be updated first without the up-front checks
    before = snapshot(ps, opt)
    with pytest.raises((ValueError, TypeError), match=msg.replace('[', '\\[').replace(']', '\\]')): opt.step()
    assert_unchanged(before, snapshot(ps, opt))


def test_zero_grad_set_to_none():
    "minidl keeps `.grad` a tensor (layers accumulate into it): set_to_none=True, torch's default, zeroes too."
    ps, qs, _ = pair()
    opt = SGD(ps, lr=0.1)
    for p in ps: p.grad += 3.0
    opt.zero_grad(set_to_none=True)
    assert all(isinstance(p.grad, torch.Tensor) and not p.grad.any() for p in ps)
    for p in ps: p.grad += 3.0
    opt.zero_grad(set_to_none=False); opt.zero_grad()
    assert all(not p.grad.any() for p in ps)
    with pytest.raises(TypeError, match='set_to_none to be True or False'): opt.zero_grad(set_to_none=None)


@pytest.mark.parametrize('name', list(OPT_PAIRS))
def test_state_dict_to_torch_and_back(name):
    ("minidl -> torch.optim after 20 steps, torch continues 20 steps; torch -> minidl, minidl continues 20 "
     "steps; all equal to an uninterrupted torch run.")
    ours, theirs, kw = OPT_PAIRS[name]
    ps, qs, grads = pair(4)
    per = [{'lr': kw['lr'] / 2}, {}]
    opt, ref = ours(groups_of(ps, per), **kw), theirs(groups_of(qs, per), **kw)
    for gs in grads[:20]: step_both(ps, qs, opt, ref, gs)
    sd = opt.state_dict()
    assert set(sd) >= {'state', 'param_groups'} and sorted(sd['state']) == [0, 1, 2, 3]
    assert [g['params'] for g in sd['param_groups']] == [[0, 1], [2, 3]]
    names = (
        {'momentum_buffer'}
        if ours is SGD
        else {'step', 'exp_avg', 'exp_avg_sq'} | ({'max_exp_avg_sq'} if kw.get('amsgrad') else set())
    )
    assert all(set(s) == names for s in sd['state'].values())
    # minidl -> torch: torch continues from minidl's state as the uninterrupted torch run does
    qs2 = [p.value.clone().requires_grad_() for p in ps]
    ref2 = theirs(groups_of(qs2, [{}, {}]), lr=0.5)
    ref2.load_state_dict(copy.deepcopy(sd))  # torch keeps the tensors it is given: a copy, as both go on
    for k in ('lr', 'weight_decay'): assert [g[k] for g in ref2.param_groups] == [g[k] for g in ref.param_groups]
    for gs in grads[20:40]:
        for q, q2, g in zip(qs, qs2, gs): q.grad = g.clone(); q2.grad = g.clone()
        ref.step(); ref2.step()
    for q, q2 in zip(qs, qs2): close_after_steps(q2.detach(), q)
    # torch -> minidl
    ps3 = [Parameter(q2.detach().clone()) for q2 in qs2]
    opt3 = ours(groups_of(ps3, [{}, {}]), lr=0.5)
    opt3.load_state_dict(ref2.state_dict())
    assert [g['lr'] for g in opt3.param_groups] == [g['lr'] for g in ref.param_groups]
    for gs in grads[40:60]:
        for p, q, g in zip(ps3, qs, gs): p.grad.copy_(g); q.grad = g.clone()
        opt3.step(); ref.step()
    for p, q in zip(ps3, qs): close_after_steps(p.value, q)
    # 40 loaded + 20 (torch's SGD state has no step count: 0 + 20)
    assert opt3.state_dict()['step_count'] == (60 if ours is not SGD else 20)


def test_torch_state_dict_checked_completely_before_loading():
    ps, qs, grads = pair(6)
    opt, ref = Adam(ps), torch.optim.Adam(qs)
    for gs in grads[:3]: step_both(ps, qs, opt, ref, gs)
    before = snapshot(ps, opt)
    good = ref.state_dict()
    bad_cases = []
    sd = copy.deepcopy(good)
    sd['state'][3]['exp_avg'] = torch.zeros(5)
    bad_cases.append((sd, 'exp_avg[3] is shape (5)'))
    sd = copy.deepcopy(good)
    sd['state'][2]['step'] = torch.tensor(7.0)
    bad_cases.append((sd, 'different step counts'))
    sd = copy.deepcopy(good); del sd['state'][1]; bad_cases.append((sd, 'one tensor per parameter'))
    sd = copy.deepcopy(good); sd['param_groups'][0]['maximize'] = True; bad_cases.append((sd, 'minidl minimises'))
    sd = copy.deepcopy(good); sd['param_groups'][0]['betas'] = (0.9, 1.5); bad_cases.append((sd, 'two numbers in'))
    sd = copy.deepcopy(good)
    sd['param_groups'][0]['params'] = [0, 1, 2]
    bad_cases.append((sd, 'has 3 parameters in the state dict, 4'))
    bad_cases.append((torch.optim.SGD(qs, lr=0.1, momentum=0.9).state_dict(), "of a 'SGD' optimizer, expected 'Adam'"))
    for sd, msg in bad_cases:
        with pytest.raises(
            ValueError,
            match=msg.replace('(', '\\(').replace(')', '\\)').replace('[', '\\[').replace(']', '\\]'),
        ):
            opt.load_state_dict(sd)
        assert_unchanged(before, snapshot(ps, opt))
    with pytest.raises(ValueError, match="'Adam' optimizer, expected 'AdamW'"): AdamW(ps).load_state_dict(good)


def test_earlier_layout_still_loads():
    ("A state dict (or checkpoint) written before the torch layout: {'type', 'step_count', 'hyper', 'state': "
     "{name: [tensors]}}.")
    ps, qs, grads = pair(7)
    opt, ref = Adam(ps, lr=0.01), torch.optim.Adam(qs, lr=0.01)
    for gs in grads[:5]: step_both(ps, qs, opt, ref, gs)
    earlier = {
        'type': 'Adam',
        'step_count': 5,
        'hyper': {'lr': 0.01, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.0, 'amsgrad': False},
        'state': {
            'exp_avg': [ref.state[q]['exp_avg'].clone() for q in qs],
            'exp_avg_sq': [ref.state[q]['exp_avg_sq'].clone() for q in qs],
        },
    }
    ps2 = [Parameter(p.value.clone()) for p in ps]
    opt2 = Adam(ps2); opt2.load_state_dict(earlier)
    for gs in grads[5:25]:
        for p, q, g in zip(ps2, qs, gs): p.grad.copy_(g); q.grad = g.clone()
        opt2.step(); ref.step()
    for p, q in zip(ps2, qs): close_after_steps(p.value, q)
    with pytest.raises(ValueError, match="of a 'SGD' optimizer, expected 'Adam'"):
        opt2.load_state_dict({**earlier, 'type': 'SGD'})


@pytest.mark.parametrize('make,msg', [
    (lambda: torch.zeros(1).expand(4), 'elements sharing one memory location'),
    (lambda: torch.zeros(2, 1).expand(2, 3), 'elements sharing one memory location'),
    (lambda: torch.zeros(4).requires_grad_(), 'requires grad'),
    (lambda: _inference_zeros(4), 'inference tensor')])
@pytest.mark.parametrize('name', list(OPT_PAIRS))
def test_value_that_cannot_be_written_is_refused_before_any_update(make, msg, name):
    ours, _, kw = OPT_PAIRS[name]
    a, b = Parameter(torch.ones(3, dtype=F64)), Parameter(torch.zeros(2))
    try: b.value = make()
    except (ValueError, TypeError, RuntimeError): return  # refused when assigned: no step can meet it
    b.grad = torch.ones(b.value.shape)
    a.grad += 1.0
    opt = ours([a, b], **{**kw, 'weight_decay': 0.0} if ours is SGD else {})
    with pytest.raises(RuntimeError, match=f'parameter 1 cannot be updated in place: its value .*{msg}'): opt.step()
    assert torch.equal(a.value, torch.ones(3, dtype=F64)) and opt.step_count == 0 and not opt.state


def _inference_zeros(n):
    with torch.inference_mode(): return torch.zeros(n)


def _failing_after_first(real):
    def op(tensors, *args, **kw):
        # part of the work is done...
        real([tensors[0]], *[[x[0]] if isinstance(x, (list, tuple)) else x for x in args], **kw)
        raise RuntimeError('simulated failure inside the kernel')
    return op


@pytest.mark.parametrize('op', ['_foreach_add_', '_foreach_addcdiv_', '_foreach_mul_'])
@pytest.mark.parametrize('name', list(OPT_PAIRS))
def test_step_that_fails_part_way_is_undone(name, op):
    "The first step (new tensors) and the first after a change of the operations keep copies and restore them."
    ours, _, kw = OPT_PAIRS[name]
    ps, _, grads = pair(9)
    opt = ours(groups_of(ps, [{}, {'lr': kw['lr'] / 2}]), **kw)
    def attempt():
        before = snapshot(ps, opt)
        real = getattr(torch, op)
        with mock.patch.object(torch, op, _failing_after_first(real)):
            try: opt.step()
            except RuntimeError as e: assert 'simulated failure' in str(e)
            else: return  # this optimizer does not use `op` on this path
        assert_unchanged(before, snapshot(ps, opt))
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    attempt()  # the first step
    opt.step(); opt.step()
    # other operations in group 1
    opt.param_groups[1]['weight_decay'] = 0.0 if opt.param_groups[1]['weight_decay'] else 1e-2
    attempt()
    n = opt.step_count
    opt.step(); assert opt.step_count == n + 1  # and then it steps


def test_normal_steps_keep_no_copies():
    "The copies are kept only on the steps that run operations not yet run on these tensors: not on the normal path."
    ps, _, grads = pair()
    opt = Adam(groups_of(ps, [{}, {}]), amsgrad=True)
    s = CosineAnnealingLR(opt, 10)  # rates change every step: the operations do not
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    with mock.patch.object(Adam, '_backup', wraps=opt._backup) as backup:
        opt.step(); s.step()
        assert backup.call_count == 1
        for _ in range(5): opt.step(); s.step()
        assert backup.call_count == 1
        opt.param_groups[0]['amsgrad'] = False; opt.step()
        assert backup.call_count == 2


MAKE_OPT = {'sgd': lambda ps, **kw: SGD(ps, momentum=0.9, **kw), 'adam': lambda ps, **kw: Adam(ps, amsgrad=True, **kw),
            'adamw': lambda ps, **kw: AdamW(ps, **kw)}


def model_and_opt(name, dtype=torch.float64, **kw):
    model = Sequential(Linear(3, 4, dtype=dtype), ReLU(), Linear(4, 2, dtype=dtype))
    ps = model.parameters()
    opt = MAKE_OPT[name](ps, **kw)
    for p in ps: p.grad += 0.5
    opt.step()  # buffers exist
    return ps, opt


@pytest.mark.parametrize('name', list(MAKE_OPT))
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
    before = snapshot(ps[:-1], opt)
    with pytest.raises((ValueError, TypeError), match=msg.replace('(', '\\(').replace(')', '\\)')): opt.step()
    assert_unchanged(before, snapshot(ps[:-1], opt))


@pytest.mark.parametrize('name', list(MAKE_OPT))
def test_in_place_reshaped_gradient_is_caught(name):
    ps, opt = model_and_opt(name)
    ps[0].grad.unsqueeze_(0)  # same tensor object, new shape: the cached check still sees it
    with pytest.raises(ValueError, match='has shape \\(1, 4, 3\\), expected \\(4, 3\\)'): opt.step()
    ps[0].grad.squeeze_(0); opt.step(); assert opt.step_count == 2


@pytest.mark.parametrize('name', list(MAKE_OPT))
@pytest.mark.parametrize(
    'dtype,lr,msg',
    [
        (torch.float32, 1e-46, 'round to 0'),
        (torch.float32, 1e39, 'round to infinity'),
        (torch.float16, 1e-9, 'round to 0'),
        (torch.bfloat16, 1e-42, 'round to 0'),
        (torch.float16, 7e4, 'round to infinity'),
    ],
)
def test_unrepresentable_learning_rate(name, dtype, lr, msg):
    p = Parameter(torch.ones(3, dtype=dtype))
    kw = {'eps': 1e-3} if name != 'sgd' else {}
    opt = MAKE_OPT[name]([p], lr=lr, **kw)
    p.grad += 1
    with pytest.raises(ValueError, match=msg): opt.step()
    assert torch.equal(p.value, torch.ones(3, dtype=dtype)) and opt.step_count == 0 and not opt.state
    opt.lr = 1e-3; opt.step(); assert opt.step_count == 1  # fine once the rate is representable


def test_float64_accepts_any_positive_rate():
    p = Parameter(torch.ones(3, dtype=torch.float64)); p.grad += 1
    SGD([p], lr=1e-300).step(); SGD([p], lr=0.0).step()


def test_model_cast_after_steps_is_reported():
    model = Sequential(Linear(3, 2)); opt = Adam(model.parameters()); opt.step()
    model.to(dtype=torch.float64)
    with pytest.raises(RuntimeError, match='exp_avg of parameter 0 has shape \\(2, 3\\), torch.float32 on '
                                           'cpu but the parameter has'):
        opt.step()
    opt2 = Adam(model.parameters()); opt2.step(); assert opt2.state['exp_avg'][0].dtype == torch.float64


@pytest.mark.parametrize('name', list(MAKE_OPT))
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
    import ast
    import pathlib
    pkg = pathlib.Path(minidl.__file__).parent
    for name in ('optim/optimizer', 'optim/sgd', 'optim/adam', 'optim/lr_scheduler', 'checkpoint'):
        tree = ast.parse((pkg / f'{name}.py').read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
                assert not any(m.startswith(('torch.nn', 'torch.autograd', 'torch.func')) for m in mods), (name, mods)
            if isinstance(node, ast.Attribute):
                assert not ast.unparse(node).startswith(('torch.nn', 'torch.autograd', 'torch.ops', 'torch.func')), name


def test_every_write_to_the_groups_is_seen_by_the_next_step():
    "The checks a step skips when nothing changed: each way of changing the groups by hand is still seen."
    p = Parameter(torch.zeros(2, dtype=F64)); opt = SGD([p], lr=0.1)
    p.grad.fill_(1.0); opt.step(); assert torch.equal(p.value, torch.full((2,), -0.1, dtype=F64))
    opt.param_groups[0]['lr'] = 1.0; opt.step()                       # a hyper-parameter written
    assert torch.equal(p.value, torch.full((2,), -1.1, dtype=F64))
    for write in (lambda g: g.update(lr=-1.0), lambda g: g.__setitem__('lr', -2.0), lambda g: g.__ior__({'lr': -3.0})):
        write(opt.param_groups[0])
        assert_clear_error(ValueError, 'learning rate', opt.step)    # refused, nothing changed
        assert torch.equal(p.value, torch.full((2,), -1.1, dtype=F64)) and opt.step_count == 2
    opt.param_groups[0].pop('lr')
    assert_clear_error(ValueError, "has no 'lr'", opt.step)
    opt.param_groups[0]['lr'] = 0.5
    q = Parameter(torch.zeros(3, dtype=F64))
    opt.param_groups[0]['params'] = [p, q]                            # the group's list replaced by hand
    assert_clear_error(RuntimeError, 'parameter groups hold 2 parameters, not the 1', opt.step)
    opt.param_groups[0]['params'] = [p]
    opt.step(); assert torch.equal(p.value, torch.full((2,), -1.6, dtype=F64))
    plain = {**opt.param_groups[0], 'lr': 1.0}                         # a plain dict put in by hand
    opt.param_groups[0] = plain; opt.step()
    assert torch.equal(p.value, torch.full((2,), -2.6, dtype=F64))
    plain['lr'] = 2.0; opt.step()                                       # a write to that plain dict
    assert torch.equal(p.value, torch.full((2,), -4.6, dtype=F64))
    opt.param_groups = [{**plain, 'lr': 0.25}]; opt.step()              # the list of groups replaced
    assert torch.equal(p.value, torch.full((2,), -4.85, dtype=F64))
    opt.param_groups.append({'params': [q], 'lr': 0.1})                 # a group appended by hand, outside opt.params
    assert_clear_error(RuntimeError, 'parameter groups hold 2 parameters, not the 1', opt.step)


def test_writes_that_go_round_the_dict_methods_and_a_users_list_of_groups_are_seen():
    "A write through dict's own methods, and groups replaced in a plain list the user keeps: seen, as by torch."
    p = Parameter(torch.zeros(2, dtype=F64)); opt = SGD([p], lr=0.1)
    p.grad.fill_(1.0); opt.step()
    dict.update(opt.param_groups[0], lr=0.0); opt.step()
    assert torch.equal(p.value, torch.full((2,), -0.1, dtype=F64))
    dict.__setitem__(opt.param_groups[0], 'lr', 0.1)
    groups = list(opt.param_groups); opt.param_groups = groups; opt.step()
    groups[0] = {**groups[0], 'lr': 0.0}; opt.step()
    assert torch.equal(p.value, torch.full((2,), -0.2, dtype=F64)) and opt.param_groups is groups


def test_reordered_groups_are_named_as_such():
    ps = [Parameter(torch.zeros(2, dtype=F64)) for _ in range(2)]
    opt = SGD([{'params': [ps[0]]}, {'params': [ps[1]]}], lr=0.1)
    opt.param_groups.reverse()
    assert_clear_error(RuntimeError, 'no longer hold the parameters of opt.params in its order', opt.step)


def test_a_list_of_coefficients_becomes_the_tuple_the_step_uses():
    "A list hyper-parameter (betas, Muon's coefficients) becomes its checked tuple: what the group shows is used."
    w = Parameter(torch.randn(4, 3, dtype=F64))
    coef = [3.4445, -4.7750, 2.0315]
    opt = minidl.Muon([w], lr=0.02, ns_coefficients=coef)
    w.grad.normal_(); opt.step()
    assert opt.param_groups[0]['ns_coefficients'] == tuple(coef)
    opt.param_groups[0]['ns_coefficients'] = c = [1.0, 0.0, 0.0]; opt.step()
    assert opt.param_groups[0]['ns_coefficients'] == (1.0, 0.0, 0.0)
    c[:] = [9.0, 9.0, 9.0]                                              # the list given is not the group's any more
    assert opt.param_groups[0]['ns_coefficients'] == (1.0, 0.0, 0.0)
    a = Adam([Parameter(torch.zeros(2, dtype=F64))], betas=[0.8, 0.9]); a.step()
    assert a.param_groups[0]['betas'] == (0.8, 0.9)


def test_a_pickled_optimizer_checks_afresh(monkeypatch):
    "Its caches are keyed on edit counters of the process that made them: a copy loaded elsewhere does not reuse them."
    import pickle

    import minidl.optim.optimizer as optimizer_module
    p = Parameter(torch.zeros(2, dtype=F64)); opt = SGD([p], lr=0.1)
    p.grad.fill_(1.0); opt.step()
    recorded = opt._cache[6][:2]
    opt2 = pickle.loads(pickle.dumps(opt))
    p2 = opt2.params[0]
    p2.value = torch.zeros(2, dtype=F64)                     # a new tensor in the copy...
    monkeypatch.setattr(Parameter, '_edits', recorded[0])   # ...where the counters happen to be what opt recorded
    monkeypatch.setattr(optimizer_module._Params, 'edits', recorded[1])
    opt2.step()
    assert torch.equal(p2.value, torch.full((2,), -0.1, dtype=F64))  # the new tensor was updated
    assert copy.deepcopy(opt)._cache is None and opt._cache is not None


@pytest.mark.parametrize('name', list(MAKE_OPT))
def test_value_made_to_require_grad_in_place_is_refused_before_any_change(name):
    "`requires_grad_()` on a value, in place, moves no counter: the cached path still sees it, before any update."
    ps, opt = model_and_opt(name)
    ps[-1].value.requires_grad_()  # the LAST parameter: the update would have written the others first
    before = snapshot(ps[:-1], opt)
    with pytest.raises(RuntimeError, match='requires grad'): opt.step()
    assert_unchanged(before, snapshot(ps[:-1], opt))
    ps[-1].value.requires_grad_(False); opt.step(); assert opt.step_count == 2


@pytest.mark.parametrize('name', list(MAKE_OPT))
def test_gradient_made_to_require_grad_in_place_is_refused_before_any_change(name):
    "`requires_grad_()` on a gradient, in place, moves no counter either: refused at once, nothing recorded."
    ps, opt = model_and_opt(name)
    ps[-1].grad.requires_grad_()
    before = snapshot(ps, opt)
    with pytest.raises(ValueError, match='the gradient of parameter 3 requires grad'): opt.step()
    assert_unchanged(before, snapshot(ps, opt))
    assert all(p.value.grad_fn is None and not p.value.requires_grad for p in ps)
    ps[-1].grad.requires_grad_(False); opt.step(); assert opt.step_count == 2


@pytest.mark.parametrize('name', ['SGD', 'Adam', 'AdamW', 'Muon'])
def test_defaults_are_torchs(name):
    "A PyTorch habit carries over: every argument the two optimizers share has the same default (SGD's lr is 1e-3)."
    ours, theirs = (inspect.signature(getattr(m, name)).parameters for m in (minidl.optim, torch.optim))
    shared = [k for k, p in ours.items() if k in theirs and p.default is not inspect.Parameter.empty]
    assert shared, f"{name}: no default shared with torch.optim.{name}"
    assert {k: ours[k].default for k in shared} == {k: theirs[k].default for k in shared}


# ---- once warm (the step's check cached), edits that no counter records are still seen before any update

def _warm_sgd(**kw):
    torch.manual_seed(0)
    model = Sequential(Linear(2, 5), ReLU(), Linear(5, 5), ReLU(), Linear(5, 1))
    opt = SGD(model.parameters(), lr=0.1, **kw)
    for _ in range(3):
        opt.zero_grad(); y = model(torch.randn(4, 2)); model.backward(torch.ones_like(y)); opt.step()
    return model, opt


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_a_value_given_overlapping_strides_once_warm_is_refused_and_nothing_changes(momentum):
    model, opt = _warm_sgd(momentum=momentum)
    w = model[2].weight.value
    w.as_strided_(w.shape, (0, 1))  # every row is one memory location: an in-place update would fail part-way
    before = snapshot(model, opt)
    with pytest.raises(RuntimeError, match='parameter 2 cannot be updated in place'): opt.step()
    assert_unchanged(before, snapshot(model, opt))


def test_a_state_buffer_replaced_once_warm_is_refused_and_nothing_changes():
    model, opt = _warm_sgd(momentum=0.9)
    opt.state['momentum_buffer'][3] = torch.zeros(3)
    before = snapshot(model, opt)
    with pytest.raises(RuntimeError, match=r'the momentum_buffer of parameter 3 has shape \(3\)'): opt.step()
    assert_unchanged(before, snapshot(model, opt))


def test_state_buffers_made_by_the_optimizer_keep_its_cached_check():
    model, opt = _warm_sgd(momentum=0.9)
    cache = opt._cache
    opt.zero_grad(); y = model(torch.randn(4, 2)); model.backward(torch.ones_like(y)); opt.step()
    assert opt._cache is cache


@pytest.mark.parametrize('opt, kw', OPTS)
def test_a_step_refused_for_its_settings_does_not_run_the_closure(opt, kw):
    "the closure computes the gradients: a refused step must leave them (and everything else) as they were"
    m = trained_linear()
    o = opt(m.parameters(), **kw)
    o.param_groups[0]['lr'] = -1.0
    calls = []
    def closure():
        calls.append(1)
        for p in m.parameters(): p.grad.add_(1.0)
        return 0.0
    before = snapshot(m, o)
    with pytest.raises(ValueError, match='the learning rate is -1.0'): o.step(closure)
    assert_unchanged(before, snapshot(m, o))
    assert not calls
    o.param_groups[0]['lr'] = 0.1
    assert o.step(closure) == 0.0 and calls == [1]


@pytest.mark.parametrize('name', list(MAKE_OPT))
def test_a_state_buffer_reshaped_in_place_once_warm_is_refused_and_nothing_changes(name):
    ps, opt = model_and_opt(name)
    buf = next(iter(opt.state.values()))[1]
    buf.unsqueeze_(0)  # the same tensor, a new shape: the update would fail after the first parameters
    before = snapshot(ps, opt)
    with pytest.raises(RuntimeError, match=r'of parameter 1 has shape \(1, 4\)'): opt.step()
    assert_unchanged(before, snapshot(ps, opt))
    buf.squeeze_(0); opt.step(); assert opt.step_count == 2


def test_parameters_tied_after_the_optimizer_was_made_are_refused():
    a, b = Parameter(torch.ones(3)), Parameter(torch.ones(3))
    opt = SGD([a, b], lr=0.1)
    b.value = a.value  # one tensor, two parameters: it would be updated twice per step
    a.grad.fill_(1.0); b.grad.fill_(1.0)
    with pytest.raises(ValueError, match='two Parameters holding the same tensor'): opt.step()
    assert torch.equal(a.value, torch.ones(3)) and opt.step_count == 0


def test_zero_grad_with_an_inference_gradient_zeroes_nothing():
    a, b = Parameter(torch.ones(3)), Parameter(torch.ones(3))
    opt = SGD([a, b], lr=0.1)
    a.grad.fill_(5.0)
    with torch.inference_mode(): b.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match='parameter 1 is an inference tensor.*nothing was zeroed'): opt.zero_grad()
    assert torch.equal(a.grad, torch.full((3,), 5.0))
    b.grad = torch.ones(3); opt.zero_grad(); assert not a.grad.any() and not b.grad.any()


def test_torch_habits_get_clear_errors():
    m = Linear(2, 2); opt = SGD(m.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(KeyError, match="keyed by buffer name"): opt.state[m.weight]
    with pytest.raises(TypeError, match='expects a closure'): opt.step(5)
    with pytest.raises(TypeError, match=r'named_parameters\(\) gives: pass model.parameters\(\)'):
        SGD(m.named_parameters())
    opt.step(); assert opt.state['momentum_buffer'][0].shape == (2, 2)


def test_adamw_loads_torch_state_dicts_without_the_decoupling_flag():
    q = [torch.zeros(3, requires_grad=True)]
    ref = torch.optim.AdamW(q, lr=0.01); q[0].grad = torch.ones(3); ref.step()
    sd = copy.deepcopy(ref.state_dict()); del sd['param_groups'][0]['decoupled_weight_decay']  # older torch
    ps = [Parameter(torch.zeros(3))]
    opt = AdamW(ps, lr=0.01); opt.load_state_dict(sd)
    assert opt.param_groups[0]['decoupled_weight_decay'] is True
    adam = Adam([Parameter(torch.zeros(3))]); adam.load_state_dict(sd)
    assert adam.param_groups[0]['decoupled_weight_decay'] is False
    with pytest.raises(ValueError, match="of an 'Adam' optimizer, expected 'AdamW'"):
        AdamW(ps).load_state_dict(torch.optim.Adam([torch.zeros(3, requires_grad=True)]).state_dict())


def test_zero_grad_restores_a_gradient_set_to_none():
    "torch's habit p.grad = None: the optimizer's zero_grad makes it a zero tensor again, as a module's does"
    m = Linear(2, 2); opt = SGD(m.parameters(), lr=0.1)
    m.weight.grad = None; m.bias.grad.fill_(3.0)
    opt.zero_grad()
    assert torch.equal(m.weight.grad, torch.zeros(2, 2)) and not m.bias.grad.any()
    assert Linear(2, 3).parameters(recurse=False)[0].shape == (3, 2)


def test_a_refused_zero_grad_leaves_a_gradient_set_to_none_as_it_was():
    m = Linear(3, 3); opt = SGD(m.parameters(), lr=0.1)
    m.weight.grad = None; m.bias.grad = 'oops'
    with pytest.raises(TypeError, match='gradient of parameter 1 is str'): opt.zero_grad()
    assert m.weight.grad is None
    with torch.inference_mode(): t = torch.ones(3)
    m.bias.grad = t
    with pytest.raises(RuntimeError, match='nothing was zeroed'): opt.zero_grad()
    assert m.weight.grad is None and torch.equal(m.bias.grad, torch.ones(3))
    m.bias.grad = torch.ones(3); opt.zero_grad()
    assert not m.weight.grad.any() and not m.bias.grad.any()
    opt.step(); assert opt.step_count == 1


@pytest.mark.parametrize('make', [
    lambda ps: Adam([{'params': ps, 'maximize': True}], lr=0.1),
    lambda ps: SGD([{'params': ps, 'maximize': True}], lr=0.1),
    lambda ps: SGD(ps[:1], lr=0.1).add_param_group({'params': ps[1:], 'maximize': True}),
])
def test_maximize_in_a_group_is_refused_where_it_would_be_ignored(make):
    "torch's `maximize=True` climbs; minidl minimises: a group that asks for it is refused, not silently minimised."
    assert_clear_error(ValueError, "has maximize=True; minidl minimises (negate the loss instead)", make,
                       Linear(2, 2).parameters())


def test_maximize_set_by_hand_is_refused_at_the_next_step_and_changes_nothing():
    lin = Linear(2, 2); opt = SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin.weight.grad.fill_(1.0); opt.step()
    opt.param_groups[0]['maximize'] = True
    before = snapshot(lin)
    assert_clear_error(ValueError, "param_groups[0] has maximize=True", opt.step)
    assert_unchanged(before, snapshot(lin)); assert opt.step_count == 1
    opt.param_groups[0]['maximize'] = False; opt.step(); assert opt.step_count == 2
    opt.param_groups[0]['name'] = 'encoder'; opt.step()  # a key of the user's own, as torch allows: kept


@pytest.mark.parametrize('opt, key, owners', [(SGD, 'betas', 'Adam and AdamW'), (Adam, 'momentum', 'Muon and SGD'),
                                              (SGD, 'eps', 'Adam and AdamW and Muon')])
def test_a_setting_of_another_optimizer_in_a_group_is_refused(opt, key, owners):
    "A stray key would be ignored by the update and would make the saved group look like another optimizer's."
    value = {'betas': (0.9, 0.99), 'momentum': 0.9, 'eps': 1e-8}[key]
    assert_clear_error(ValueError, f"sets {key!r}, a setting of {owners}, not of {opt.__name__}", opt,
                       [{'params': Linear(2, 2).parameters(), key: value}], lr=0.1)


def test_a_schedule_refuses_a_rate_that_is_not_finite_and_leaves_the_groups_as_they_were():
    lin = Linear(2, 2); opt = SGD(lin.parameters(), lr=0.1)
    opt.param_groups[0]['lr'] = float('nan')
    assert_clear_error(ValueError, "param_groups[0]['lr'] to be a finite number, got nan", CosineAnnealingLR, opt, 3)
    assert 'initial_lr' not in opt.param_groups[0]
