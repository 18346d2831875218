"""CausalSelfAttention against torch.nn.MultiheadAttention with a causal mask: values, gradients, initialisation,
dropout, errors that change nothing, hooks on a real attention layer."""
import pytest
import torch
from helpers import SETTINGS, causal_bool, compare_params, randomise
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import CausalSelfAttention, Linear, Sequential, TransformerBlock, gradcheck
from minidl.testing import assert_close, assert_unchanged, snapshot

F64 = torch.float64


@pytest.mark.parity
@settings(**SETTINGS)
# T on both sides of 16: the softmax of shorter rows is written out, that of longer rows is torch's kernel
@given(B=st.integers(1, 3), T=st.sampled_from([1, 2, 3, 6, 15, 16, 21]), H=st.integers(1, 3), D=st.integers(1, 4),
       bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
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
    # the chain: the projections (E terms), the scores (D), the softmax and the weighted sum (T each), the output
    # projection (E); the parameters' gradients also sum over the B T positions; four products with weights
    tol = dict(n=3 * E + D + 2 * T + B * T, cond=4)
    assert_close(ours(x), yr, **tol); assert_close(ours.backward(g), xr.grad, **tol)
    compare_params(ours, ref, **tol)
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parity
def test_attention_init_state_dict_both_ways_and_gradcheck():
    torch.manual_seed(5); ours = CausalSelfAttention(12, 3)
    torch.manual_seed(5); ref = torch.nn.MultiheadAttention(12, 3, batch_first=True)
    # the same draws, in torch's order
    for k, v in ref.state_dict().items(): assert torch.equal(ours.state_dict()[k], v), k
    other = torch.nn.MultiheadAttention(12, 3, batch_first=True); randomise(other, torch.Generator().manual_seed(0))
    ours.load_state_dict(other.state_dict()); ref.load_state_dict(ours.state_dict())
    for k, v in other.state_dict().items(): assert torch.equal(ref.state_dict()[k], v)
    a = CausalSelfAttention(6, 2, dtype=F64)
    randomise(
        a_ref := torch.nn.MultiheadAttention(6, 2, batch_first=True, dtype=F64),
        torch.Generator().manual_seed(1),
    )
    a.load_state_dict(a_ref.state_dict())
    for T in (1, 3): assert gradcheck(a, torch.randn(2, T, 6, dtype=F64))
    assert gradcheck(CausalSelfAttention(4, 4, bias=False), torch.randn(1, 3, 4, dtype=F64))


@pytest.mark.parity
def test_attention_is_causal_and_keeps_weights():
    a = CausalSelfAttention(8, 2, dtype=F64)
    x = torch.randn(2, 6, 8, dtype=F64)
    y0 = a(x); x2 = x.clone(); x2[:, 4:] = torch.randn(2, 2, 8, dtype=F64); y1 = a(x2)
    assert torch.equal(y0[:, :4], y1[:, :4])  # the same operations on the same numbers for the rows before 4
    w = a.attn_weights
    assert w.shape == (2, 2, 6, 6) and not w.triu(1).any()
    assert_close(w.sum(-1), torch.ones(2, 2, 6, dtype=F64), n=6)  # a softmax over 6 positions, summed


@pytest.mark.parity
def test_attention_dropout_train_and_eval():
    a = CausalSelfAttention(8, 2, dropout=0.5, dtype=F64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 5, 8, dtype=F64)
    assert not torch.equal(a(x), a(x))
    a.eval(); assert torch.equal(a(x), a(x))
    a.train(); a.dropout = 1.0; a(x); a.backward(torch.ones(2, 5, 8, dtype=F64))  # everything dropped: finite gradients
    assert all(torch.isfinite(p.grad).all() for p in a.parameters())


@pytest.mark.parity
def test_attention_errors_change_nothing():
    a = CausalSelfAttention(8, 2, dtype=F64)
    a(torch.randn(2, 3, 8, dtype=F64)); a.backward(torch.randn(2, 3, 8, dtype=F64))
    snap = snapshot(a)
    for bad, err in [(torch.ones(2, 8, dtype=F64), ValueError), (torch.ones(2, 3, 6, dtype=F64), ValueError),
                     (torch.ones(2, 3, 8), TypeError), (torch.ones(2, 3, 8, dtype=torch.long), TypeError)]:
        with pytest.raises(err): a(bad)
        assert_unchanged(snap, snapshot(a))
    a(torch.randn(2, 3, 8, dtype=F64))
    with pytest.raises(ValueError, match=r'gradient of shape \(2, 3, 8\)'): a.backward(torch.ones(2, 4, 8, dtype=F64))
    assert_unchanged(snap, snapshot(a))
    a.in_proj_bias.grad = torch.zeros(5, dtype=F64)
    with pytest.raises(RuntimeError, match='in_proj_bias.grad has shape'): a.backward(torch.ones(2, 3, 8, dtype=F64))
    # out_proj accumulated nothing
    assert all(torch.equal(p.grad, s) for p, s in zip(a.out_proj.parameters(), [g for _, g in snap[0][2:4]]))
    with pytest.raises(ValueError, match='divide embed_dim'): CausalSelfAttention(6, 4)


def test_attention_maps_of_a_real_attention_layer():
    from minidl import CausalSelfAttention
    from minidl.diagnostics import AttentionMaps
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, 2, dtype=torch.float64)
    maps = AttentionMaps(Sequential(attn))
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    attn(x)
    maps.after_step()
    ((step, w),) = maps.maps['0']
    assert step == 0 and w.shape == (2, 4, 4)
    assert torch.equal(w, attn.attn_weights[0])                       # a copy of the first sample's maps
    assert torch.all(w.triu(1) == 0)                                   # the causal mask: no weight on the future
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, dtype=torch.float64))  # rows of a softmax: 4 terms each


