"""TransformerBlock against torch.nn.TransformerEncoderLayer (pre-norm), and a decoder-only language model trained
like torch."""
import pytest
import torch
from helpers import SETTINGS, causal_bool, compare_params, randomise
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import Embedding, LayerNorm, Linear, Module, Sequential, TransformerBlock, gradcheck
from minidl.testing import assert_close, assert_unchanged, snapshot

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


F64 = torch.float64


def geglu(t):
    a, b = t.chunk(2, -1)
    return a * torch.nn.functional.gelu(b)


def torch_block(E, H, FF, act, bias):
    "torch's pre-norm layer; for 'geglu' (torch has no gated form), a 2 FF wide first Linear and an FF-input second one"
    gated = act == 'geglu'
    ref = torch.nn.TransformerEncoderLayer(E, H, 2 * FF if gated else FF, dropout=0.0, bias=bias, batch_first=True,
                                           activation=geglu if gated else act, norm_first=True, dtype=F64)
    if gated: ref.linear2 = torch.nn.Linear(FF, E, bias=bias, dtype=F64)
    return ref


@settings(**SETTINGS)
@given(B=st.integers(1, 2), T=st.integers(1, 5), H=st.integers(1, 2), D=st.integers(2, 3), FF=st.integers(1, 8),
       bias=st.booleans(), act=st.sampled_from(['gelu', 'relu', 'geglu']), seed=st.integers(0, 2**31 - 1))
