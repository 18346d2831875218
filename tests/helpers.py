"""Helpers shared by several test files: the torch twins of the sweeps (the same model, parameters and optimizer
in minidl and in torch), hypothesis strategies and the sweeps' comparisons. The general oracles are in minidl.testing.
"""
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from minidl import SGD, Adam, AdamW, Linear, LossBCE, Module, Parameter, Sequential, Sigmoid, Tanh
from minidl.testing import assert_close


def trained_linear():
    torch.manual_seed(0)
    m = Linear(3, 2)
    m(torch.randn(4, 3)); m.backward(torch.randn(4, 2))
    return m


# Float64 agreement under minidl.testing's policy: the reductions in these small programs are at most a few hundred
# terms (n=512), well conditioned (cond 1, or the number of layers a gradient crosses), with the absolute floor on the
# reference's scale for entries that cancel (softmax - one-hot).
SMALL_PROGRAM = dict(n=512, equal_nan=True)


def copy_into_torch(ours: Module, ref: torch.nn.Module):
    "Give `ref` the parameters of `ours` (same state-dict keys)."
    ref.load_state_dict({k: v.clone() for k, v in ours.state_dict().items()})


F64 = torch.float64
SHAPES = [(4, 3), (4,), (2, 4), (2,)]


def close_after_steps(a, b):
    ("float64 agreement after a run of optimizer steps: a few ulps per step (rtol), an absolute floor scaled "
     "to the values.")
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


OPT_PAIRS = {'sgd': (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
             'sgd-dampening': (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
             'adam': (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=1e-2, amsgrad=True)),
             'adamw': (AdamW, torch.optim.AdamW, dict(lr=0.01))}


dtypes = st.sampled_from([torch.float32, torch.float64])
dims = st.integers(1, 12)
seeds = st.integers(0, 2**31 - 1)


def randn(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=dtype)


small = settings(max_examples=40, deadline=None)
SETTINGS = dict(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def causal_bool(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # True: may not attend


def randomise(ref, gen, std=0.5):
    "Random values for every parameter of a torch module (biases and norms too, so that no gradient is trivially zero)."
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(
                torch.randn(p.shape, dtype=p.dtype, generator=gen) * std
                + (1 if p.dim() == 1 and std == 0.1 else 0)
            )


def compare_params(ours, ref, **tol):
    rp = dict(ref.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert sorted(names) == sorted(rp), (names, list(rp))
    for name, p in ours.named_parameters(): assert_close(p.grad, rp[name].grad, **tol)


STEPS = 100
BATCH = 16
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
    # shares storage: torch's updates are seen by the twin
    for p, r in zip(twin.parameters(), ref): p.value = r.detach()
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
    for p, r in zip(model.parameters(), ref): assert_close(p.value, r.detach(), n=STEPS * BATCH, cond=10)
    for name, bufs in opt.state.items():
        if name == 'max_exp_avg_sq' and not opt.amsgrad: continue
        for b, r in zip(bufs, ref):
            assert_close(b, ref_opt.state[r][name], n=STEPS * BATCH, cond=10)
    assert opt.step_count == STEPS


widths = st.lists(st.integers(1, 8), min_size=2, max_size=3)
unit = lambda lo, hi: st.floats(lo, hi)
LRS = torch.optim.lr_scheduler
pairs = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))
FAST = settings(max_examples=20, deadline=None)


def kernel_area(k):
    return k * k if isinstance(k, int) else k[0] * k[1]


@st.composite
def conv_cases(draw, max_k=4, max_s=3, max_p=2, half_pad=False):
    "Kernel, stride, padding, and an image size in which the padded kernel fits at least once."
    k, s = draw(pairs(1, max_k)), draw(pairs(1, max_s))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))) if half_pad else draw(pairs(0, max_p))
    hw = tuple(draw(st.integers(max(1, k[i] - 2 * p[i]), max(1, k[i] - 2 * p[i]) + 6)) for i in range(2))
    as_int = draw(st.booleans()) and k[0] == k[1] and s[0] == s[1] and p[0] == p[1]
    return (k[0], s[0], p[0]) if as_int else (k, s, p), hw
