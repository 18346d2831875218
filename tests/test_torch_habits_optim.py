"""A PyTorch user's optimizer habits, written the same way with torch.optim and minidl and compared in float64:
param_groups (read and written mid-training, per-group settings, add_param_group, defaults), zero_grad(set_to_none=...),
schedules acting through the groups (two groups, 100 steps), torch-layout state dicts both ways (continuing 20 steps),
the minidl.optim namespace and `python -m minidl --help`. Also the reliability rules of the same code: a value written
into param_groups is checked at the next step and a bad one changes nothing; a schedule of another optimizer is
refused by train() and the checkpoint helpers; a step is all or nothing even when an in-place update fails part-way.

Both sides get the same gradients (a fixed random sequence), so a difference can only come from the optimizer or the
schedule. minidl runs the same foreach operations as torch.optim in the same order, so the results agree to the last
bit in practice; the tolerance allows a few ulps per step over the run (rtol 1e-10) with an absolute floor scaled to
the values, as tests/test_optim_vs_torch.py does. Learning rates and momenta are scalar Python arithmetic in the same
order on both sides, hence compared exactly."""
import copy, math, subprocess, sys
from unittest import mock

import pytest
import torch

import minidl
from minidl import Parameter, Linear, ReLU, Sigmoid, Sequential, LossBCE, train, save_checkpoint, load_checkpoint
from minidl import optim
from minidl.optim import SGD, Adam, AdamW
from minidl.optim.lr_scheduler import StepLR, CosineAnnealingLR, OneCycleLR

F64 = torch.float64
SHAPES = [(4, 3), (4,), (2, 4), (2,)]


def close(a, b):
    "float64 agreement after a run of optimizer steps: a few ulps per step (rtol), an absolute floor scaled to the values."
    b = b.detach()
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * max(1.0, b.abs().max().item()))


def pair(seed=0):
    "minidl Parameters and torch leaf tensors with the same float64 values, and a gradient sequence."
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=F64) for s in SHAPES]
    grads = [[torch.randn(s, generator=g, dtype=F64) for s in SHAPES] for _ in range(120)]
    return [Parameter(v.clone()) for v in init], [v.clone().requires_grad_() for v in init], grads


def step_both(ps, qs, opt, ref, gs):
    for p, q, g in zip(ps, qs, gs):
        p.grad.copy_(g); q.grad = g.clone()
    opt.step(); ref.step()


def groups_of(xs, settings):
    "torch's per-group form: [{'params': [...], **settings[i]}, ...], two parameters per group."
    return [{'params': xs[2 * i:2 * i + 2], **s} for i, s in enumerate(settings)]