def test_block_matches_torch(B, T, H, D, FF, bias, act, seed):
    # E >= 2: a LayerNorm over one feature outputs its bias whatever the input, and both libraries' gradients
    # through it are
    # rounding noise (tested on its own in test_layernorm_matches_torch, with a floor derived for it)
    gen = torch.Generator().manual_seed(seed)
    E = H * D
    ref = torch_block(E, H, FF, act, bias)
    randomise(ref, gen)
    ours = TransformerBlock(E, H, FF, activation=act, bias=bias, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(B, T, E, dtype=F64, generator=gen); g = torch.randn(B, T, E, dtype=F64, generator=gen)
    xr = x.clone().requires_grad_()
    # each LayerNorm amplifies the rounding of its input h by |h| / sigma (x - mean cancels; with E = 2 the gradient
    # through it is 0 analytically, rounding noise of that size): measured on torch's inputs to norm1 and norm2
    amp = []
    def amplification(mod, args):
        h = args[0].detach()
        amp.append((h.abs().amax(-1) / (h.var(-1, correction=0) + mod.eps).sqrt()).max().item())
    hooks = [m.register_forward_pre_hook(amplification) for m in (ref.norm1, ref.norm2)]
    yr = ref(xr, src_mask=causal_bool(T)); yr.backward(g)
    for h in hooks: h.remove()
    # the attention's chain (see test_attention_matches_torch) and the feed-forward's (E, FF); the two LayerNorms'
    # amplification and six products with weights in the chain
    tol = dict(n=4 * E + D + 2 * T + B * T + FF, cond=6 * max(1.0, *amp))
    assert_close(ours(x), yr, **tol); assert_close(ours.backward(g), xr.grad, **tol)
    compare_params(ours, ref, **tol)
    ref2 = torch_block(E, H, FF, act, bias)
    ref2.load_state_dict(ours.state_dict())  # and back
    for k, v in ref.state_dict().items(): assert torch.equal(ref2.state_dict()[k], v)


def test_block_gradcheck_one_head_relu_no_bias():
    # two heads and GELU, alone and inside Residual: checked in nbs/22_transformer
    x = torch.randn(2, 3, 4, dtype=F64)
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
    assert_unchanged(snap, snapshot(b))
    b(torch.randn(2, 3, 8, dtype=F64))
    with pytest.raises(ValueError, match='gradient of shape'): b.backward(torch.ones(2, 4, 8, dtype=F64))
    assert_unchanged(snap, snapshot(b))
    b.self_attn.in_proj_weight.grad = torch.zeros(3, dtype=F64)
    with pytest.raises(RuntimeError, match='in_proj_weight.grad has shape'): b.backward(torch.ones(2, 3, 8, dtype=F64))
    b.self_attn.in_proj_weight.grad = snap[0][0][1]
    assert_unchanged(snap, snapshot(b))  # the check ran before any child accumulated


def test_decoder_lm_trains_like_torch():
    "A decoder-only LM from the pieces takes the same AdamW steps as torch.nn + autograd + torch.optim.AdamW (float64)."
    from minidl import AdamW, LossCrossEntropy
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
            self.blocks = torch.nn.Sequential(
                *[
                    torch.nn.TransformerEncoderLayer(
                        E, H, FF, 0.0, 'gelu', batch_first=True, norm_first=True, dtype=F64
                    )
                    for _ in range(L)
                ]
            )
            self.norm, self.head = torch.nn.LayerNorm(E, dtype=F64), torch.nn.Linear(E, V, dtype=F64)
        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for b in self.blocks: x = b(x, src_mask=causal_bool(idx.shape[1]))
            return self.head(self.norm(x))

    ours, ref = LM(), TorchLM()
    ref.load_state_dict(ours.state_dict())
    opt, ref_opt = AdamW(ours.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(), lr=1e-2)
    ce, gen = LossCrossEntropy(), torch.Generator().manual_seed(1)
    # the longest chain: L blocks of attention and feed-forward, the head (E) and the loss (V, B T); L (six
    # products with
    # weights, two LayerNorms) + 2 layers crossed. Adam's step m / sqrt(v) keeps the gradients' relative error, except
    # where a gradient is rounding noise: the key bias, compared on its own below
    CHAIN, COND = L * (4 * E + 3 * T + B * T + FF) + E + V + B * T, 8 * L + 2
    for _ in range(3):
        idx = torch.randint(0, V, (B, T + 1), generator=gen)
        opt.zero_grad(); loss = ce(ours(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        ours.backward(ce.backward().view(B, T, V)); opt.step()
        ref_opt.zero_grad()
        rl = torch.nn.functional.cross_entropy(ref(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        rl.backward(); ref_opt.step()
        assert_close(loss, rl, n=CHAIN, cond=COND)
    for k, v in ref.state_dict().items():
        o = ours.state_dict()[k]
        if k.endswith('in_proj_bias'):
            # the key bias adds q.b_k to every score of a row, which the softmax ignores: its gradient is 0
            # analytically and
            # rounding noise (~1e-17) in both libraries, which Adam divides by eps: steps of ~1e-11 that
            # differ. Both stay ~0.
            assert o[E:2 * E].abs().max() < 1e-9 and v[E:2 * E].abs().max() < 1e-9
            o, v = torch.cat([o[:E], o[2 * E:]]), torch.cat([v[:E], v[2 * E:]])
        assert_close(o, v, n=CHAIN, cond=COND)


def _step(m, x, g):
    y = m(x); m.backward(g); return y


def test_block_cached_check_sees_replaced_gradients_and_children():
    ("The gradient buffers are checked again after any assignment (the counter) or a swapped module, before "
     "any child accumulates.")
    spare_norm = LayerNorm(8, dtype=F64); spare_norm.weight.grad = None      # broken before the cached calls
    spare_proj = Linear(8, 8, dtype=F64); spare_proj.bias.grad = None
    b = TransformerBlock(8, 2, 16, dtype=F64)
    x, g = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    _step(b, x, g); _step(b, x, g)
    b(x); snap = snapshot(b)
    b.linear1.bias.grad = torch.zeros(3, dtype=F64)          # linear2 comes first in backward: it must not accumulate
    with pytest.raises(RuntimeError, match=r'TransformerBlock.linear1.backward: bias.grad has shape \(3\)'):
        b.backward(g)
    b.linear1.bias.grad = snap[0][5][1].clone()
    assert_unchanged(snap, snapshot(b))
    for where, spare, match in (('norm1', spare_norm, 'TransformerBlock.norm1.backward: weight.grad is NoneType'),
                                ('out_proj', spare_proj, 'TransformerBlock.self_attn.out_proj.backward: '
                                                         'bias.grad is NoneType')):
        c = TransformerBlock(8, 2, 16, dtype=F64)
        _step(c, x, g); _step(c, x, g)
        setattr(c.self_attn if where == 'out_proj' else c, where, spare)  # no parameter assigned: the counter stays
        c(x); snap = snapshot([p for p in c.parameters() if p is not spare.weight and p is not spare.bias])
        with pytest.raises(RuntimeError, match=match): c.backward(g)
        assert_unchanged(snap, snapshot([p for p in c.parameters() if p is not spare.weight and p is not spare.bias]))


def test_block_backward_before_forward_and_after_a_failed_forward():
    b = TransformerBlock(8, 2, 16, dtype=F64)
    with pytest.raises(RuntimeError, match='TransformerBlock.backward called before forward'):
        b.backward(torch.ones(2, 3, 8, dtype=F64))
    with pytest.raises(TypeError, match='TransformerBlock expects the input to be a torch.Tensor, got list'):
        b([[1.0] * 8])
    # refused by norm1, the first child, and named as the block's
    with pytest.raises(TypeError, match='TransformerBlock expects a floating-point input'):
        b(torch.ones(2, 3, 8, dtype=torch.long))
    b(torch.randn(2, 3, 8, dtype=F64))
    with pytest.raises(TypeError, match=r'TransformerBlock has torch.float64 parameters .*block.to\(dtype='):
        b(torch.randn(2, 3, 8))
    with pytest.raises(RuntimeError, match='TransformerBlock.backward has nothing to backpropagate through'):
        b.backward(torch.ones(2, 3, 8, dtype=F64))


def test_blocks_in_a_sequential_fast_path_equal_checked_calls_and_refuse_whole_blocks():
    torch.manual_seed(0); a = Sequential(TransformerBlock(8, 2, 16, dtype=F64), TransformerBlock(8, 2, 16, dtype=F64))
    torch.manual_seed(0); b1, b2 = TransformerBlock(8, 2, 16, dtype=F64), TransformerBlock(8, 2, 16, dtype=F64)
    x, g = torch.randn(2, 4, 8, dtype=F64), torch.randn(2, 4, 8, dtype=F64)
    for _ in range(3):
        y = a(x); gx = a.backward(g)
        yb = b2(b1(x)); gb = b1.backward(b2.backward(g))
        assert torch.equal(y, yb) and torch.equal(gx, gb)   # the same operations in the same order
    for p, q in zip(a.parameters(), b1.parameters() + b2.parameters()): assert torch.equal(p.grad, q.grad)
    a(x); snap = snapshot(a[1])
    a[1].norm2.bias.grad = torch.zeros(3, dtype=F64)        # the cached path runs the blocks' maths: the counter moved
    with pytest.raises(RuntimeError, match=r'norm2.backward: bias.grad has shape \(3\)'): a.backward(g)
    a[1].norm2.bias.grad = snap[0][11][1].clone()
    assert_unchanged(snap, snapshot(a[1]))                  # refused before any of its children accumulated


def _warm_block():
    torch.manual_seed(0)
    block, x = TransformerBlock(8, 2, 16), torch.randn(2, 3, 8)
    for _ in range(2): y = block(x); block.backward(torch.ones_like(y))
    return block, x


@pytest.mark.parametrize('child', ['linear1', 'norm1', 'self_attn', 'self_attn.out_proj'])
def test_a_module_of_the_block_called_on_its_own_between_forward_and_backward_is_refused(child):
    "its saved tensors would be that call's: the block's backward would mix two inputs"
    block, x = _warm_block()
    y = block(x)
    dict(block.named_modules())[child](torch.randn(2, 3, 8))
    before = snapshot(block)
    with pytest.raises(RuntimeError, match=f'TransformerBlock.backward: its module {child} .* ran forward on its own'):
        block.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(block))


def test_a_gradient_in_the_block_reshaped_in_place_is_refused_before_any_accumulation():
    block, x = _warm_block()
    block.zero_grad(); block.norm1.bias.grad.unsqueeze_(0)  # norm1 accumulates last: the others would have added
    y = block(x)
    before = snapshot(block)
    with pytest.raises(RuntimeError, match=r'bias.grad has shape \(1, 8\).* nothing was accumulated'):
        block.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(block))


@pytest.mark.parametrize('child', ['norm1', 'linear1', 'self_attn.out_proj'])
@pytest.mark.parametrize('how', ['raises', 'wrong shape', 'pre-hook raises'])
def test_a_failing_backward_hook_inside_the_block_leaves_no_gradient_added(child, how):
    "A hook runs after its module's maths and before the next module's: if it fails, every gradient is put back."
    block, x = _warm_block()
    m = dict(block.named_modules())[child]
    def fail(*args): raise ValueError('the hook refused')
    if how == 'raises': m.register_full_backward_hook(fail)
    elif how == 'wrong shape': m.register_full_backward_hook(lambda mod, gi, go: (torch.ones(1),))
    else: m.register_full_backward_pre_hook(fail)
    y = block(x)
    before = snapshot(block)
    with pytest.raises((ValueError, RuntimeError), match='the hook refused|a backward hook returned'):
        block.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(block))


def test_a_wrong_gradient_is_refused_in_the_blocks_name():
    "The block checks the gradient against its output, before its first module (a Dropout) would name itself."
    block, x = _warm_block()
    y = block(x)
    before = snapshot(block)
    for g, error, match in ((torch.ones(2, 3, 7), ValueError, r'TransformerBlock.backward expects a gradient of shape '
                                                              r'\(2, 3, 8\) \(the shape of its forward output\)'),
                            (torch.ones(2, 3, 8, dtype=torch.float64), TypeError, 'gradient of dtype torch.float32')):
        with pytest.raises(error, match=match): block.backward(g)
        assert_unchanged(before, snapshot(block))
    block.backward(torch.ones_like(y))  # the refusals left the forward's state


def test_a_failing_hook_inside_a_block_in_a_warm_sequential_leaves_no_gradient_added():
    "The container's fast path calls its modules' maths alone: a hook inside a block sends it back to its checked path."
    block, x = _warm_block()
    model = Sequential(block)
    state = {'fail': False}
    def hook(m, gi, go):
        if state['fail']: raise ValueError('the hook refused')
    block.norm1.register_full_backward_hook(hook)
    for _ in range(2): y = model(x); model.backward(torch.ones_like(y))  # warm, with the hook in place
    state['fail'] = True
    y = model(x)
    before = snapshot(model)
    with pytest.raises(ValueError, match='the hook refused'): model.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(model))


def test_a_module_replaced_inside_the_block_after_its_forward_is_named_so():
    block, x = _warm_block()
    y = block(x)
    block.linear2 = Linear(16, 8)
    before = snapshot(block)
    with pytest.raises(RuntimeError, match='a module inside it was replaced after its forward'):
        block.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(block))


