"""Property-based parity tests: every minidl optimizer x option combination and every schedule against torch.optim +
torch.optim.lr_scheduler (the oracle), over 100 training steps of a random MLP in float64 (forward, BCE, backward, step,
schedule step). Parameters, optimizer buffers must agree to ~1e-10 relative (in practice: bit for bit), the rates exactly.

The hypothesis sweeps give both optimizers the same gradients (computed by minidl's backward at each side's own
parameters), so that a difference can only come from the optimizer or the schedule: Adam normalises every gradient
component, and a 1-ulp difference in a near-zero gradient (hand-written backward vs autograd) would otherwise grow
into a visible one after many steps. Two end-to-end tests at the bottom let each side compute its own gradients
(minidl's backward vs torch.autograd)."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minidl.testing import assert_close
from minidl import (LossBCE, Linear, Sequential, Sigmoid, Tanh, SGD, Adam, AdamW, StepLR, CosineAnnealingLR, OneCycleLR)

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

STEPS = 100
BATCH = 16


def close(a, b):
    "minidl.testing's policy for a run of STEPS steps, each reducing over a batch of BATCH samples through the MLP."
    assert_close(a, b, n=STEPS * BATCH, cond=10)  # cond: Adam divides by sqrt(v), which amplifies small gradients' errors
EXAMPLES = settings(max_examples=2, deadline=None, derandomize=True)


def mlp_pair(seed, widths):
    "A minidl MLP (Tanh hidden layers, Sigmoid output) in float64, and a functional torch copy of its parameters."
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]): layers += [Linear(a, b, dtype=torch.float64, generator=gen), Tanh()]
    model = Sequential(*layers, Linear(widths[-1], 1, dtype=torch.float64, generator=gen), Sigmoid())
    ref = [p.value.clone().requires_grad_() for p in model.parameters()]
    x = torch.rand(BATCH, widths[0], generator=gen, dtype=torch.float64) * 4 - 2
    y = (torch.rand(BATCH, 1, generator=gen, dtype=torch.float64) > 0.5).double()
    return model, ref, x, y


def ref_forward(ref, x):
    h = x
    for i in range(0, len(ref) - 2, 2): h = torch.tanh(h @ ref[i].T + ref[i + 1])
    return torch.sigmoid(h @ ref[-2].T + ref[-1])


def run_both(seed, widths, make_ours, make_ref, make_sched=None, make_ref_sched=None, grads='shared'):
    """Train both sides STEPS steps; check the rates at every step and the parameters and buffers at the end.
    `grads='shared'`: the torch side's gradients come from a twin minidl model whose parameters are views of the torch
    tensors; `'autograd'`: from torch.autograd."""
    model, ref, x, y = mlp_pair(seed, widths)
    twin = mlp_pair(seed, widths)[0]
    for p, r in zip(twin.parameters(), ref): p.value = r.detach()  # shares storage: torch's updates are seen by the twin
    opt, ref_opt = make_ours(model.parameters()), make_ref(ref)
    sched = make_sched(opt) if make_sched else None
    ref_sched = make_ref_sched(ref_opt) if make_ref_sched else None
    bce, bce2 = LossBCE(), LossBCE()
    for t in range(STEPS):
        assert opt.current_lr == ref_opt.param_groups[0]['lr'], t  # equal floats
        opt.zero_grad(); bce(model(x), y); model.backward(bce.backward(), input_grad=False); opt.step()
        ref_opt.zero_grad()
        if grads == 'shared':
            twin.zero_grad(); bce2(twin(x), y); twin.backward(bce2.backward(), input_grad=False)
            for p, r in zip(twin.parameters(), ref): r.grad = p.grad.clone()
        else:
            F.binary_cross_entropy(ref_forward(ref, x), y).backward()
        ref_opt.step()
        if sched:
            sched.step(); ref_sched.step()
            assert sched.get_last_lr() == ref_sched.get_last_lr(), t
    for p, r in zip(model.parameters(), ref): close(p.value, r.detach())
    for name, bufs in opt.state.items():
        if name == 'max_exp_avg_sq' and not opt.amsgrad: continue
        for b, r in zip(bufs, ref):
            close(b, ref_opt.state[r][name])
    assert opt.step_count == STEPS


seeds = st.integers(0, 2**31 - 1)
widths = st.lists(st.integers(1, 8), min_size=2, max_size=3)
lrs = st.floats(1e-3, 0.3)
unit = lambda lo, hi: st.floats(lo, hi)

# every combination of SGD's options: momentum off/on, dampening, nesterov, weight decay
SGD_COMBOS = [dict(momentum=m, dampening=d, nesterov=n, weight_decay=w)
              for m in (False, True) for d in (False, True) for n in (False, True) for w in (False, True)
              if not (n and (not m or d)) and not (d and not m)]


@pytest.mark.parametrize('combo', SGD_COMBOS, ids=lambda c: '-'.join(k for k, v in c.items() if v) or 'plain')
@EXAMPLES
@given(seed=seeds, widths=widths, lr=lrs, momentum=unit(0.1, 0.99), dampening=unit(0.05, 0.9), wd=unit(1e-4, 0.1))
def test_sgd(combo, seed, widths, lr, momentum, dampening, wd):
    kw = dict(lr=lr, momentum=momentum if combo['momentum'] else 0.0, dampening=dampening if combo['dampening'] else 0.0,
              nesterov=combo['nesterov'], weight_decay=wd if combo['weight_decay'] else 0.0)
    run_both(seed, widths, lambda ps: SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


ADAM_COMBOS = [(cls, ams, w) for cls in ('Adam', 'AdamW') for ams in (False, True) for w in (False, True)]


@pytest.mark.parametrize('cls,amsgrad,wd_on', ADAM_COMBOS)
@EXAMPLES
@given(seed=seeds, widths=widths, lr=st.floats(1e-4, 0.05), b1=unit(0.0, 0.95), b2=unit(0.9, 0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 0.0]), wd=unit(1e-4, 0.1), foreach=st.booleans())
def test_adam(cls, amsgrad, wd_on, seed, widths, lr, b1, b2, eps, wd, foreach):
    ours, ref = {'Adam': (Adam, torch.optim.Adam), 'AdamW': (AdamW, torch.optim.AdamW)}[cls]
    kw = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd if wd_on else 0.0, amsgrad=amsgrad)
    run_both(seed, widths, lambda ps: ours(ps, **kw), lambda ps: ref(ps, foreach=foreach, **kw))


OPTIMIZERS = {'sgd-momentum': (lambda ps: SGD(ps, lr=0.05, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
              'sgd-plain': (lambda ps: SGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
              'adam': (lambda ps: Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
              'adamw-amsgrad': (lambda ps: AdamW(ps, lr=0.01, amsgrad=True), lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True))}
LRS = torch.optim.lr_scheduler


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
        kw = dict(max_lr=max_lr, total_steps=STEPS, pct_start=pct_start, anneal_strategy=anneal, three_phase=three_phase,
                  cycle_momentum=cycle_momentum)
        ours_s, ref_s = OneCycleLR, LRS.OneCycleLR
    run_both(seed, widths, ours_o, ref_o, lambda o: ours_s(o, **kw), lambda o: ref_s(o, **kw))


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
    for p, r in zip(model.parameters(), ref): close(p.value, r.detach())


@pytest.mark.parametrize('make_ours,make_ref', [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (lambda ps: AdamW(ps, lr=0.01, amsgrad=True), lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True))], ids=['sgd', 'adamw'])
def test_end_to_end_with_autograd(make_ours, make_ref):
    "Each side computes its own gradients (minidl's backward vs torch.autograd) and takes its own steps, with a schedule."
    run_both(3, [2, 8, 8], make_ours, make_ref, lambda o: OneCycleLR(o, 0.05, STEPS), lambda o: LRS.OneCycleLR(o, 0.05, STEPS),
             grads='autograd')
