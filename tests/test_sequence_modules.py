"""Embedding, LayerNorm, Residual, CausalSelfAttention and TransformerBlock against torch.nn + autograd in float64 (outputs,
input gradients, every parameter gradient), gradcheck, state dicts both ways, and errors that change nothing.

Tolerance policy: float64, rtol = 1e-10 (a few ulps times reduction lengths of at most a few hundred, times the
conditioning of a normalisation); the absolute floor is scaled to the magnitude of the reference (1e-12 * max |ref|),
so that values that cancel to near zero compare in absolute terms.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

import minidl
from minidl import Embedding, LayerNorm, Residual, Linear, Sequential, ReLU, Tanh, Module, gradcheck

F64 = torch.float64
SETTINGS = dict(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(ours, ref, rtol=1e-10):
    ref = ref.detach()
    atol = 1e-12 * float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=max(atol, 1e-15))


def snapshot(m):
    return [t.clone() for p in m.parameters() for t in (p.value, p.grad)]


def unchanged(m, snap):
    now = snapshot(m)
    assert len(now) == len(snap) and all(torch.equal(a, b) for a, b in zip(now, snap))


# ============================================================================ Embedding
@settings(**SETTINGS)
@given(V=st.integers(1, 12), D=st.integers(1, 6), shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       pad=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_embedding_matches_torch(V, D, shape, pad, seed):
    gen = torch.Generator().manual_seed(seed)
    padding_idx = int(torch.randint(0, V, (), generator=gen)) if pad else None
    ours = Embedding(V, D, padding_idx=padding_idx, dtype=F64, generator=gen)
    ref = torch.nn.Embedding(V, D, padding_idx=padding_idx, dtype=F64)
    ref.load_state_dict(ours.state_dict())
    idx = torch.randint(0, V, tuple(shape), generator=gen)
    y = ours(idx)
    yr = ref(idx)
    assert torch.equal(y, yr.detach())  # row copies: the same values, bit for bit
    g = torch.randn(yr.shape, dtype=F64, generator=gen)
    assert ours.backward(g) is None
    yr.backward(g)
    close(ours.weight.grad, ref.weight.grad)
    if padding_idx is not None: assert not ours.weight.grad[padding_idx].any()


def test_embedding_init_as_torch_and_state_dict_both_ways():
    torch.manual_seed(3); ours = Embedding(7, 4, padding_idx=2)
    torch.manual_seed(3); ref = torch.nn.Embedding(7, 4, padding_idx=2)
    assert torch.equal(ours.weight.value, ref.weight.detach())
    other = torch.nn.Embedding(7, 4); ours.load_state_dict(other.state_dict())
    assert torch.equal(ours.weight.value, other.weight.detach())
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['weight']


def test_embedding_gradcheck_through_a_float_input():
    class AddLookup(Module):
        def __init__(self, emb, idx): self.emb, self.idx = emb, idx
        def forward(self, x): return x + self.emb(self.idx)
        def backward(self, g, input_grad=True):
            self.emb.backward(g)
            return g
    idx = torch.tensor([[0, 3, 3], [1, 0, 2]])
    assert gradcheck(AddLookup(Embedding(4, 2), idx), torch.randn(2, 3, 2, dtype=F64))


@pytest.mark.parametrize('bad, err, text', [
    (torch.tensor([0.0, 1.0]), TypeError, 'integer indices (int64 or int32), got dtype torch.float32'),
    (torch.tensor([True]), TypeError, 'got dtype torch.bool'),
    (torch.tensor([0, 5]), IndexError, 'indices in [0, 5)'),
    (torch.tensor([[-1, 0]]), IndexError, 'got values from -1 to 0'),
    ([1, 2], TypeError, 'got list')])
def test_embedding_errors_change_nothing(bad, err, text):
    e = Embedding(5, 3)
    e(torch.tensor([1, 2])); e.backward(torch.ones(2, 3))
    snap = snapshot(e)
    with pytest.raises(err, match=text.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[')):
        e(bad)
    unchanged(e, snap)
    with pytest.raises(RuntimeError, match='nothing to backpropagate'): e.backward(torch.ones(2, 3))
    unchanged(e, snap)


# ============================================================================ LayerNorm
@settings(**SETTINGS)
@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=2), norm=st.lists(st.integers(1, 6), min_size=1, max_size=2),
       affine=st.booleans(), bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.0]), scale=st.sampled_from([1.0, 1e3]),
       seed=st.integers(0, 2**31 - 1))
def test_layernorm_matches_torch(lead, norm, affine, bias, eps, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    ours = LayerNorm(norm, eps=eps, elementwise_affine=affine, bias=bias, dtype=F64)
    ref = torch.nn.LayerNorm(norm, eps=eps, elementwise_affine=affine, bias=bias, dtype=F64)
    for p in ref.parameters():
        with torch.no_grad(): p.copy_(torch.randn(p.shape, dtype=F64, generator=gen))
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(*lead, *norm, dtype=F64, generator=gen) * scale + 1
    if eps == 0 and x.numel() and max(norm) == 1 and len(norm) == 1: return  # one feature and eps 0: 0/0 in both
    g = torch.randn(x.shape, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    yr = ref(xr); yr.backward(g)
    close(ours(x), yr, rtol=1e-9)
    close(ours.backward(g), xr.grad, rtol=1e-9)  # the three-term formula cancels: about 1e-9 relative in the worst rows
    for (name, p), (rname, rp) in zip(ours.named_parameters(), ref.named_parameters()):
        assert name == rname
        close(p.grad, rp.grad, rtol=1e-9)


def test_layernorm_gradcheck():
    for m in (LayerNorm(5), LayerNorm((3, 5), bias=False), LayerNorm(5, elementwise_affine=False)):
        for p in m.parameters(): p.value.normal_()
        assert gradcheck(m, torch.randn(2, 3, 5, dtype=F64))


def test_layernorm_errors_change_nothing():
    ln = LayerNorm(4, dtype=F64)
    ln(torch.randn(3, 4, dtype=F64)); ln.backward(torch.ones(3, 4, dtype=F64))
    snap = snapshot(ln)
    for bad, text in [(torch.ones(3, 5, dtype=F64), r'input of shape \(\*, 4\)'), (torch.ones(3, 4), 'float64 parameters'),
                      (torch.ones(3, 4, dtype=torch.long), 'floating-point')]:
        with pytest.raises((ValueError, TypeError), match=text): ln(bad)
        unchanged(ln, snap)
    ln(torch.randn(3, 4, dtype=F64))
    with pytest.raises(ValueError, match=r'gradient of shape \(3, 4\)'): ln.backward(torch.ones(2, 4, dtype=F64))
    unchanged(ln, snap)
    ln.weight.grad = None
    with pytest.raises(RuntimeError, match='weight.grad is NoneType'): ln.backward(torch.ones(3, 4, dtype=F64))


# ============================================================================ Residual
def test_residual_matches_torch_and_gradcheck():
    lin1, lin2 = Linear(4, 6, dtype=F64), Linear(6, 4, dtype=F64)
    res = Residual(Sequential(lin1, Tanh(), lin2))
    r1, r2 = torch.nn.Linear(4, 6, dtype=F64), torch.nn.Linear(6, 4, dtype=F64)
    r1.load_state_dict(lin1.state_dict()); r2.load_state_dict(lin2.state_dict())
    x = torch.randn(3, 5, 4, dtype=F64); g = torch.randn_like(x)
    xr = x.clone().requires_grad_(); yr = xr + r2(torch.tanh(r1(xr))); yr.backward(g)
    close(res(x), yr); close(res.backward(g), xr.grad)
    for ours, ref in ((lin1, r1), (lin2, r2)):
        close(ours.weight.grad, ref.weight.grad); close(ours.bias.grad, ref.bias.grad)
    assert gradcheck(res, x[:2, :2])
    assert list(res.state_dict()) == ['block.0.weight', 'block.0.bias', 'block.2.weight', 'block.2.bias']


def test_residual_errors():
    r = Residual(Linear(3, 2))
    with pytest.raises(ValueError, match=r'keep the shape of its input, got \(4, 3\) -> \(4, 2\)'): r(torch.ones(4, 3))
    with pytest.raises(RuntimeError, match='nothing to backpropagate'): r.backward(torch.ones(4, 2))
    with pytest.raises(TypeError, match='Module instance'): Residual(lambda x: x)


# ============================================================================ CausalSelfAttention
from minidl import CausalSelfAttention


def causal_bool(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # True: may not attend


def randomise(ref, gen, std=0.5):
    "Random values for every parameter of a torch module (biases and norms too, so that no gradient is trivially zero)."
    with torch.no_grad():
        for p in ref.parameters(): p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=gen) * std + (1 if p.dim() == 1 and std == 0.1 else 0))


def compare_params(ours, ref, rtol=1e-10):
    rp = dict(ref.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert sorted(names) == sorted(rp), (names, list(rp))
    for name, p in ours.named_parameters(): close(p.grad, rp[name].grad, rtol=rtol)


@settings(**SETTINGS)
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.integers(1, 3), D=st.integers(1, 4), bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_attention_matches_torch(B, T, H, D, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    E = H * D
    ref = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=True, dtype=F64)
    randomise(ref, gen)
    ours = CausalSelfAttention(E, H, bias=bias, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, E, dtype=F64, generator=gen); g = torch.randn(B, T, E, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    yr = ref(xr, xr, xr, attn_mask=causal_bool(T), need_weights=False)[0]; yr.backward(g)
    close(ours(x), yr); close(ours.backward(g), xr.grad)
    compare_params(ours, ref)
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_attention_init_state_dict_both_ways_and_gradcheck():
    torch.manual_seed(5); ours = CausalSelfAttention(12, 3)
    torch.manual_seed(5); ref = torch.nn.MultiheadAttention(12, 3, batch_first=True)
    for k, v in ref.state_dict().items(): assert torch.equal(ours.state_dict()[k], v), k  # the same draws, in torch's order
    other = torch.nn.MultiheadAttention(12, 3, batch_first=True); randomise(other, torch.Generator().manual_seed(0))
    ours.load_state_dict(other.state_dict()); ref.load_state_dict(ours.state_dict())
    for k, v in other.state_dict().items(): assert torch.equal(ref.state_dict()[k], v)
    a = CausalSelfAttention(6, 2, dtype=F64); randomise(a_ref := torch.nn.MultiheadAttention(6, 2, batch_first=True, dtype=F64),
                                                       torch.Generator().manual_seed(1))
    a.load_state_dict(a_ref.state_dict())
    for T in (1, 3): assert gradcheck(a, torch.randn(2, T, 6, dtype=F64))
    assert gradcheck(CausalSelfAttention(4, 4, bias=False), torch.randn(1, 3, 4, dtype=F64))


def test_attention_is_causal_and_keeps_weights():
    a = CausalSelfAttention(8, 2, dtype=F64)
    x = torch.randn(2, 6, 8, dtype=F64)
    y0 = a(x); x2 = x.clone(); x2[:, 4:] = torch.randn(2, 2, 8, dtype=F64); y1 = a(x2)
    assert torch.equal(y0[:, :4], y1[:, :4])  # the same operations on the same numbers for the rows before 4
    w = a.attn_weights
    assert w.shape == (2, 2, 6, 6) and not w.triu(1).any()
    close(w.sum(-1), torch.ones(2, 2, 6, dtype=F64))


def test_attention_dropout_train_and_eval():
    a = CausalSelfAttention(8, 2, dropout=0.5, dtype=F64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 5, 8, dtype=F64)
    assert not torch.equal(a(x), a(x))
    a.eval(); assert torch.equal(a(x), a(x))
    a.train(); a.dropout = 1.0; a(x); a.backward(torch.ones(2, 5, 8, dtype=F64))  # everything dropped: finite gradients
    assert all(torch.isfinite(p.grad).all() for p in a.parameters())


def test_attention_errors_change_nothing():
    a = CausalSelfAttention(8, 2, dtype=F64)
    a(torch.randn(2, 3, 8, dtype=F64)); a.backward(torch.randn(2, 3, 8, dtype=F64))
    snap = snapshot(a)
    for bad, err in [(torch.ones(2, 8, dtype=F64), ValueError), (torch.ones(2, 3, 6, dtype=F64), ValueError),
                     (torch.ones(2, 3, 8), TypeError), (torch.ones(2, 3, 8, dtype=torch.long), TypeError)]:
        with pytest.raises(err): a(bad)
        unchanged(a, snap)
    a(torch.randn(2, 3, 8, dtype=F64))
    with pytest.raises(ValueError, match=r'gradient of shape \(2, 3, 8\)'): a.backward(torch.ones(2, 4, 8, dtype=F64))
    unchanged(a, snap)
    a.in_proj_bias.grad = torch.zeros(5, dtype=F64)
    with pytest.raises(RuntimeError, match='in_proj_bias.grad has shape'): a.backward(torch.ones(2, 3, 8, dtype=F64))
    assert all(torch.equal(p.grad, s) for p, s in zip(a.out_proj.parameters(), snap[5::2]))  # out_proj accumulated nothing
    with pytest.raises(ValueError, match='divide embed_dim'): CausalSelfAttention(6, 4)