def test_torch_habits_get_clear_answers():
    "The values the block fixes are accepted, the others refused saying what the block is; its mask is built in."
    b = TransformerBlock(8, 2, 16, batch_first=True, norm_first=True, dtype=F64)
    for name in ('batch_first', 'norm_first'):
        with pytest.raises(ValueError, match=rf'batch-first .* and pre-norm .*{name}=True only, got {name}=False'):
            TransformerBlock(8, 2, 16, **{name: False})
    x = torch.randn(2, 3, 8, dtype=F64)
    assert torch.equal(b(x, is_causal=True), b(x)) and torch.equal(b(x, None), b(x))
    snap = snapshot(b)
    with pytest.raises(ValueError, match='takes no src_mask: the causal mask is built in'):
        b(x, src_mask=causal_bool(3))
    with pytest.raises(ValueError, match='takes no src_key_padding_mask'):
        b(x, src_key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match='causal by construction'): b(x, is_causal=False)
    assert_unchanged(snap, snapshot(b))


@pytest.mark.parametrize('kwargs, exc, match', [
    (dict(layer_norm_eps=0), ValueError, 'TransformerBlock expects layer_norm_eps to be a finite number > 0'),
    (dict(bias='yes'), TypeError, "TransformerBlock expects bias to be True or False, got 'yes'"),
    (dict(nhead=3), ValueError, 'TransformerBlock expects nhead to divide d_model, got d_model=8, nhead=3'),
    (dict(nhead=0), ValueError, 'TransformerBlock expects nhead to be a positive integer'),
    (dict(dtype=torch.int64), TypeError, 'TransformerBlock expects a floating-point dtype'),
])
def test_block_arguments_are_named_as_the_blocks(kwargs, exc, match):
    args = dict(d_model=8, nhead=2, dim_feedforward=16) | kwargs
    with pytest.raises(exc, match=match): TransformerBlock(**args)


