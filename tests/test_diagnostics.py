"""Collectors of minidl.diagnostics against the same statistics computed in torch.nn hooks on the same float64 network,
and lr_find leaving the model and the optimizer exactly as they were (also when it stops early or raises)."""
import copy
import math

import pytest
import torch
from torch import nn

from minidl import (
    SGD,
    ActivationStats,
    AttentionMaps,
    BatchNorm1d,
    GradientStats,
    Linear,
    LossCrossEntropy,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    UpdateRatios,
    lr_find,
)


def close(a, b, rtol=1e-10, scale=None):
    """std from the norm of the deviations: a few ulps; absolute floor scaled to the values, or to `scale` (the size of
    the elements) for a mean that cancels to about 0"""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = b.nan_to_num(0).abs().max().item() if scale is None else scale
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-13 * max(scale, 1e-300), equal_nan=True)


def nets(seed=0):
    torch.manual_seed(seed)
    ours = Sequential(
        Linear(10, 16), Tanh(), Linear(16, 16), ReLU(), Linear(16, 8), Sigmoid(), Linear(8, 4)
    ).to(torch.float64)
    ref = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8), nn.Sigmoid(),
                        nn.Linear(8, 4)).double()
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    x = 2 * torch.randn(40, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    return ours, ref, x, y


def torch_act_stats(module, args, out, log, name, kind):
    y = out.detach()
    sat = {'tanh': (y.abs() > 0.97), 'sigmoid': ((2 * y - 1).abs() > 0.97)}.get(kind)
    lo, hi = {'tanh': (-1, 1), 'sigmoid': (0, 1), 'relu': (0, 4)}.get(kind, (-4, 4))
    log.setdefault(name, []).append(
        dict(
            mean=y.mean(),
            std=y.std(),
            saturated=sat.double().mean() if sat is not None else math.nan,
            dead=(y == 0).double().mean() if kind == 'relu' else math.nan,
            hist=torch.histc(y.clamp(lo, hi), 40, lo, hi),
        )
    )


KINDS = {'0': 'other', '1': 'tanh', '2': 'other', '3': 'relu', '4': 'other', '5': 'sigmoid', '6': 'other'}


def train_both(ours, ref, x, y, steps, collectors, every, after_backward=None):
    loss, opt = LossCrossEntropy(), SGD(ours.parameters(), lr=0.3)
    ref_opt, ref_loss = torch.optim.SGD(ref.parameters(), lr=0.3), nn.CrossEntropyLoss()
    for s in range(steps):
        opt.zero_grad(); loss(ours(x), y); ours.backward(loss.backward(), input_grad=False); opt.step()
        for c in collectors: c.after_step()
        ref_opt.zero_grad()
        ref.train(s % every == 0)  # record in torch on the steps the collectors record
        ref_loss(ref(x), y).backward()
        if after_backward and s % every == 0: after_backward()
        ref_opt.step()


def test_activation_stats_match_torch_hooks_over_training():
    ours, ref, x, y = nets()
    acts = ActivationStats(ours, every=3)
    log = {}
    def hook(mod, a, out, n):
        if mod.training: torch_act_stats(mod, a, out, log, n, KINDS[n])  # returns None: observes only
    for name, m in ref.named_children(): m.register_forward_hook(lambda mod, a, out, n=name: hook(mod, a, out, n))
    train_both(ours, ref, x, y, 10, [acts], every=3)
    assert acts.names == list(KINDS) and acts.kinds == KINDS
    for name in KINDS:
        st = acts.stats(name)
        assert st['step'] == [0, 3, 6, 9]
        for k in ('mean', 'std', 'saturated', 'dead'):
            close(st[k], torch.tensor([r[k] for r in log[name]], dtype=torch.float64))
        counts, edges = acts.histograms(name)
        # the same bins as torch.histc up to rounding at a bin edge: at most a value or two may sit on the other side
        ref_counts = torch.stack([r['hist'] for r in log[name]])
        # every value counted once (outside the range: an edge bin)
        assert torch.equal(counts.sum(1), ref_counts.sum(1).double())
        assert (counts - ref_counts).abs().sum() <= 2
    summ = acts.summary()
    assert summ['1']['step'] == 9 and 0 <= summ['1']['saturated'] <= 1 and math.isnan(summ['1']['dead'])


@pytest.mark.filterwarnings('ignore:Full backward hook is firing')
def test_gradient_stats_match_torch_backward_hooks():
    ours, ref, x, y = nets()
    grads = GradientStats(ours, every=2)
    log = {}
    def hook(mod, gi, go, n):
        if not mod.training: return
        g = go[0]
        log.setdefault(n, []).append(
            dict(norm=g.norm(), mean=g.mean(), std=g.std(), scale=g.abs().max(), numel=g.numel())
        )
    for name, m in ref.named_children(): m.register_full_backward_hook(lambda mod, gi, go, n=name: hook(mod, gi, go, n))
    plog = []  # torch's parameter gradients, read after its backward (its first layer's hook fires before they exist)
    train_both(
        ours,
        ref,
        x,
        y,
        5,
        [grads],
        every=2,
        after_backward=lambda: plog.append(
            {k: (p.grad.norm(), p.detach().norm()) for k, p in ref.named_parameters()}
        ),
    )
    for name in KINDS:
        st = grads.stats(name)
        assert st['step'] == [0, 2, 4]
        for k in ('norm', 'mean', 'std', 'scale'):
            close(st[k], torch.stack([r[k] for r in log[name]]), rtol=1e-9, scale=st['scale'].max().item())
        counts, edges = grads.histograms(name)
        assert counts.shape == (3, 40) and edges.shape == (3, 41)
        assert torch.equal(counts.sum(1), torch.full((3,), float(log[name][0]['numel'])))
        close(edges[:, -1], st['scale'])
    for k, _ in ours.named_parameters():
        ps = grads.param_stats(k)
        close(ps['grad_norm'], torch.stack([r[k][0] for r in plog]))
        close(ps['data_norm'], torch.stack([r[k][1] for r in plog]))


def test_gradient_histogram_counts_every_value_once():
    m = Sequential(Linear(3, 5)).to(torch.float64)
    grads = GradientStats(m, bins=8)
    m(torch.randn(6, 3, dtype=torch.float64))
    g = torch.randn(6, 5, dtype=torch.float64)
    m.backward(g)
    counts, edges = grads.histograms('0')
    assert counts[0].sum() == 30
    ref = torch.histc(g, 8, -g.abs().max().item(), g.abs().max().item())
    assert (counts[0] - ref).abs().sum() <= 2  # bin edges may round the other way
    m(torch.randn(6, 3, dtype=torch.float64)); grads.after_step()
    m.backward(torch.zeros(6, 5, dtype=torch.float64))  # all zero: scale 0, nothing counted, no error
    assert grads.histograms('0')[0][1].sum() == 0


def test_update_ratios_are_the_relative_change_of_each_step():
    ours, ref, x, y = nets()
    ratios = UpdateRatios(ours, every=2)
    loss, opt = LossCrossEntropy(), SGD(ours.parameters(), lr=0.3, momentum=0.9)
    expected = []
    for s in range(6):
        before = [p.value.clone() for p in ours.parameters()]
        opt.zero_grad()
        loss(ours(x), y)
        ours.backward(loss.backward(), input_grad=False)
        opt.step()
        ratios.after_step()
        if s % 2 == 0:
            expected.append(
                torch.stack([(p.value - b).norm() / b.norm() for p, b in zip(ours.parameters(), before)])
            )
    assert ratios.steps == [0, 2, 4]
    close(ratios.ratios(), torch.stack(expected), rtol=1e-12)


def test_collectors_record_in_training_mode_only_and_stop_when_removed():
    ours, _, x, y = nets()
    acts, grads = ActivationStats(ours, Tanh), GradientStats(ours, Tanh)
    ours.eval(); ours(x)
    assert acts.records['1'].steps == []
    ours.train(); ours(x); ours.backward(torch.ones(40, 4, dtype=torch.float64))
    assert acts.records['1'].steps == [0] and grads.records['1'].steps == [0]
    acts.remove(); grads.remove()
    acts.after_step(); ours(x)
    assert acts.records['1'].steps == [0]
    assert 'forward' not in vars(ours[1]) and 'backward' not in vars(ours[1])


class StandIn(Module):
    "Stand-in attention: causal softmax(x xᵀ/√d) over (batch, heads, T, d), weights kept in attn_weights."
    def __init__(self): self.attn_weights = None
    def forward(self, x):
        s = x @ x.transpose(-1, -2) / x.shape[-1] ** 0.5
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
        self.attn_weights = s.softmax(-1)
        return self.attn_weights @ x


def test_attention_maps_copy_the_weights_of_recorded_steps():
    model = Sequential(StandIn(), Sequential(StandIn()))
    maps = AttentionMaps(model, every=2, index=1)
    assert maps.names == ['0', '1.0']
    for s in range(4):
        x = torch.randn(3, 2, 5, 4)
        model(x)
        if s == 2: kept = model[1][0].attn_weights[1].clone()
        maps.after_step()
    assert [st for st, _ in maps.maps['1.0']] == [0, 2]
    assert torch.equal(maps.maps['1.0'][1][1], kept)  # a copy of the same tensor
    assert maps.maps['0'][0][1].shape == (2, 5, 5)


def snapshot(model, opt):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [p.grad.clone() for p in model.parameters()],
            copy.deepcopy(opt.state_dict()), [(p.value, p.grad) for p in model.parameters()], torch.get_rng_state())