OPTS = {'sgd': (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        'sgd-dampening': (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
        'adam': (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=1e-2, amsgrad=True)),
        'adamw': (AdamW, torch.optim.AdamW, dict(lr=0.01))}


# ------------------------------------------------------------------------------------------------- param_groups

@pytest.mark.parametrize('name', list(OPTS))
def test_per_group_settings_and_writes_mid_training(name):
    ours, theirs, kw = OPTS[name]
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
    for p, q in zip(ps, qs): close(p.value, q)
    assert [g['lr'] for g in opt.param_groups] == [g['lr'] for g in ref.param_groups]


@pytest.mark.parametrize('name', ['sgd', 'adam', 'adamw'])
def test_add_param_group_mid_training(name):
    "A group added after 15 steps: its own settings, and (Adam) its own step count for the bias correction, as torch."
    ours, theirs, kw = OPTS[name]
    ps, qs, grads = pair(2)
    opt, ref = ours(ps[:2], **kw), theirs(qs[:2], **kw)
    for t, gs in enumerate(grads[:40]):
        if t == 15:
            opt.add_param_group({'params': ps[2:], 'lr': 0.003}); ref.add_param_group({'params': qs[2:], 'lr': 0.003})
        n = len(opt.params)
        step_both(ps[:n], qs[:n], opt, ref, gs[:n])
    for p, q in zip(ps, qs): close(p.value, q)
    if ours is not SGD:
        assert [float(s['step']) for s in opt.state_dict()['state'].values()] == [float(ref.state[q]['step']) for q in qs]


def test_lr_attribute_and_groups():
    ps, _, _ = pair()
    opt = SGD(groups_of(ps, [{}, {'lr': 0.5}]), lr=0.1)
    with pytest.raises(AttributeError, match='different values'): opt.lr
    opt.lr = 0.2  # sets every group, checked first
    assert [g['lr'] for g in opt.param_groups] == [0.2, 0.2] and opt.lr == 0.2
    with pytest.raises(ValueError, match='finite number >= 0'): opt.lr = -1.0
    assert [g['lr'] for g in opt.param_groups] == [0.2, 0.2]
    with pytest.raises(TypeError, match='either Parameters or parameter groups'): SGD([ps[0], {'params': [ps[1]]}])
    with pytest.raises(ValueError, match='more than once'): SGD([{'params': ps[:2]}, {'params': ps[1:3]}])
    with pytest.raises(ValueError, match="needs 'params'"): opt.add_param_group({'lr': 0.1})
    with pytest.raises(ValueError, match='more than once'): opt.add_param_group({'params': [ps[0]]})
    opt.add_param_group({'params': Parameter(torch.zeros(2))})  # a single Parameter, as torch accepts a single tensor
    assert len(opt.param_groups) == 3 and opt.param_groups[2]['lr'] == opt.defaults['lr'] == 0.1  # a new group's settings: the defaults, as torch


def snapshot(ps, opt):
    return ([p.value.clone() for p in ps], [p.grad.clone() for p in ps], opt.step_count,
            {k: [None if t is None else t.clone() for t in v] for k, v in opt.state.items()})


def same(a, b):
    assert a[2] == b[2] and a[3].keys() == b[3].keys()
    for x, y in zip(a[0] + a[1], b[0] + b[1]): assert torch.equal(x, y)
    for k in a[3]:
        for x, y in zip(a[3][k], b[3][k]): assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize('key,value,msg', [
    ('lr', -0.1, 'the learning rate of parameter group 1 is -0.1'), ('lr', math.nan, 'the learning rate of parameter group 1 is nan'),
    ('lr', '0.1', "param_groups[1]['lr'] to be a finite number"), ('momentum', -0.5, "param_groups[1]['momentum'] to be a finite number >= 0"),
    ('nesterov', 1, "param_groups[1]['nesterov'] to be True or False"), ('dampening', 0.5, 'Nesterov momentum requires'),
    ('weight_decay', math.inf, "param_groups[1]['weight_decay']"), ('lr', None, "param_groups[1]['lr']")])
def test_written_value_checked_at_next_step_changes_nothing(key, value, msg):
    ps, _, grads = pair()
    opt = SGD(groups_of(ps, [{}, {'nesterov': True}]), lr=0.1, momentum=0.9)
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    opt.step()
    opt.param_groups[1][key] = value  # the last group: the first would be updated first without the up-front checks
    before = snapshot(ps, opt)
    with pytest.raises((ValueError, TypeError), match=msg.replace('[', '\\[').replace(']', '\\]')): opt.step()
    same(snapshot(ps, opt), before)


def test_adam_written_betas_and_eps_checked():
    ps, _, grads = pair()
    opt = Adam(groups_of(ps, [{}, {}]))
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    opt.step()
    before = snapshot(ps, opt)
    for key, value, msg in [('betas', (1.0, 0.9), 'two numbers in'), ('betas', [0.9], 'two numbers in'), ('eps', -1e-8, 'eps'),
                            ('amsgrad', 'yes', 'True or False')]:
        good = opt.param_groups[1][key]
        opt.param_groups[1][key] = value
        with pytest.raises((ValueError, TypeError), match=msg): opt.step()
        same(snapshot(ps, opt), before)
        opt.param_groups[1][key] = good
    opt.param_groups[1]['betas'] = [0.8, 0.99]  # a list, as a user may write it: used as a tuple
    opt.step()
    assert opt.param_groups[1]['betas'] == (0.8, 0.99) and opt.step_count == 2


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


# ------------------------------------------------------------------------------------------------- schedules

SCHEDS = {'step': (StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=7, gamma=0.6)),
          'cosine': (CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, dict(T_max=30, eta_min=1e-4)),
          'onecycle': (OneCycleLR, torch.optim.lr_scheduler.OneCycleLR, dict(max_lr=[0.05, 0.02], total_steps=100)),
          'onecycle-3': (OneCycleLR, torch.optim.lr_scheduler.OneCycleLR,
                         dict(max_lr=0.03, total_steps=100, anneal_strategy='linear', three_phase=True, base_momentum=[0.8, 0.85]))}