def test_what_hooks_keep_or_return_inside_the_block_is_not_written_to():
    ("The residual sums are new tensors: a hook that keeps a branch's output or a gradient, or returns a tensor of its "
     "own (a cached patch, an expanded mean, the module's input), finds it as it was, as in torch.")
    torch.manual_seed(0)
    E, H, FF = 4, 2, 8
    x, g = torch.randn(1, 3, E, dtype=F64), torch.randn(1, 3, E, dtype=F64)
    m = TransformerBlock(E, H, FF, dtype=F64)
    kept = {}
    m.linear2.register_forward_hook(lambda mod, a, o: kept.__setitem__('out', (o, o.clone())))
    m.norm2.register_full_backward_hook(lambda mod, gi, go: kept.__setitem__('gin', (gi[0], gi[0].clone())))
    y = m(x); m.backward(g)
    for t, t0 in kept.values(): torch.testing.assert_close(t, t0, rtol=0, atol=0)
    assert kept['out'][0] is not y
    # a cached patch returned at every call gives the same output twice; an expanded tensor and the module's input
    # itself are accepted
    for patch in (torch.randn(1, 3, E, dtype=F64), torch.zeros(1, 1, E, dtype=F64).expand(1, 3, E), None):
        m2 = TransformerBlock(E, H, FF, dtype=F64)
        m2.self_attn.register_forward_hook(lambda mod, a, o, patch=patch: a[0] if patch is None else patch)
        saved = None if patch is None else patch.clone()
        first = m2(x).clone(); second = m2(x)
        torch.testing.assert_close(second, first, rtol=0, atol=0)
        if patch is not None: torch.testing.assert_close(patch, saved, rtol=0, atol=0)
        m2.backward(g)