def assert_same(model, opt, snap):
    sd, grads, osd, objs, rng = snap
    for k, v in model.state_dict().items(): assert torch.equal(v, sd[k]), k  # restored: bit for bit
    for p, g, (v0, g0) in zip(model.parameters(), grads, objs):
        assert torch.equal(p.grad, g) and p.value is v0 and p.grad is g0
    new = opt.state_dict()
    assert new['step_count'] == osd['step_count'] and new['param_groups'] == osd['param_groups']
    assert new['state'].keys() == osd['state'].keys()
    for i in osd['state']:
        assert new['state'][i].keys() == osd['state'][i].keys()
        for k, b in osd['state'][i].items():
            assert torch.equal(torch.as_tensor(new['state'][i][k]), torch.as_tensor(b)), (i, k)
    assert torch.equal(torch.get_rng_state(), rng)


def bn_model():
    torch.manual_seed(0)
    return Sequential(Linear(10, 16), BatchNorm1d(16), Tanh(), Linear(16, 4)).to(torch.float64)


def warm(model, opt, x, y):
    loss = LossCrossEntropy()
    for _ in range(3):
        opt.zero_grad(); loss(model(x), y); model.backward(loss.backward(), input_grad=False); opt.step()
    loss(model(x[:7]), y[:7]); model.backward(loss.backward(), input_grad=False)  # grads and saved state mid-step
    return loss


