"""Embedding against torch.nn.Embedding: lookups, gradients, padding index, state dicts, errors that change nothing."""
import pytest
import torch
from helpers import SETTINGS
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import Embedding
from minidl.testing import assert_close, assert_unchanged, snapshot

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


F64 = torch.float64


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
    terms = torch.zeros(V, D, dtype=F64).index_add_(0, idx.reshape(-1), g.abs().reshape(-1, D))  # |g| summed per row
    # rows add up per index
    assert_close(ours.weight.grad, ref.weight.grad, n=max(1, idx.numel()), scale=terms.max().item())
    if padding_idx is not None: assert not ours.weight.grad[padding_idx].any()


def test_embedding_init_as_torch_and_state_dict_both_ways():
    torch.manual_seed(3); ours = Embedding(7, 4, padding_idx=2)
    torch.manual_seed(3); ref = torch.nn.Embedding(7, 4, padding_idx=2)
    assert torch.equal(ours.weight.value, ref.weight.detach())
    other = torch.nn.Embedding(7, 4); ours.load_state_dict(other.state_dict())
    assert torch.equal(ours.weight.value, other.weight.detach())
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['weight']


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
    assert_unchanged(snap, snapshot(e))
    with pytest.raises(RuntimeError, match='nothing to backpropagate'): e.backward(torch.ones(2, 3))
    assert_unchanged(snap, snapshot(e))


def test_torch_options_that_change_the_maths_are_refused_unless_at_their_defaults():
    "torch's positional order up to `sparse`: a torch call carries over, or says what minidl does not do."
    assert Embedding(5, 2, None, None, 2.0, False, False).weight.value.shape == (5, 2)
    for kw in (dict(max_norm=1.0), dict(norm_type=1.0), dict(scale_grad_by_freq=True), dict(sparse=True)):
        name = next(iter(kw))
        with pytest.raises(NotImplementedError, match=f"Embedding: {name}=.* is an option of torch's Embedding"):
            Embedding(5, 2, **kw)
    with pytest.raises(NotImplementedError, match='max_norm=1.0'): Embedding(5, 2, None, 1.0)
    with pytest.raises(TypeError, match='positional'): Embedding(5, 2, None, None, 2.0, False, False, 'cpu')


def test_padding_idx_written_later_is_checked_normalised_and_waits_for_a_forward():
    "As torch: -1 is the last row, out of range is refused, and backward uses the value of its forward."
    e = Embedding(5, 3, dtype=F64)
    t = torch.nn.Embedding(5, 3, dtype=F64); t.load_state_dict(e.state_dict())
    e.padding_idx = -1; t.padding_idx = -1
    idx, g = torch.tensor([4, 4, 1]), torch.ones(3, 3, dtype=F64)
    e(idx); e.backward(g); t(idx).backward(g)
    assert e.padding_idx == 4 and torch.equal(e.weight.grad, t.weight.grad)   # the padding row got no gradient
    with pytest.raises(ValueError, match=r'padding_idx to be None or an integer in \[-5, 5\).*got 7'):
        e.padding_idx = 7
    assert e.padding_idx == 4
    e(torch.tensor([1, 2])); snap = snapshot(e)
    e.padding_idx = 1                                                        # between forward and backward
    with pytest.raises(RuntimeError, match='its padding_idx was changed after its forward'):
        e.backward(torch.ones(2, 3, dtype=F64))
    assert_unchanged(snap, snapshot(e))


def test_from_pretrained_shares_the_table_and_refuses_freeze():
    w = torch.randn(4, 2, dtype=F64)
    rng = torch.get_rng_state()
    e = Embedding.from_pretrained(w, freeze=False, padding_idx=1)
    assert torch.equal(torch.get_rng_state(), rng)                           # torch's global generator untouched
    t = torch.nn.Embedding.from_pretrained(w, freeze=False, padding_idx=1)
    assert e.weight.value.data_ptr() == w.data_ptr() and torch.equal(e.weight.value, t.weight.detach())
    with pytest.raises(NotImplementedError, match='pass freeze=False'): Embedding.from_pretrained(w)
    with pytest.raises(ValueError, match='2-D floating-point tensor'): Embedding.from_pretrained(w.long(), freeze=False)
