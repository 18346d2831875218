"""Muon against torch.optim.Muon (its Newton-Schulz iteration run in the parameters' dtype, as minidl's) over its
options, under schedules, and its all-or-nothing step."""
from unittest import mock

import pytest
import torch
from helpers import seeds
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl.optim.muon as muon_module
from minidl import Muon, OneCycleLR, Parameter
from minidl.testing import full_precision_muon

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

F64 = torch.float64
shapes = st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4)


def run_both(seed, shapes, kw, steps=30, sched=None):
    "Parameters and momentum buffers of minidl's and torch's Muon after `steps` steps on the same random gradients"
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(*s, generator=g, dtype=F64) for s in shapes]
    grads = [[torch.randn(*s, generator=g, dtype=F64) for s in shapes] for _ in range(steps)]
    ours = [Parameter(t.clone()) for t in init]
    refs = [t.clone().requires_grad_() for t in init]
    opt, ref = Muon(ours, **kw), torch.optim.Muon(refs, **kw)
    s1, s2 = (sched(opt, OneCycleLR), sched(ref, torch.optim.lr_scheduler.OneCycleLR)) if sched else (None, None)
    for gs in grads:
        for p, r, gr in zip(ours, refs, gs): p.grad.copy_(gr); r.grad = gr.clone()
        opt.step()
        with full_precision_muon(): ref.step()
        if sched:
            s1.step(); s2.step()
            assert s1.get_last_lr() == s2.get_last_lr()
            assert opt.param_groups[0]['momentum'] == ref.param_groups[0]['momentum']
    # the same operations in the same order on the same values: equal to the bit
    for p, r in zip(ours, refs): assert torch.equal(p.value, r.detach())
    for b, r in zip(opt.state['momentum_buffer'], refs): assert torch.equal(b, ref.state[r]['momentum_buffer'])
    assert opt.step_count == steps


@settings(max_examples=25, deadline=None, derandomize=True)  # cheap: small matrices, 30 steps
@given(seed=seeds, shapes=shapes, lr=st.floats(1e-3, 0.1), momentum=st.floats(0.0, 0.99), nesterov=st.booleans(),
       wd=st.sampled_from([0.0, 0.01, 0.3]), adjust=st.sampled_from([None, 'original', 'match_rms_adamw']),
       ns_steps=st.integers(1, 7))
def test_muon_equals_torch(seed, shapes, lr, momentum, nesterov, wd, adjust, ns_steps):
    run_both(seed, shapes, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd, adjust_lr_fn=adjust,
                                ns_steps=ns_steps))


@pytest.mark.parametrize('cycle', [True, False])
def test_muon_under_one_cycle(cycle):
    "OneCycleLR drives the rate (and, if asked, Muon's momentum) as torch's does on torch's Muon"
    run_both(3, [(5, 7), (7, 5), (4, 4)], dict(lr=0.02), steps=40,
             sched=lambda o, cls: cls(o, max_lr=0.05, total_steps=40, cycle_momentum=cycle))


def test_a_failure_part_way_changes_nothing():
    ps = [Parameter(torch.randn(4, 3, dtype=F64)), Parameter(torch.randn(3, 5, dtype=F64))]
    opt = Muon(ps, lr=0.1)
    for p in ps: p.grad += 1.0
    before = [p.value.clone() for p in ps]
    calls = []
    real = muon_module._newton_schulz

    def failing(*a):
        calls.append(1)
        if len(calls) == 2: raise RuntimeError('simulated failure in the second matrix')
        return real(*a)

    with mock.patch.object(muon_module, '_newton_schulz', failing), pytest.raises(RuntimeError, match='simulated'):
        opt.step()
    for p, b in zip(ps, before): assert torch.equal(p.value, b)  # the first matrix, already updated, is put back
    assert (opt.step_count, opt.state) == (0, {})
    opt.step()
    assert opt.step_count == 1 and not torch.equal(ps[0].value, before[0])


def test_float32_and_shapes_kept():
    p = Parameter(torch.randn(6, 2))
    opt = Muon([p], lr=0.05)
    p.grad += torch.randn(6, 2)
    opt.step()
    assert p.value.dtype == torch.float32 and p.value.shape == (6, 2)
    assert opt.state['momentum_buffer'][0].dtype == torch.float32


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=seeds, k=st.integers(1, 3), rows=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1,
       max_size=3), lr=st.floats(1e-3, 0.1), nesterov=st.booleans(), wd=st.sampled_from([0.0, 0.3]),
       adjust=st.sampled_from([None, 'match_rms_adamw']))