@pytest.mark.parametrize('end_lr', [1.0, 1e4])  # 1e4: stops on divergence
def test_lr_find_restores_everything(end_lr):
    _, _, x, y = nets()
    model = bn_model()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = warm(model, opt, x, y)
    snap = snapshot(model, opt)
    res = lr_find(model, loss, opt, x, y, start_lr=1e-4, end_lr=end_lr, steps=60, batch_size=16)
    assert res.diverged == (end_lr > 1) and len(res.lrs) == len(res.losses) == len(res.smoothed)
    assert res.lrs[0] == 1e-4 and (res.diverged or len(res.lrs) == 60)
    assert_same(model, opt, snap)
    # what forward saved was put back too: backward now gives the gradient it would have given before lr_find
    g = loss.backward()
    model.zero_grad(); model.backward(g, input_grad=False)
    after = [p.grad.clone() for p in model.parameters()]
    m2 = bn_model(); o2 = SGD(m2.parameters(), lr=0.05, momentum=0.9); l2 = warm(m2, o2, x, y)
    m2.zero_grad(); m2.backward(l2.backward(), input_grad=False)
    for a, p in zip(after, m2.parameters()): assert torch.equal(a, p.grad)  # the same ops in the same order


def test_lr_find_restores_when_it_raises():
    _, _, x, y = nets()
    model = bn_model()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    warm(model, opt, x, y)
    snap = snapshot(model, opt)
    class Failing(LossCrossEntropy):
        calls = 0
        def forward(self, p, t):
            Failing.calls += 1
            if Failing.calls == 5: raise KeyboardInterrupt
            return super().forward(p, t)
    with pytest.raises(KeyboardInterrupt):
        lr_find(model, Failing(), opt, x, y, steps=20)
    assert_same(model, opt, snap)