@pytest.mark.parametrize('sched', list(SCHEDS))
@pytest.mark.parametrize('name', ['sgd', 'adam'])
def test_schedules_with_two_groups_equal_torch(sched, name):
    ours, theirs, kw = OPTS[name]
    ours_s, theirs_s, skw = SCHEDS[sched]
    ps, qs, grads = pair(3)
    per = [{}, {'lr': kw['lr'] / 4}]
    opt, ref = ours(groups_of(ps, per), **kw), theirs(groups_of(qs, per), **kw)
    s, r = ours_s(opt, **skw), theirs_s(ref, **skw)
    assert s.base_lrs == r.base_lrs and s.get_last_lr() == r.get_last_lr()
    key = 'momentum' if ours is SGD else 'betas'
    for gs in grads[:100]:
        step_both(ps, qs, opt, ref, gs)
        s.step(); r.step()
        assert s.get_last_lr() == r.get_last_lr()  # every group's rate, equal floats
        assert [g['lr'] for g in opt.param_groups] == [g['lr'] for g in ref.param_groups]
        assert [tuple(g[key]) if key == 'betas' else g[key] for g in opt.param_groups] == \
               [tuple(g[key]) if key == 'betas' else g[key] for g in ref.param_groups]
    for p, q in zip(ps, qs): close(p.value, q)