def _step(m, x, g):
    y = m(x); m.backward(g); return y


@pytest.mark.parity
def test_attention_cached_checks_see_parameters_replaced_between_calls():
    "The usual call compares one counter: a value or gradient replaced by hand since the last call is still caught."
    a = CausalSelfAttention(8, 2, dtype=F64)
    x, g = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    _step(a, x, g); _step(a, x, g)                          # the second call takes the cached path
    snap = snapshot(a)
    w = a.in_proj_weight.value
    a.in_proj_weight.value = torch.zeros(5, 8, dtype=F64)
    with pytest.raises(RuntimeError, match=r"in_proj_weight has shape \(5, 8\), expected \(24, 8\)"): a(x)
    a.in_proj_weight.value = w
    b = a.in_proj_bias.value
    a.in_proj_bias.value = torch.zeros(1, dtype=F64)       # torch's addmm would broadcast it: the check refuses it
    with pytest.raises(RuntimeError, match=r"in_proj_bias has shape \(1\), expected \(24\)"): a(x)
    a.in_proj_bias.value = b.float()                       # cast on its own: named, not torch's dtype message
    with pytest.raises(RuntimeError, match='in_proj_weight is torch.float64 on cpu but its in_proj_bias is '
                                           'torch.float32'): a(x)
    a.in_proj_bias.value = b
    assert_unchanged(snap, snapshot(a))
    a(x)
    a.out_proj.bias.grad = torch.zeros(3, dtype=F64)       # between forward and backward
    with pytest.raises(RuntimeError, match=r"bias.grad has shape \(3\)"): a.backward(g)
    a.out_proj.bias.grad = snap[0][3][1].clone()
    assert_unchanged(snap, snapshot(a))                     # nothing accumulated: not even out_proj's weight
    _step(a, x, g)                                          # and it works again


@pytest.mark.parity
def test_attention_out_proj_replaced_without_a_counter_change_is_checked():
    ("An older Linear swapped in as out_proj (no parameter assigned, so the counter stays) is checked before "
     "anything accumulates.")
    spare = Linear(8, 8, dtype=F64); spare.weight.grad = None  # made, and broken, before the cached call
    a = CausalSelfAttention(8, 2, dtype=F64)
    x, g = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    _step(a, x, g); _step(a, x, g)
    a.out_proj = spare
    a(x); snap = snapshot(a.in_proj_weight, a.in_proj_bias, spare.bias)
    with pytest.raises(RuntimeError, match='weight.grad is NoneType'): a.backward(g)
    assert_unchanged(snap, snapshot(a.in_proj_weight, a.in_proj_bias, spare.bias))