def test_lr_find_checks_before_it_touches_anything():
    _, _, x, y = nets()
    model = bn_model(); opt = SGD(model.parameters(), lr=0.05)
    snap = snapshot(model, opt)
    for kw, msg in [
        (dict(steps=1), 'steps >= 2'),
        (dict(start_lr=0.0), 'start_lr to be a finite number > 0'),
        (dict(beta=1.0), 'beta in [0, 1)'),
        (dict(diverge=1), 'diverge > 1'),
        (dict(batch_size=0), 'batch_size'),
    ]:
        with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace('(', r'\(').replace(')', r'\)')):
            lr_find(model, LossCrossEntropy(), opt, x, y, **kw)
    with pytest.raises(TypeError, match='optimizer'):
        lr_find(model, LossCrossEntropy(), object(), x, y)
    assert_same(model, opt, snap)


def test_lr_find_suggests_a_rate_below_the_divergence():
    _, _, x, y = nets()
    model = bn_model(); opt = SGD(model.parameters(), lr=0.05)
    res = lr_find(model, LossCrossEntropy(), opt, x, y, start_lr=1e-5, end_lr=1e3, steps=100)
    k = min(range(len(res.smoothed)), key=res.smoothed.__getitem__)
    assert res.suggestion == pytest.approx(res.lrs[k] / 10) and res.steepest <= res.lrs[k]


def test_train_calls_the_collectors_and_records_training_steps_only():
    from minidl import train
    ours, _, x, y = nets()
    acts, ratios = ActivationStats(ours, Tanh, every=3), UpdateRatios(ours, every=3)
    epochs = []
    class Epochs:
        def after_epoch(self, epoch, history): epochs.append(epoch)
    train(ours, LossCrossEntropy(), SGD(ours.parameters(), lr=0.1), x, y, x, y, epochs=2, batch_size=10,
          callbacks=[acts, ratios, Epochs()], progress=False)
    assert acts.step == ratios.step == 8 and epochs == [1, 2]
    # the test evaluations and the probe: eval mode
    assert acts.records['1'].steps == [0, 3, 6] and ratios.steps == [0, 3, 6]
    assert acts.records['1'].sizes == [10 * 16] * 3  # batches of 10 rows of 16 units


@pytest.mark.parametrize('bias', [4.0, 6.0, 8.0])
def test_std_of_a_saturated_float32_layer_is_its_std(bias):
    "All outputs near 1: ||y||^2 - n m^2 would subtract two nearly equal numbers; the deviations' norm does not."
    torch.manual_seed(0)
    net = Sequential(Linear(16, 256), Sigmoid())
    net[0].bias.value.fill_(bias)
    acts, grads = ActivationStats(net, modules=Sigmoid), GradientStats(net, modules=Sigmoid)
    y = net(torch.randn(512, 16) * 0.3)
    g = torch.full_like(y, 0.25) + 1e-4 * torch.randn_like(y)
    net.backward(g)
    want = y.double().std().item()
    got = acts.stats(acts.names[0])['std'][-1].item()
    assert want > 0 and abs(got - want) <= 1e-4 * want   # float32 outputs: a few ulps of the deviations
    gw, gg = g.double().std().item(), grads.stats(grads.names[0])['std'][-1].item()
    assert abs(gg - gw) <= 1e-4 * gw