def test_schedule_creation_failure_leaves_groups_alone():
    ps, _, _ = pair()
    opt = SGD(groups_of(ps, [{}, {'lr': 0.5}]), lr=0.1, momentum=0.9)
    before = copy.deepcopy([{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups])
    for make in [lambda: OneCycleLR(opt, 0.1, 10, pct_start=0.1), lambda: OneCycleLR(opt, [0.1], 10)]:
        with pytest.raises(ValueError): make()
        assert [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups] == before


# ------------------------------------------------------------------------------------------------- state dicts

@pytest.mark.parametrize('name', list(OPTS))
def test_state_dict_to_torch_and_back(name):
    "minidl -> torch.optim after 20 steps, torch continues 20 steps; torch -> minidl, minidl continues 20 steps; all equal to an uninterrupted torch run."
    ours, theirs, kw = OPTS[name]
    ps, qs, grads = pair(4)
    per = [{'lr': kw['lr'] / 2}, {}]
    opt, ref = ours(groups_of(ps, per), **kw), theirs(groups_of(qs, per), **kw)
    for gs in grads[:20]: step_both(ps, qs, opt, ref, gs)
    sd = opt.state_dict()
    assert set(sd) >= {'state', 'param_groups'} and sorted(sd['state']) == [0, 1, 2, 3]
    assert [g['params'] for g in sd['param_groups']] == [[0, 1], [2, 3]]
    names = {'momentum_buffer'} if ours is SGD else {'step', 'exp_avg', 'exp_avg_sq'} | ({'max_exp_avg_sq'} if kw.get('amsgrad') else set())
    assert all(set(s) == names for s in sd['state'].values())
    # minidl -> torch: torch continues from minidl's state as the uninterrupted torch run does
    qs2 = [p.value.clone().requires_grad_() for p in ps]
    ref2 = theirs(groups_of(qs2, [{}, {}]), lr=0.5)
    ref2.load_state_dict(copy.deepcopy(sd))  # torch keeps the tensors it is given: a copy, as both go on
    for k in ('lr', 'weight_decay'): assert [g[k] for g in ref2.param_groups] == [g[k] for g in ref.param_groups]
    for gs in grads[20:40]:
        for q, q2, g in zip(qs, qs2, gs): q.grad = g.clone(); q2.grad = g.clone()
        ref.step(); ref2.step()
    for q, q2 in zip(qs, qs2): close(q2.detach(), q)
    # torch -> minidl
    ps3 = [Parameter(q2.detach().clone()) for q2 in qs2]
    opt3 = ours(groups_of(ps3, [{}, {}]), lr=0.5)
    opt3.load_state_dict(ref2.state_dict())
    assert [g['lr'] for g in opt3.param_groups] == [g['lr'] for g in ref.param_groups]
    for gs in grads[40:60]:
        for p, q, g in zip(ps3, qs, gs): p.grad.copy_(g); q.grad = g.clone()
        opt3.step(); ref.step()
    for p, q in zip(ps3, qs): close(p.value, q)
    assert opt3.state_dict()['step_count'] == (60 if ours is not SGD else 20)  # 40 loaded + 20 (torch's SGD state has no step count: 0 + 20)


def test_state_dict_round_trip_with_a_schedule():
    "OneCycleLR's settings live in the groups (as torch's): a state saved mid-cycle continues in torch with torch's schedule."
    ps, qs, grads = pair(5)
    opt, ref = SGD(ps, lr=0.1, momentum=0.9), torch.optim.SGD(qs, lr=0.1, momentum=0.9)
    s, r = OneCycleLR(opt, 0.1, 60), torch.optim.lr_scheduler.OneCycleLR(ref, 0.1, 60)
    for gs in grads[:30]: step_both(ps, qs, opt, ref, gs); s.step(); r.step()
    qs2 = [p.value.clone().requires_grad_() for p in ps]
    ref2 = torch.optim.SGD(qs2, lr=0.1, momentum=0.9)
    r2 = torch.optim.lr_scheduler.OneCycleLR(ref2, 0.1, 60)
    ref2.load_state_dict(copy.deepcopy(opt.state_dict())); r2.load_state_dict(r.state_dict())
    for gs in grads[30:60]:
        for q, q2, g in zip(qs, qs2, gs): q.grad = g.clone(); q2.grad = g.clone()
        ref.step(); ref2.step(); r.step(); r2.step()
    for q, q2 in zip(qs, qs2): close(q2.detach(), q)


def test_torch_state_dict_checked_completely_before_loading():
    ps, qs, grads = pair(6)
    opt, ref = Adam(ps), torch.optim.Adam(qs)
    for gs in grads[:3]: step_both(ps, qs, opt, ref, gs)
    before = snapshot(ps, opt)
    good = ref.state_dict()
    bad_cases = []
    sd = copy.deepcopy(good); sd['state'][3]['exp_avg'] = torch.zeros(5); bad_cases.append((sd, 'exp_avg[3] is shape (5)'))
    sd = copy.deepcopy(good); sd['state'][2]['step'] = torch.tensor(7.0); bad_cases.append((sd, 'different step counts'))
    sd = copy.deepcopy(good); del sd['state'][1]; bad_cases.append((sd, 'one tensor per parameter'))
    sd = copy.deepcopy(good); sd['param_groups'][0]['maximize'] = True; bad_cases.append((sd, 'minidl minimises'))
    sd = copy.deepcopy(good); sd['param_groups'][0]['betas'] = (0.9, 1.5); bad_cases.append((sd, 'two numbers in'))
    sd = copy.deepcopy(good); sd['param_groups'][0]['params'] = [0, 1, 2]; bad_cases.append((sd, 'has 3 parameters in the state dict, 4'))
    bad_cases.append((torch.optim.SGD(qs, lr=0.1, momentum=0.9).state_dict(), "of a 'SGD' optimizer, expected 'Adam'"))
    for sd, msg in bad_cases:
        with pytest.raises(ValueError, match=msg.replace('(', '\\(').replace(')', '\\)').replace('[', '\\[').replace(']', '\\]')):
            opt.load_state_dict(sd)
        same(snapshot(ps, opt), before)
    with pytest.raises(ValueError, match="'Adam' optimizer, expected 'AdamW'"): AdamW(ps).load_state_dict(good)


def test_earlier_layout_still_loads():
    "A state dict (or checkpoint) written before the torch layout: {'type', 'step_count', 'hyper', 'state': {name: [tensors]}}."
    ps, qs, grads = pair(7)
    opt, ref = Adam(ps, lr=0.01), torch.optim.Adam(qs, lr=0.01)
    for gs in grads[:5]: step_both(ps, qs, opt, ref, gs)
    earlier = {'type': 'Adam', 'step_count': 5, 'hyper': {'lr': 0.01, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.0, 'amsgrad': False},
               'state': {'exp_avg': [ref.state[q]['exp_avg'].clone() for q in qs], 'exp_avg_sq': [ref.state[q]['exp_avg_sq'].clone() for q in qs]}}
    ps2 = [Parameter(p.value.clone()) for p in ps]
    opt2 = Adam(ps2); opt2.load_state_dict(earlier)
    for gs in grads[5:25]:
        for p, q, g in zip(ps2, qs, gs): p.grad.copy_(g); q.grad = g.clone()
        opt2.step(); ref.step()
    for p, q in zip(ps2, qs): close(p.value, q)
    with pytest.raises(ValueError, match="of a 'SGD' optimizer, expected 'Adam'"): opt2.load_state_dict({**earlier, 'type': 'SGD'})


def test_checkpoint_continues_as_torch(tmp_path):
    "save_checkpoint stores the torch-layout optimizer state: torch.optim loads it from the file and continues as minidl."
    ps, qs, grads = pair(8)
    model = Sequential(Linear(2, 2))  # the checkpoint needs a model; the parameters trained here are ps
    opt = AdamW(groups_of(ps, [{}, {'lr': 3e-3}]), lr=0.01, amsgrad=True)
    for gs in grads[:10]:
        for p, g in zip(ps, gs): p.grad.copy_(g)
        opt.step()
    path = save_checkpoint(tmp_path / 'c.pt', model, opt)
    sd = torch.load(path, weights_only=True)['optimizer']
    qs2 = [p.value.clone().requires_grad_() for p in ps]
    ref = torch.optim.AdamW(groups_of(qs2, [{}, {}])); ref.load_state_dict(sd)
    ps3 = [Parameter(p.value.clone()) for p in ps]
    opt3 = AdamW(groups_of(ps3, [{}, {}]))
    load_checkpoint(path, Sequential(Linear(2, 2)), opt3)
    for gs in grads[10:30]:
        for p, p3, q, g in zip(ps, ps3, qs2, gs): p.grad.copy_(g); p3.grad.copy_(g); q.grad = g.clone()
        opt.step(); opt3.step(); ref.step()
    for p, p3, q in zip(ps, ps3, qs2): close(p.value, q); assert torch.equal(p3.value, p.value)  # same ops, same order


# ------------------------------------------------------------------------------------------------- namespace, CLI

def test_namespace_imports():
    from minidl import optim as o
    import minidl.optim.lr_scheduler as lrs
    from minidl.optim.lr_scheduler import StepLR as S, OneCycleLR as O, LRScheduler
    from minidl.optim import Optimizer
    assert (o.SGD, o.Adam, o.AdamW, o.Optimizer) == (minidl.SGD, minidl.Adam, minidl.AdamW, minidl.Optimizer)
    assert o.lr_scheduler is lrs and o.lr_scheduler.OneCycleLR is O is minidl.OneCycleLR and S is minidl.StepLR
    assert issubclass(S, LRScheduler) and issubclass(o.SGD, Optimizer)
    assert set(o.__all__) == {'Optimizer', 'SGD', 'Adam', 'AdamW', 'lr_scheduler'}
    for name in ('SGD', 'Adam', 'AdamW', 'Optimizer', 'StepLR', 'CosineAnnealingLR', 'OneCycleLR', 'LRScheduler'):
        assert name in minidl.__all__


def test_python_m_minidl_help_lists_the_commands():
    r = subprocess.run([sys.executable, '-m', 'minidl', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == ''
    lines = r.stdout.splitlines()
    assert any(l.startswith('  circle  ') for l in lines) and any(l.startswith('  digits  ') for l in lines), r.stdout
    assert 'python -m minidl COMMAND --help' in r.stdout
    for cmd in ('circle', 'digits'):
        r = subprocess.run([sys.executable, '-m', 'minidl', cmd, '--help'], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and f'   or: python -m minidl {cmd} [options]' in r.stdout.splitlines(), r.stdout


# ------------------------------------------------------------------------------------------------- reliability

def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=g) * 2 - 1
    return x, (x.sum(1, keepdim=True) > 0).float()


def test_train_refuses_a_schedule_of_another_optimizer():
    x, y = _data()
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())
    opt, other = SGD(model.parameters(), lr=0.1), SGD(Sequential(Linear(2, 1)).parameters(), lr=0.1)
    before = [p.value.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match='drives another optimizer \\(SGD over 2 parameters\\), not the SGD over 4 parameters given'):
        train(model, LossBCE(), opt, x, y, epochs=2, scheduler=StepLR(other, 1), progress=False)
    assert all(torch.equal(a, p.value) for a, p in zip(before, model.parameters())) and opt.step_count == 0
    ref = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # any schedule with an optimizer attribute
    with pytest.raises(ValueError, match='drives another optimizer'):
        train(model, LossBCE(), opt, x, y, epochs=1, scheduler=torch.optim.lr_scheduler.StepLR(ref, 1), progress=False)
    hist = train(model, LossBCE(), opt, x, y, epochs=3, scheduler=StepLR(opt, 1, 0.5), progress=False)
    assert hist.lr == [0.1, 0.05, 0.025]


def test_checkpoint_helpers_refuse_a_schedule_of_another_optimizer(tmp_path):
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())
    opt, other = Adam(model.parameters()), Adam(model.parameters())
    with pytest.raises(ValueError, match='drives another optimizer'): save_checkpoint(tmp_path / 'c.pt', model, opt, StepLR(other, 2))
    with pytest.raises(ValueError, match='that was not given'): save_checkpoint(tmp_path / 'c.pt', model, None, StepLR(other, 2))
    assert not any(tmp_path.iterdir())  # nothing written
    sched = StepLR(opt, 2)
    path = save_checkpoint(tmp_path / 'c.pt', model, opt, sched)
    for p in model.parameters(): p.grad += 1.0
    opt.step(); sched.step()
    before = ([p.value.clone() for p in model.parameters()], opt.step_count, sched.last_epoch)
    with pytest.raises(ValueError, match='drives another optimizer'): load_checkpoint(path, model, opt, StepLR(other, 2))
    assert all(torch.equal(a, p.value) for a, p in zip(before[0], model.parameters()))
    assert (opt.step_count, sched.last_epoch) == before[1:]
    load_checkpoint(path, model, opt, sched)
    assert (opt.step_count, sched.last_epoch) == (0, 0)


@pytest.mark.parametrize('make,msg', [
    (lambda: torch.zeros(1).expand(4), 'elements sharing one memory location'),
    (lambda: torch.zeros(2, 1).expand(2, 3), 'elements sharing one memory location'),
    (lambda: torch.zeros(4).requires_grad_(), 'requires grad'),
    (lambda: _inference_zeros(4), 'inference tensor')])
@pytest.mark.parametrize('name', list(OPTS))
def test_value_that_cannot_be_written_is_refused_before_any_update(make, msg, name):
    ours, _, kw = OPTS[name]
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
        real([tensors[0]], *[[x[0]] if isinstance(x, (list, tuple)) else x for x in args], **kw)  # part of the work is done...
        raise RuntimeError('simulated failure inside the kernel')
    return op


@pytest.mark.parametrize('op', ['_foreach_add_', '_foreach_addcdiv_', '_foreach_mul_'])
@pytest.mark.parametrize('name', list(OPTS))
def test_step_that_fails_part_way_is_undone(name, op):
    "The first step (new tensors) and the first after a change of the operations keep copies and restore them."
    ours, _, kw = OPTS[name]
    ps, _, grads = pair(9)
    opt = ours(groups_of(ps, [{}, {'lr': kw['lr'] / 2}]), **kw)
    def attempt():
        before = snapshot(ps, opt)
        real = getattr(torch, op)
        with mock.patch.object(torch, op, _failing_after_first(real)):
            try: opt.step()
            except RuntimeError as e: assert 'simulated failure' in str(e)
            else: return  # this optimizer does not use `op` on this path
        same(snapshot(ps, opt), before)
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    attempt()  # the first step
    opt.step(); opt.step()
    opt.param_groups[1]['weight_decay'] = 0.0 if opt.param_groups[1]['weight_decay'] else 1e-2  # other operations in group 1
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


def test_grouped_steps_read_nothing_back():
    "Several groups, a schedule, values written into the groups: still no tensor value read back to the host."
    import contextlib
    ps, _, grads = pair()
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    def refuse(*a, **k): raise AssertionError('read a tensor back to the host')
    with contextlib.ExitStack() as stack:
        for name in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy'):
            stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
        for make in (lambda: SGD(groups_of(ps, [{}, {'lr': 0.01}]), lr=0.1, momentum=0.9, nesterov=True),
                     lambda: Adam(groups_of(ps, [{}, {'betas': (0.8, 0.9)}]), amsgrad=True)):
            opt = make(); s = OneCycleLR(opt, [0.1, 0.05], 10)
            for t in range(4):
                if t == 2: opt.param_groups[1]['lr'] = 0.02
                opt.step(); s.step(); opt.zero_grad(set_to_none=True)


def test_checkpoint_in_the_earlier_layout_loads(tmp_path):
    "A checkpoint written before the torch layout (optimizer {'type', 'step_count', 'hyper', 'state'}, schedule with base_lr/last_lr) loads and continues exactly."
    g = torch.Generator().manual_seed(0)
    def fresh():
        model = Sequential(Linear(2, 3, generator=g), ReLU(), Linear(3, 1, generator=g)).to(dtype=F64)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        return model, opt, OneCycleLR(opt, 0.1, 30)
    grads = [[torch.randn(p.shape, generator=g, dtype=F64) for p in fresh()[0].parameters()] for _ in range(30)]
    def steps(model, opt, sched, gs_list):
        for gs in gs_list:
            for p, gr in zip(model.parameters(), gs): p.grad.copy_(gr)
            opt.step(); sched.step()
    model, opt, sched = fresh()
    steps(model, opt, sched, grads[:10])
    path = save_checkpoint(tmp_path / 'new.pt', model, opt, sched)
    ck = torch.load(path, weights_only=True)
    sd, ssd = ck['optimizer'], ck['scheduler']
    ck['optimizer'] = {'type': 'SGD', 'step_count': 10, 'state': {'momentum_buffer': [sd['state'][i]['momentum_buffer'] for i in range(4)]},
                       'hyper': {k: sd['param_groups'][0][k] for k in ('lr', 'decay', 'momentum', 'dampening', 'nesterov', 'weight_decay')}}
    ck['scheduler'] = {'type': 'OneCycleLR', 'last_epoch': ssd['last_epoch'], 'base_lr': ssd['base_lrs'][0], 'last_lr': ssd['last_lrs'][0],
                       'hyper': ssd['hyper']}
    torch.save(ck, tmp_path / 'old.pt')
    model2, opt2, sched2 = fresh()
    load_checkpoint(tmp_path / 'old.pt', model2, opt2, sched2)
    assert (opt2.step_count, sched2.last_epoch, opt2.param_groups[0]['max_lr']) == (10, 10, 0.1)
    steps(model, opt, sched, grads[10:]); steps(model2, opt2, sched2, grads[10:])
    for p, q in zip(model.parameters(), model2.parameters()): assert torch.equal(p.value, q.value)  # same ops, same order
