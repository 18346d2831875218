"""Learning-rate schedules against torch.optim.lr_scheduler, with one or several parameter groups."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    BATCH,
    EXAMPLES,
    LRS,
    OPT_PAIRS,
    STEPS,
    close_after_steps,
    groups_of,
    mlp_pair,
    pair,
    ref_forward,
    run_both,
    seeds,
    step_both,
    trained_linear,
    unit,
    widths,
)
from hypothesis import given
from hypothesis import strategies as st

from minidl import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    Linear,
    LossBCE,
    LRScheduler,
    OneCycleLR,
    Parameter,
    StepLR,
)
from minidl.testing import assert_clear_error, assert_close


def test_schedule_hyper_parameters():
    o = SGD(trained_linear().parameters(), lr=0.1, momentum=0.9)
    assert_clear_error(ValueError, 'step_size', StepLR, o, 0)
    assert_clear_error(ValueError, 'step_size', StepLR, o, True)
    assert_clear_error(ValueError, 'gamma', StepLR, o, 2, gamma=math.nan)
    assert_clear_error(ValueError, 'T_max', CosineAnnealingLR, o, 0)
    assert_clear_error(ValueError, 'eta_min', CosineAnnealingLR, o, 10, eta_min=math.inf)
    assert_clear_error(ValueError, 'max_lr', OneCycleLR, o, 0.0, 10)
    assert_clear_error(ValueError, 'div_factor', OneCycleLR, o, 1.0, 10, div_factor=math.nan)
    assert_clear_error(
        TypeError, 'minidl optimizer', StepLR, torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.1), 2
    )


def test_one_cycle_step_past_the_end_changes_nothing():
    o = SGD(trained_linear().parameters(), lr=0.1, momentum=0.9)
    s = OneCycleLR(o, 1.0, 3)
    for _ in range(3): s.step()
    lr, mom, epoch = o.lr, o.momentum, s.last_epoch
    assert_clear_error(ValueError, 'total_steps is 3', s.step)
    assert (o.lr, o.momentum, s.last_epoch) == (lr, mom, epoch)


def test_schedule_overflowing_rate_is_caught_by_step():
    m = trained_linear()
    o = SGD(m.parameters(), lr=0.1)
    s = StepLR(o, 1, gamma=1e200)
    for _ in range(3): s.step()
    before = [p.value.clone() for p in m.parameters()]
    assert_clear_error(ValueError, 'finite number', o.step)
    assert all(torch.equal(a, p.value) for a, p in zip(before, m.parameters()))


F64 = torch.float64


SCHEDS = {
    'step': (StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=7, gamma=0.6)),
    'cosine': (CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, dict(T_max=30, eta_min=1e-4)),
    'onecycle': (OneCycleLR, torch.optim.lr_scheduler.OneCycleLR, dict(max_lr=[0.05, 0.02], total_steps=100)),
    'onecycle-3': (
        OneCycleLR,
        torch.optim.lr_scheduler.OneCycleLR,
        dict(
            max_lr=0.03,
            total_steps=100,
            anneal_strategy='linear',
            three_phase=True,
            base_momentum=[0.8, 0.85],
        ),
    ),
}


@pytest.mark.parametrize('sched', list(SCHEDS))
@pytest.mark.parametrize('name', ['sgd', 'adam'])
def test_schedules_with_two_groups_equal_torch(sched, name):
    ours, theirs, kw = OPT_PAIRS[name]
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
    for p, q in zip(ps, qs): close_after_steps(p.value, q)


def test_schedule_creation_failure_leaves_groups_alone():
    ps, _, _ = pair()
    opt = SGD(groups_of(ps, [{}, {'lr': 0.5}]), lr=0.1, momentum=0.9)
    before = copy.deepcopy([{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups])
    for make in [lambda: OneCycleLR(opt, 0.1, 10, pct_start=0.1), lambda: OneCycleLR(opt, [0.1], 10)]:
        with pytest.raises(ValueError): make()
        assert [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups] == before


def test_state_dict_round_trip_with_a_schedule():
    ("OneCycleLR's settings live in the groups (as torch's): a state saved mid-cycle continues in torch with "
     "torch's schedule.")
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
    for q, q2 in zip(qs, qs2): close_after_steps(q2.detach(), q)


def test_schedule_rate_checked_at_step():
    p = Parameter(torch.ones(3)); opt = SGD([p], lr=0.1); p.grad += 1
    opt._set_scheduled('lr', float('nan'))
    with pytest.raises(ValueError, match='the learning rate is nan'): opt.step()
    assert torch.equal(p.value, torch.ones(3))


def test_schedule_failures_do_not_touch_the_optimizer():
    opt = SGD(Linear(2, 2).parameters(), lr=0.1)
    for make in [
        lambda: StepLR(opt, 0),
        lambda: CosineAnnealingLR(opt, -3),
        lambda: OneCycleLR(opt, 0.1, 10, pct_start=0.1),
        lambda: OneCycleLR(opt, -1, 10),
        lambda: OneCycleLR(opt, 0.1, 10, anneal_strategy='step'),
    ]:
        with pytest.raises(ValueError): make()
        assert (opt.lr, opt.momentum) == (0.1, 0.0)
    s = OneCycleLR(opt, 0.1, 3)
    for _ in range(3): s.step()
    with pytest.raises(ValueError, match='tried to step 4 times'): s.step()
    assert s.last_epoch == 3


OPTIMIZERS = {
    'sgd-momentum': (
        lambda ps: SGD(ps, lr=0.05, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    ),
    'sgd-plain': (lambda ps: SGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    'adam': (lambda ps: Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    'adamw-amsgrad': (
        lambda ps: AdamW(ps, lr=0.01, amsgrad=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True),
    ),
}


@pytest.mark.parity
@pytest.mark.parametrize('opt_name', list(OPTIMIZERS))
@pytest.mark.parametrize('sched', ['step', 'cosine', 'onecycle'])
@EXAMPLES
@given(seed=seeds, widths=widths, step_size=st.integers(1, 40), gamma=unit(0.1, 0.95), T_max=st.integers(5, 150),
       eta_min=st.sampled_from([0.0, 1e-4]), max_lr=unit(0.01, 0.2), pct_start=unit(0.1, 0.45),
       anneal=st.sampled_from(['cos', 'linear']), three_phase=st.booleans(), cycle_momentum=st.booleans())
def test_schedules(opt_name, sched, seed, widths, step_size, gamma, T_max, eta_min, max_lr, pct_start, anneal,
                   three_phase, cycle_momentum):
    ours_o, ref_o = OPTIMIZERS[opt_name]
    if sched == 'step':
        kw = dict(step_size=step_size, gamma=gamma); ours_s, ref_s = StepLR, LRS.StepLR
    elif sched == 'cosine':
        kw = dict(T_max=T_max, eta_min=eta_min); ours_s, ref_s = CosineAnnealingLR, LRS.CosineAnnealingLR
    else:
        kw = dict(
            max_lr=max_lr,
            total_steps=STEPS,
            pct_start=pct_start,
            anneal_strategy=anneal,
            three_phase=three_phase,
            cycle_momentum=cycle_momentum,
        )
        ours_s, ref_s = OneCycleLR, LRS.OneCycleLR
    run_both(seed, widths, ours_o, ref_o, lambda o: ours_s(o, **kw), lambda o: ref_s(o, **kw))


@pytest.mark.parity
def test_sgd_time_based_decay_is_lambda_lr():
    "minidl's own decay lr / (1 + decay t) equals torch's SGD driven by LambdaLR with that factor."
    model, ref, x, y = mlp_pair(0, [3, 5])
    opt = SGD(model.parameters(), lr=0.2, decay=0.05, momentum=0.5, weight_decay=0.01)
    ref_opt = torch.optim.SGD(ref, lr=0.2, momentum=0.5, weight_decay=0.01)
    ref_sched = LRS.LambdaLR(ref_opt, lambda t: 1 / (1 + 0.05 * t))
    bce = LossBCE()
    for _ in range(STEPS):
        # the same formula lr / (1 + decay t) in Python floats on both sides, a multiplication apart: a couple of ulps
        assert_close(torch.tensor(opt.current_lr), torch.tensor(ref_opt.param_groups[0]['lr']), n=2)
        opt.zero_grad(); bce(model(x), y); model.backward(bce.backward(), input_grad=False); opt.step()
        ref_opt.zero_grad(); F.binary_cross_entropy(ref_forward(ref, x), y).backward(); ref_opt.step(); ref_sched.step()
    for p, r in zip(model.parameters(), ref): assert_close(p.value, r.detach(), n=STEPS * BATCH, cond=10)


def test_one_cycle_formula_failures_are_named_and_change_nothing():
    "An empty last phase and a group added after creation make the formula fail; the schedule's checks name them."
    o = SGD(trained_linear().parameters(), lr=0.1, momentum=0.9)
    s = OneCycleLR(o, 1.0, 4, pct_start=1.0)                 # the warm-up takes the whole cycle: phase 2 has no steps
    for _ in range(3): s.step()
    state = (o.lr, o.momentum, s.last_epoch, s.get_last_lr())
    assert_clear_error(ValueError, 'makes phase 2 empty', s.step)
    assert (o.lr, o.momentum, s.last_epoch, s.get_last_lr()) == state
    o2 = SGD(trained_linear().parameters(), lr=0.1, momentum=0.9)
    s2 = OneCycleLR(o2, 1.0, 10)
    s2.step()
    o2.add_param_group({'params': trained_linear().parameters()})
    state = ([g['lr'] for g in o2.param_groups], s2.last_epoch)
    assert_clear_error(ValueError, 'has 2 parameter groups but the schedule was made for 1', s2.step)
    assert ([g['lr'] for g in o2.param_groups], s2.last_epoch) == state
    s3 = OneCycleLR(SGD(trained_linear().parameters(), lr=0.1), 1.0, 10, cycle_momentum=False)
    del s3.optimizer.param_groups[0]['max_lr']  # a key the schedule set, deleted by hand
    # no momentum keys asked
    assert_clear_error(ValueError, 'parameter group 0 has no max_lr (set when', s3.step)


def test_schedule_formulas_run_behind_the_shared_checks():
    "Every schedule's `_compute`, a user's too, is wrapped once: `_accept_epoch` first, `_compute_error` on a failure."
    for cls in (StepLR, CosineAnnealingLR, OneCycleLR): assert hasattr(cls._compute, '__wrapped__')

    class Halving(LRScheduler):
        "Halve the rate at every step, for `n` steps."
        def __init__(self, optimizer, n): super().__init__(optimizer, n=n)
        def _compute(self, epoch): return [g['initial_lr'] / 2 ** epoch for g in self.optimizer.param_groups], None
        def _accept_epoch(self, epoch):
            if epoch > self.n: raise ValueError(f"Halving: step {epoch} is beyond n={self.n}")

    o = SGD(trained_linear().parameters(), lr=1.0)
    h = Halving(o, 2)
    assert Halving._compute.__wrapped__ is not None and not hasattr(Halving._compute.__wrapped__, '__wrapped__')
    h.step(); h.step()
    assert o.lr == 0.25
    assert_clear_error(ValueError, 'beyond n=2', h.step)
    assert (o.lr, h.last_epoch) == (0.25, 2)


def test_a_rate_that_is_not_a_number_in_a_group_gets_a_clear_error_and_the_schedule_does_not_move():
    from minidl.optim.lr_scheduler import StepLR
    opt = SGD([Parameter(torch.randn(3, 2))], lr=0.1)
    s = StepLR(opt, 1, 0.5)
    opt.param_groups[0]['lr'] = 'x'
    with pytest.raises(TypeError, match=r"StepLR.step: param_groups\[0\]\['lr'\] is 'x', expected a number"): s.step()
    assert s.last_epoch == 0


@pytest.mark.parametrize('make', [lambda o: StepLR(o, 2), lambda o: CosineAnnealingLR(o, 2),
                                  lambda o: OneCycleLR(o, 0.5, 10)])
def test_a_group_added_after_the_schedule_is_refused_at_its_next_step(make):
    a, b = Parameter(torch.ones(2)), Parameter(torch.ones(2))
    o = SGD([a], lr=0.1, momentum=0.9)
    s = make(o)
    o.add_param_group({'params': [b], 'lr': 1.0})
    def settings(): return [{k: v for k, v in g.items() if k != 'params'} for g in o.param_groups], s.state_dict()
    before = settings()
    with pytest.raises(ValueError, match='2 parameter groups but the schedule was made for 1'): s.step()
    assert settings() == before


def test_torch_arguments_of_the_schedules():
    o = SGD([Parameter(torch.ones(2))], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([torch.ones(2, requires_grad=True)], lr=0.1, momentum=0.9)
    s, r = OneCycleLR(o, 0.1, epochs=3, steps_per_epoch=4), torch.optim.lr_scheduler.OneCycleLR(ref, 0.1, None, 3, 4)
    assert s.total_steps == r.total_steps == 12
    for _ in range(11):
        o.step(); ref.step(); s.step(); r.step()
        assert s.get_last_lr() == pytest.approx(r.get_last_lr(), rel=1e-15)
    assert OneCycleLR(o, 0.1, 5, 100, 100).total_steps == 5  # total_steps first, as torch
    with pytest.raises(ValueError, match='total_steps, or epochs and steps_per_epoch'): OneCycleLR(o, 0.1, epochs=3)
    for make in (lambda: StepLR(o, 3, last_epoch=5), lambda: CosineAnnealingLR(o, 3, 0.0, 2)):
        with pytest.raises(ValueError, match='load_state_dict'): make()
    StepLR(o, 3, 0.1, -1)
    with pytest.raises(TypeError, match='takes no epoch'): s.step(5)


def test_one_cycle_refuses_a_cycle_that_takes_nesterov_momentum_to_zero():
    o = SGD([Parameter(torch.ones(2))], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match='Nesterov momentum, which needs a momentum > 0'):
        OneCycleLR(o, max_lr=0.5, total_steps=10, base_momentum=0.0)
    assert o.param_groups[0]['momentum'] == 0.9 and 'max_lr' not in o.param_groups[0]