def test_attention_maps_check_index_and_flag_and_say_when_a_batch_is_too_small():
    model = Sequential(StandIn())
    for bad, err in [('a', TypeError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(err, match='AttentionMaps expects index to be an integer'): AttentionMaps(model, index=bad)
    with pytest.raises(TypeError, match='training_only'): AttentionMaps(model, training_only='yes')
    maps = AttentionMaps(model, index=-1)
    model(torch.randn(0, 5, 4))             # an empty batch: nothing recorded, the forward goes on
    model(torch.randn(3, 5, 4))
    assert len(maps.maps['0']) == 1 and torch.equal(maps.maps['0'][0][1], model[0].attn_weights[-1])
    maps.remove()
    AttentionMaps(model, index=5)
    with pytest.raises(IndexError, match=r'index=5 asks for a sample of a batch of 2: give an index in \[-2, 2\)'):
        model(torch.randn(2, 5, 4))


@pytest.mark.parametrize('cls', [ActivationStats, GradientStats])
def test_bins_are_named_in_their_error(cls):
    with pytest.raises(ValueError, match=f'{cls.__name__} expects bins to be an integer >= 1, got 0'):
        cls(Sequential(Linear(2, 2), Tanh()), bins=0)


@pytest.mark.parametrize('modules, exc, msg', [
    ('relu', TypeError, "got str 'relu'"), ([0, 0], ValueError, 'is not a module of the model'),
])
def test_modules_given_by_name_or_twice_get_a_clear_error(modules, exc, msg):
    from minidl import Linear, ReLU, Sequential
    from minidl.diagnostics import ActivationStats
    m = Sequential(Linear(2, 3), ReLU())
    with pytest.raises(exc, match=msg): ActivationStats(m, modules=modules)
    with pytest.raises(ValueError, match='appears more than once'): ActivationStats(m, modules=[m[1], m[1]])
    with pytest.raises(TypeError, match=r'one module: pass \[ReLU\(\)\]'): ActivationStats(m, modules=m[1])


def test_attention_maps_record_training_steps_of_train_only_unless_asked():
    "The test evaluations and the input probe of `train` run in eval mode: recorded only with training_only=False."
    from minidl import CausalSelfAttention, Flatten, train
    torch.manual_seed(0)
    model = Sequential(CausalSelfAttention(4, 2, dtype=torch.float64), Flatten(), Linear(12, 3, dtype=torch.float64))
    x, y = torch.randn(20, 3, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    maps, all_maps = AttentionMaps(model), AttentionMaps(model, training_only=False)
    train(model, LossCrossEntropy(), SGD(model.parameters(), lr=0.1), x, y, x[:7], y[:7], epochs=2, batch_size=10,
          progress=False, callbacks=[maps, all_maps])
    assert [s for s, _ in maps.maps['0']] == [0, 1, 2, 3]
    assert [s for s, _ in all_maps.maps['0']] == [0, 0, 0, 1, 2, 2, 3, 4]  # the probes (train, test data), evaluations


def test_gradient_histogram_puts_infinities_in_the_edge_bins_and_drops_nan_only():
    "One infinite or NaN value must not empty the histogram: the range is the largest finite |g|."
    m = Sequential(Linear(3, 2)).to(torch.float64)
    grads = GradientStats(m, bins=4)
    for bad, counted in ((math.inf, 10), (-math.inf, 10), (math.nan, 9)):
        m(torch.randn(5, 3, dtype=torch.float64))
        g = torch.full((5, 2), 0.5, dtype=torch.float64)
        g[0, 0], g[1, 1] = bad, -0.25
        m.backward(g)
        counts = grads.histograms('0')[0][-1]
        assert counts.sum() == counted
        # range [-0.5, 0.5] in bins of 0.25: -0.25 in the second bin, the 0.5s in the last
        assert counts.tolist() == [1 if bad == -math.inf else 0, 1, 0, 9 if bad == math.inf else 8]
        # the edges are those of the bins counted: over the largest finite |g| (the recorded scale is inf)
        assert grads.histograms('0')[1][-1].tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
        grads.after_step()


def test_gradient_stats_record_the_own_parameters_of_modules_with_modules_inside():
    "An attention holds in_proj_weight itself and out_proj inside: with every leaf watched, its own are recorded too."
    from minidl import TransformerBlock
    torch.manual_seed(0)
    model = Sequential(TransformerBlock(4, 2, 8))
    grads = GradientStats(model)
    model(torch.randn(2, 3, 4)); model.backward(torch.randn(2, 3, 4))
    assert sorted(grads.param_records) == sorted(n for n, _ in model.named_parameters())
    w = model[0].self_attn.in_proj_weight
    st = grads.param_stats('0.self_attn.in_proj_weight')
    close(st['grad_norm'][-1], torch.linalg.vector_norm(w.grad))
    assert '0.self_attn' not in grads.records  # its gradient statistics are not recorded: not a leaf