def test_stacked_equals_torch_on_the_blocks(seed, k, rows, lr, nesterov, wd, adjust):
    """`stacked=k`: each parameter is updated as the k matrices it stacks along its rows; the oracle is torch's Muon
    given those blocks as parameters of their own (equal to the bit: the same operations on the same values)"""
    g = torch.Generator().manual_seed(seed)
    shapes = [(k * a, b) for a, b in rows]
    kw = dict(lr=lr, nesterov=nesterov, weight_decay=wd, adjust_lr_fn=adjust)
    ours = [Parameter(torch.randn(*s, generator=g, dtype=F64)) for s in shapes]
    blocks = [[b.clone().requires_grad_() for b in p.value.chunk(k)] for p in ours]
    opt, ref = Muon(ours, stacked=k, **kw), torch.optim.Muon([b for bs in blocks for b in bs], **kw)
    for _ in range(20):
        for p, bs in zip(ours, blocks):
            gr = torch.randn(p.value.shape, generator=g, dtype=F64)
            p.grad.copy_(gr)
            for b, gb in zip(bs, gr.chunk(k)): b.grad = gb.clone()
        opt.step()
        with full_precision_muon(): ref.step()
    for p, bs in zip(ours, blocks): assert torch.equal(p.value, torch.cat([b.detach() for b in bs]))


def test_stacked_in_groups_and_state_dicts():
    "stacked matrices in a group beside whole ones; the setting travels in the state dict; a bad split is refused"
    qkv, w = Parameter(torch.randn(6, 2, dtype=F64)), Parameter(torch.randn(2, 2, dtype=F64))
    opt = Muon([dict(params=[qkv], stacked=3), dict(params=[w])], lr=0.1)
    assert [g['stacked'] for g in opt.param_groups] == [3, 1]
    qkv.grad += 1.0; w.grad += 1.0
    opt.step()
    sd = opt.state_dict()
    assert [g['stacked'] for g in sd['param_groups']] == [3, 1]
    again = Muon([dict(params=[qkv], stacked=1), dict(params=[w])], lr=0.1)
    again.load_state_dict(sd)
    assert [g['stacked'] for g in again.param_groups] == [3, 1]
    with pytest.raises(ValueError, match=r'parameter 0 of the group has shape \(6, 2\), whose 6 rows do not split '
                                         r'into stacked=4 equal matrices'):
        opt.add_param_group(dict(params=[Parameter(torch.randn(6, 2))], stacked=4))
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize('G, kw, exc, contains', [
    (torch.randn(3), {}, ValueError, 'newton_schulz expects G to be a matrix (A, B), 2-D, got shape (3)'),
    (torch.randn(2, 3, 3), {}, ValueError, 'got shape (2, 3, 3) (for a stack of matrices, call it on each)'),
    (torch.ones(3, 3, dtype=torch.int64), {}, TypeError, 'floating-point matrix G, got dtype torch.int64'),
    ([[1.0]], {}, TypeError, 'matrix G to be a torch.Tensor, got list'),
    (torch.ones(3, 3), dict(steps=0), ValueError, 'steps to be an integer >= 1, got 0'),
    (torch.ones(3, 3), dict(coefficients=(1.0, 2.0)), ValueError, 'coefficients to be three finite numbers'),
    (torch.ones(3, 3), dict(eps=-1.0), ValueError, 'eps to be a finite number >= 0, got -1.0'),
])
def test_newton_schulz_says_what_it_takes(G, kw, exc, contains):
    from minidl.testing import assert_clear_error
    msg = assert_clear_error(exc, contains, muon_module.newton_schulz, G, **kw)
    assert 'tuple index' not in msg and 'mat1' not in msg


def test_eps_zero_with_a_zero_gradient_is_nan_as_in_torch():
    "torch.optim.Muon accepts eps=0 (0/0 for a zero update): minidl keeps its behaviour, documented on the page"
    ours, ref = Parameter(torch.ones(3, 2, dtype=F64)), torch.ones(3, 2, dtype=F64, requires_grad=True)
    ref.grad = torch.zeros(3, 2, dtype=F64)
    Muon([ours], eps=0.0).step()
    with full_precision_muon(): torch.optim.Muon([ref], eps=0.0).step()
    assert ours.value.isnan().all() and ref.detach().isnan().all()
    p = Parameter(torch.ones(3, 2, dtype=F64))
    Muon([p]).step()                     # the default eps: a zero gradient leaves the weights to the weight decay
    assert torch.equal(p.value, torch.full((3, 2), 1 - 1e-3 * 0.1, dtype=F64))
