"""Embedding, LayerNorm, Residual, CausalSelfAttention and TransformerBlock against torch.nn + autograd in float64 (outputs,
input gradients, every parameter gradient), gradcheck, state dicts both ways, and errors that change nothing.

Tolerance policy: float64, rtol = 1e-10 (a few ulps times reduction lengths of at most a few hundred, times the
conditioning of a normalisation); the absolute floor is scaled to the magnitude of the reference (1e-12 * max |ref|),
so that values that cancel to near zero compare in absolute terms.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

import minidl
from minidl import Embedding, LayerNorm, Residual, Linear, Sequential, ReLU, Tanh, Module, gradcheck

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)

F64 = torch.float64
SETTINGS = dict(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(ours, ref, rtol=1e-10, floor=0.0):
    "assert_close under the policy above; `floor`: an absolute error derived from the computation's inputs (normalisations)."
    ref = ref.detach()
    atol = 1e-12 * float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=max(atol, floor, 1e-15))


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
    if eps == 0 and x.numel() and math.prod(norm) == 1: return  # one feature and eps 0: 0/0 in both
    g = torch.randn(x.shape, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    yr = ref(xr); yr.backward(g)
    # x - mean carries a rounding error of a few ulps of |x|, which the normalisation multiplies by s = 1/sqrt(var + eps):
    # the absolute floor of xhat, times what multiplies xhat downstream (|g|, |gamma|, and F for the sums over a row)
    top = lambda t: float(t.detach().abs().max()) if t.numel() else 0.0
    s_max = float((x.reshape(-1, max(1, math.prod(norm))).var(1, correction=0) + eps).rsqrt().max()) if x.numel() else 0.0
    fx = 8 * 2.2e-16 * top(x) * s_max
    w = top(ref.weight) if affine else 1.0
    close(ours(x), yr, rtol=1e-9, floor=fx * w)
    close(ours.backward(g), xr.grad, rtol=1e-9, floor=fx * w * top(g) * s_max * math.prod(norm))  # the three-term formula cancels
    for (name, p), (rname, rp) in zip(ours.named_parameters(), ref.named_parameters()):
        assert name == rname
        close(p.grad, rp.grad, rtol=1e-9, floor=fx * top(g) * x.numel())


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


# ============================================================================ TransformerBlock
from minidl import TransformerBlock


@settings(**SETTINGS)
@given(B=st.integers(1, 2), T=st.integers(1, 5), H=st.integers(1, 2), D=st.integers(2, 3), FF=st.integers(1, 8),
       bias=st.booleans(), act=st.sampled_from(['gelu', 'relu']), seed=st.integers(0, 2**31 - 1))
def test_block_matches_torch(B, T, H, D, FF, bias, act, seed):
    # E >= 2: a LayerNorm over one feature outputs its bias whatever the input, and both libraries' gradients through it are
    # rounding noise (tested on its own in test_layernorm_matches_torch, with a floor derived for it)
    gen = torch.Generator().manual_seed(seed)
    E = H * D
    ref = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=act, bias=bias, batch_first=True,
                                           norm_first=True, dtype=F64)
    randomise(ref, gen)
    ours = TransformerBlock(E, H, FF, activation=act, bias=bias, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(B, T, E, dtype=F64, generator=gen); g = torch.randn(B, T, E, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    yr = ref(xr, src_mask=causal_bool(T)); yr.backward(g)
    close(ours(x), yr, rtol=1e-9); close(ours.backward(g), xr.grad, rtol=1e-9)  # two LayerNorms in the chain
    compare_params(ours, ref, rtol=1e-9)
    ref2 = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=act, bias=bias, batch_first=True,
                                            norm_first=True, dtype=F64)
    ref2.load_state_dict(ours.state_dict())  # and back
    for k, v in ref.state_dict().items(): assert torch.equal(ref2.state_dict()[k], v)


def test_block_gradcheck_and_residual_around_it():
    b = TransformerBlock(4, 2, 6, dtype=F64)
    for p in b.parameters(): p.value.add_(torch.randn_like(p.value) * 0.1)
    x = torch.randn(2, 3, 4, dtype=F64)
    assert gradcheck(b, x)
    assert gradcheck(Residual(b), x)
    assert gradcheck(TransformerBlock(4, 1, 3, activation='relu', bias=False, dtype=F64), x[:1, :1])


def test_block_dropout_modes():
    b = TransformerBlock(8, 2, 16, dropout=0.3, dtype=F64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 4, 8, dtype=F64)
    assert not torch.equal(b(x), b(x))
    b.eval(); assert torch.equal(b(x), b(x))


def test_block_errors_change_nothing():
    b = TransformerBlock(8, 2, 16, dtype=F64)
    b(torch.randn(2, 3, 8, dtype=F64)); b.backward(torch.randn(2, 3, 8, dtype=F64))
    snap = snapshot(b)
    with pytest.raises(ValueError, match=r'\(B, T, 8\)'): b(torch.ones(3, 8, dtype=F64))
    unchanged(b, snap)
    b(torch.randn(2, 3, 8, dtype=F64))
    with pytest.raises(ValueError, match='gradient of shape'): b.backward(torch.ones(2, 4, 8, dtype=F64))
    unchanged(b, snap)
    b.self_attn.in_proj_weight.grad = torch.zeros(3, dtype=F64)
    with pytest.raises(RuntimeError, match='in_proj_weight.grad has shape'): b.backward(torch.ones(2, 3, 8, dtype=F64))
    b.self_attn.in_proj_weight.grad = snap[1]
    unchanged(b, snap)  # the check ran before any child accumulated


def test_decoder_lm_trains_like_torch():
    "A decoder-only LM from the pieces takes the same AdamW steps as torch.nn + autograd + torch.optim.AdamW (float64)."
    from minidl import Embedding, LayerNorm, Sequential, LossCrossEntropy, AdamW
    V, T, B, E, H, L, FF = 11, 6, 4, 8, 2, 2, 12

    class LM(Module):
        def __init__(self):
            gen = torch.Generator().manual_seed(0)
            self.tok, self.pos = Embedding(V, E, dtype=F64, generator=gen), Embedding(T, E, dtype=F64, generator=gen)
            self.blocks = Sequential(*[TransformerBlock(E, H, FF, dtype=F64, generator=gen) for _ in range(L)])
            self.norm, self.head = LayerNorm(E, dtype=F64), Linear(E, V, dtype=F64, generator=gen)
        def forward(self, idx):
            self._save_for_backward()
            return self.head(self.norm(self.blocks(self.tok(idx) + self.pos(torch.arange(idx.shape[1])))))
        def backward(self, g, input_grad=True):
            g = self.blocks.backward(self.norm.backward(self.head.backward(g)))
            self.tok.backward(g); self.pos.backward(g.sum(0))

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = torch.nn.Embedding(V, E, dtype=F64), torch.nn.Embedding(T, E, dtype=F64)
            self.blocks = torch.nn.Sequential(*[torch.nn.TransformerEncoderLayer(E, H, FF, 0.0, 'gelu', batch_first=True,
                                                                                 norm_first=True, dtype=F64) for _ in range(L)])
            self.norm, self.head = torch.nn.LayerNorm(E, dtype=F64), torch.nn.Linear(E, V, dtype=F64)
        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for b in self.blocks: x = b(x, src_mask=causal_bool(idx.shape[1]))
            return self.head(self.norm(x))

    ours, ref = LM(), TorchLM()
    ref.load_state_dict(ours.state_dict())
    opt, ref_opt = AdamW(ours.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(), lr=1e-2)
    ce, gen = LossCrossEntropy(), torch.Generator().manual_seed(1)
    for _ in range(3):
        idx = torch.randint(0, V, (B, T + 1), generator=gen)
        opt.zero_grad(); loss = ce(ours(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        ours.backward(ce.backward().view(B, T, V)); opt.step()
        ref_opt.zero_grad(); rl = torch.nn.functional.cross_entropy(ref(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        rl.backward(); ref_opt.step()
        close(loss, rl, rtol=1e-10)
    for k, v in ref.state_dict().items():
        o = ours.state_dict()[k]
        if k.endswith('in_proj_bias'):
            # the key bias adds q.b_k to every score of a row, which the softmax ignores: its gradient is 0 analytically and
            # rounding noise (~1e-17) in both libraries, which Adam divides by eps: steps of ~1e-11 that differ. Both stay ~0.
            assert o[E:2 * E].abs().max() < 1e-9 and v[E:2 * E].abs().max() < 1e-9
            o, v = torch.cat([o[:E], o[2 * E:]]), torch.cat([v[:E], v[2 * E:]])
        close(o, v, rtol=1e-8)  # three Adam steps (a division by sqrt(v) each): ~1e-9 relative


# ============================================================================ Softmax / LogSoftmax over an empty dim, GELU at NaN and +-inf
from minidl import Softmax, LogSoftmax, GELU


@pytest.mark.parametrize('cls, fn', [(Softmax, torch.softmax), (LogSoftmax, torch.log_softmax)])
@pytest.mark.parametrize('shape, dim', [((3, 0), 1), ((3, 0), 0), ((0, 4), 1), ((2, 0, 3), 1), ((0,), 0)])
@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_softmax_over_an_empty_dim_is_empty_as_torch(cls, fn, shape, dim, dtype):
    x = torch.randn(shape, dtype=dtype); g = torch.randn(shape, dtype=dtype)
    m = cls(dim); y = m(x); gx = m.backward(g)
    xr = x.clone().requires_grad_(); yr = fn(xr, dim); yr.backward(g)
    assert y.shape == yr.shape and y.dtype == yr.dtype and gx.shape == xr.grad.shape and gx.dtype == dtype


@pytest.mark.parametrize('approximate', ['none', 'tanh'])
@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_gelu_at_nan_and_infinities_equals_torch(approximate, dtype):
    x = torch.tensor([float('nan'), float('inf'), -float('inf')], dtype=dtype)
    m = GELU(approximate); y = m(x); gx = m.backward(torch.ones_like(x))
    xr = x.clone().requires_grad_(); yr = torch.nn.functional.gelu(xr, approximate=approximate); yr.backward(torch.ones_like(x))
    torch.testing.assert_close(y, yr.detach(), rtol=0, atol=0, equal_nan=True)     # inf, NaN: exactly torch's
    torch.testing.assert_close(gx, xr.grad, rtol=0, atol=0, equal_nan=True)
    big = torch.tensor([-1e30, -60.0, 60.0, 1e30], dtype=dtype)                     # finite but saturated
    y = m(big); gx = m.backward(torch.ones_like(big))
    br = big.clone().requires_grad_(); yr = torch.nn.functional.gelu(br, approximate=approximate); yr.backward(torch.ones_like(big))
    torch.testing.assert_close(y, yr.detach(), rtol=1e-6, atol=0, equal_nan=True)
    torch.testing.assert_close(gx, br.grad, rtol=1e-6, atol=0, equal_nan=True)


def test_sequence_layers_on_batch_time_features():
    "Sequential, Linear, GELU, Dropout on (B, T, E) tensors: the leading dimensions are one batch, as torch."
    from minidl import Dropout
    lin1, lin2 = Linear(6, 10, dtype=F64), Linear(10, 6, dtype=F64)
    m = Sequential(lin1, GELU(), Dropout(0.0), lin2)
    r1, r2 = torch.nn.Linear(6, 10, dtype=F64), torch.nn.Linear(10, 6, dtype=F64)
    r1.load_state_dict(lin1.state_dict()); r2.load_state_dict(lin2.state_dict())
    x = torch.randn(3, 4, 6, dtype=F64); g = torch.randn(3, 4, 6, dtype=F64)
    xr = x.clone().requires_grad_(); yr = r2(torch.nn.functional.gelu(r1(xr))); yr.backward(g)
    close(m(x), yr); close(m.backward(g), xr.grad)
    close(lin1.weight.grad, r1.weight.grad); close(lin2.bias.grad, r2.bias.grad)
    d = Dropout(0.5, generator=torch.Generator().manual_seed(0)); y = d(x)
    assert y.shape == x.shape and torch.equal(d.backward(g) != 0, y != 0)


def test_decoder_training_step_reads_nothing_back():
    "Embedding, TransformerBlock (attention with dropout, LayerNorm, GELU), LossCrossEntropy, AdamW: no host read in a step."
    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_hot_path import no_readback
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    from benchmarks.seq import DecoderLM
    from minidl import AdamW, LossCrossEntropy
    gen = torch.Generator().manual_seed(0)
    model = DecoderLM(11, 6, 8, 2, 2, 16, generator=gen)
    for m in model.modules():  # dropout on: the masks are drawn on the device too
        if isinstance(m, CausalSelfAttention): m.dropout = 0.1
        if isinstance(m, minidl.Dropout): m.p = 0.1
    opt, ce = AdamW(model.parameters(), lr=1e-2), LossCrossEntropy()
    idx = torch.randint(0, 11, (4, 7), generator=gen)
    before = [p.value.clone() for p in model.parameters()]
    with no_readback():
        for _ in range(2):
            opt.zero_grad()
            ce(model(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
            model.backward(ce.backward().view(4, 6, 11))
            opt.step()
    assert all(not torch.equal(p.value, b) for p, b in zip(model.parameters(), before))


def test_inputs_that_require_grad_leave_no_autograd_history():
    x = torch.randn(2, 3, 8, dtype=F64, requires_grad=True)
    for m in (TransformerBlock(8, 2, 16, dtype=F64), Residual(Linear(8, 8, dtype=F64)), CausalSelfAttention(8, 2, dtype=F64),
              LayerNorm(8, dtype=F64)):
        y = m(x)
        assert not y.requires_grad and y.grad_fn is None
        assert not m.backward(torch.ones_like(y)).requires_grad


def test_decoder_checkpoint_round_trip(tmp_path):
    "save_checkpoint / load_checkpoint restore a decoder and its AdamW state: the next step is bit-equal."
    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    from benchmarks.seq import DecoderLM
    from minidl import AdamW, LossCrossEntropy, save_checkpoint, load_checkpoint
    ce, idx = LossCrossEntropy(), torch.randint(0, 11, (4, 7), generator=torch.Generator().manual_seed(3))
    def step(m, opt):
        opt.zero_grad(); loss = ce(m(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
        m.backward(ce.backward().view(4, 6, 11)); opt.step()
        return loss
    m = DecoderLM(11, 6, 8, 2, 2, 16, generator=torch.Generator().manual_seed(0)); opt = AdamW(m.parameters(), lr=1e-2)
    step(m, opt)
    save_checkpoint(tmp_path / 'ck.pt', m, opt, epoch=1)
    m2 = DecoderLM(11, 6, 8, 2, 2, 16, generator=torch.Generator().manual_seed(5)); opt2 = AdamW(m2.parameters(), lr=1e-2)
    assert load_checkpoint(tmp_path / 'ck.pt', m2, opt2) == {'epoch': 1}
    assert torch.equal(step(m, opt), step(m2, opt2))  # the same operations on the same numbers
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