def test_a_module_run_again_by_a_hook_during_the_blocks_forward_is_refused_by_backward():
    "A hook on linear2 that probes norm1: norm1 ran twice in one forward, so the block's backward refuses."
    block, x = _warm_block()
    block.linear2.register_forward_hook(lambda m, a, o: block.norm1(torch.randn(2, 3, 8)))
    y = block(x)
    before = snapshot(block)
    with pytest.raises(RuntimeError, match=r'norm1 \(LayerNorm\) ran forward .* a second time during it'):
        block.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(block))


def test_a_module_put_in_a_block_of_a_warm_sequential_has_its_gradients_checked_before_any_accumulation():
    "The fast path knew the block's modules when it was learned: a module put in since is checked, with all the rest."
    block, x = _warm_block()
    model = Sequential(block)
    for _ in range(3): y = model(x); model.backward(torch.ones_like(y))  # the fast path is learned
    spare = Linear(8, 8)
    spare.weight.grad = None  # torch's habit, before the swap: no parameter is made or assigned after it
    block.self_attn.out_proj = spare
    y = model(x)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r'out_proj.backward: weight.grad is NoneType'):
        model.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(model))
    spare.zero_grad()
    for _ in range(2): y = model(x); model.backward(torch.ones_like(y))  # accepted, and learned anew


@pytest.mark.parametrize('in_sequential', [False, True])
def test_a_gradient_made_to_require_grad_in_place_is_refused_before_any_accumulation(in_sequential):
    block, x = _warm_block()
    model = Sequential(block) if in_sequential else block
    for _ in range(3): y = model(x); model.backward(torch.ones_like(y))
    block.norm1.weight.grad.requires_grad_()  # no counter sees it
    y = model(x)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r'norm1.backward: weight.grad requires grad'):
        model.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(model))