@pytest.mark.parity
def test_attention_cached_path_errors_stay_clear_and_change_nothing():
    a = CausalSelfAttention(8, 2, dtype=F64)
    x, g = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    _step(a, x, g); _step(a, x, g)
    snap = snapshot(a)
    with pytest.raises(TypeError, match='float64 parameters but got a torch.float32 input'): a(x.float())
    with pytest.raises(TypeError, match='floating-point input'): a(torch.ones(2, 3, 8, dtype=torch.long))
    # empty: no product refuses it
    with pytest.raises(ValueError, match=r'input of shape \(B, T, 8\)'): a(torch.ones(0, 3, 6, dtype=F64))
    assert_unchanged(snap, snapshot(a))
    a(x)
    with pytest.raises(TypeError, match='CausalSelfAttention.backward expects a gradient of dtype '
                                        'torch.float64'): a.backward(g.float())
    with pytest.raises(ValueError, match=r'CausalSelfAttention.backward expects a gradient of shape \(2, 3, 8\)'):
        a.backward(g.reshape(3, 2, 8))                     # as many elements: a view would have taken it
    a.attn_weights.mul_(1.0)                                # an in-place edit of what forward saved (P)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): a.backward(g)
    assert_unchanged(snap, snapshot(a))
    xr = x.clone().requires_grad_()
    y = a(xr); assert not y.requires_grad and y.grad_fn is None  # the cached path too: no autograd history
    gt = g.transpose(1, 2).contiguous().transpose(1, 2)     # the same values, not contiguous
    assert torch.equal(a.backward(gt), (a(xr), a.backward(g))[1])  # the same operations on the same numbers


@pytest.mark.parity
def test_attention_in_a_sequential_fast_path_equals_checked_calls():
    torch.manual_seed(0); a = Sequential(CausalSelfAttention(8, 2, dtype=F64))
    torch.manual_seed(0); b = CausalSelfAttention(8, 2, dtype=F64)
    x, g = torch.randn(2, 4, 8, dtype=F64), torch.randn(2, 4, 8, dtype=F64)
    for _ in range(3):
        assert torch.equal(_step(a, x, g), _step(b, x, g))  # the same operations in the same order
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p.grad, q.grad)
    a(x); snap = snapshot(a)
    a[0].in_proj_weight.grad = torch.zeros(3, dtype=F64)
    with pytest.raises(RuntimeError, match='in_proj_weight.grad has shape'): a.backward(g)
    a[0].in_proj_weight.grad = snap[0][0][1].clone()
    assert_unchanged(snap, snapshot(a))


@pytest.mark.parametrize('make', [lambda: CausalSelfAttention(8, 2, dtype=torch.float64),
                                  lambda: TransformerBlock(8, 2, 16, dtype=torch.float64)])
def test_a_sequence_of_length_zero_gives_an_empty_output_as_torch(make):
    m = make()
    x = torch.randn(2, 0, 8, dtype=torch.float64)
    y = m(x)
    assert y.shape == (2, 0, 8)
    dx = m.backward(torch.ones_like(y))
    assert dx.shape == (2, 0, 8)
    assert all(not p.grad.any() for p in m.parameters())  # nothing to learn from no position


def test_the_output_projection_called_on_its_own_between_forward_and_backward_is_refused():
    torch.manual_seed(0)
    attn, x = CausalSelfAttention(8, 2), torch.randn(2, 3, 8)
    for _ in range(2): y = attn(x); attn.backward(torch.ones_like(y))
    y = attn(x)
    attn.out_proj(torch.randn(2, 3, 8))
    before = snapshot(attn)
    with pytest.raises(RuntimeError, match=r'CausalSelfAttention.backward: its module out_proj \(Linear\) ran forward'):
        attn.backward(torch.ones_like(y))
    assert_unchanged(before, snapshot(attn))


def test_dropout_written_later_is_checked_and_sizes_are_fixed():
    a = CausalSelfAttention(8, 2, dtype=F64)
    for bad in (2.0, -0.5, '0.1', True):
        with pytest.raises(ValueError, match='dropout probability in'): a.dropout = bad
    assert a.dropout == 0.0
    x = torch.randn(2, 5, 8, dtype=F64); a(x); snap = snapshot(a)
    a.dropout = 0.5                                                       # a change after forward: backward waits
    with pytest.raises(RuntimeError, match='its dropout was changed after its forward'): a.backward(torch.ones_like(x))
    assert_unchanged(snap, snapshot(a))
    for name in ('num_heads', 'head_dim', 'embed_dim'):
        with pytest.raises(AttributeError, match=f'{name} is fixed when the layer is made'): setattr(a, name, 4)
    assert (a.embed_dim, a.num_heads, a.head_dim) == (8, 2, 4)
    with pytest.raises(TypeError, match="torch's MultiheadAttention takes add_bias_kv there"):
        CausalSelfAttention(8, 2, 0.0, True, False)
