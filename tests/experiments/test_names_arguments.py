"""The names experiment's Python API refuses bad arguments with one clear message, before any work: `None` asks for a
model's default, 0 is refused; a string is not a list of names."""
import pytest
import torch

pytest.importorskip('names')
from minidl.experiments.names import (
    IGNORE,
    NamesTransformer,
    OneHotBigram,
    batch_indices,
    evaluate_nll,
    model_from_config,
    novelty,
    run_names,
    sample_names,
    smoothed_counts,
)
from minidl.experiments.names_data import (
    MAX_LEN,
    bigram_counts,
    bigram_nll,
    decode,
    load_names_split,
    name_contexts,
    name_sequences,
)
from minidl.testing import assert_clear_error


@pytest.mark.parametrize('kw, msg', [
    (dict(steps=0), 'steps to be an integer >= 1, got 0'), (dict(batch_size=0), 'batch_size to be an integer >= 1'),
    (dict(pieces=0), 'pieces to be an integer >= 1'), (dict(points=0), 'points to be an integer >= 1, got 0'),
    (dict(points=-2), 'points'), (dict(train_names=0), 'train_names to be an integer >= 1, got 0'),
    (dict(train_names=-1), 'train_names'), (dict(seed=-1), 'an integer in [0, 2**63), got -1'),
    (dict(seed=2**64 - 1), 'an integer in [0, 2**63)'), (dict(seed=1.5), 'got 1.5'),
])
def test_run_names_checks_every_argument_and_takes_0_for_no_default(kw, msg):
    assert_clear_error(ValueError, ['run_names', msg], run_names, 'bigram', **kw)


def test_run_names_refuses_an_unhashable_name():
    assert_clear_error(ValueError, "unknown model ['bigram']", run_names, ['bigram'])


def test_names_helpers_refuse_a_string_for_a_list_of_names():
    assert_clear_error(TypeError, "name_contexts expects a list of names, got the string 'smith'", name_contexts,
                       'smith', 2)
    assert_clear_error(TypeError, 'name_sequences expects a list of names', name_sequences, 'smith')
    assert_clear_error(TypeError, 'bigram_counts expects a list of names', bigram_counts, 'ab')
    assert_clear_error(TypeError, 'novelty expects a list of names', novelty, 'ab', ['a'])
    assert_clear_error(TypeError, 'novelty expects a list of names', novelty, ['a'], 'abc')
    assert name_sequences([])[0].shape == (0, MAX_LEN + 1)  # no names: (0, T), as documented


def test_decode_refuses_negative_and_bool_indices():
    assert_clear_error(ValueError, 'got -1', decode, [1, -1, 2])
    assert_clear_error(ValueError, 'got True', decode, [True, 2])
    assert_clear_error(ValueError, '1-D integer tensor', decode, torch.tensor([[1, 2]]))
    assert decode([1, 2, 0, 3]) == 'ab'


def test_load_names_split_refuses_fractions_that_leave_a_part_empty_or_are_not_numbers():
    assert_clear_error(ValueError, 'leave no name in train', load_names_split, 0, (1e-6, 0.5, 0.5 - 1e-6))
    for bad in ((float('nan'), 0.5, 0.5), (0.5, 0.5), 1):
        assert_clear_error(ValueError, 'three positive fractions summing to 1', load_names_split, 0, bad)


@pytest.mark.parametrize('s', [-1, float('nan'), float('inf')])
def test_smoothing_is_finite_and_non_negative(s):
    assert_clear_error(ValueError, 'smoothing', smoothed_counts, ['ab'], s)
    assert_clear_error(ValueError, 'smoothing, a finite number >= 0', bigram_nll, bigram_counts(['ab']), ['ba'], s)


def test_sampling_and_configurations_fail_clearly():
    m = OneHotBigram(generator=torch.Generator().manual_seed(0))
    assert_clear_error(TypeError, 'expects a torch.Generator', sample_names, m, 2, generator=3)
    tr = NamesTransformer(block_size=5, d_model=8, nhead=2, layers=1, generator=torch.Generator().manual_seed(0))
    assert len(sample_names(tr, 3, generator=torch.Generator().manual_seed(0))) == 3  # the context kept to 5
    assert_clear_error(ValueError, "unknown key(s) 'foo'", model_from_config, dict(model='bigram', foo=1))
    assert_clear_error(TypeError, 'expects a configuration dict', model_from_config, None)
    assert_clear_error(TypeError, 'expects a configuration dict', model_from_config, 'mlp')


def test_evaluate_nll_and_batch_indices_check_their_arguments():
    m, x = OneHotBigram(generator=torch.Generator().manual_seed(0)), torch.tensor([[1]])
    assert_clear_error(ValueError, 'every target is IGNORE', evaluate_nll, m, x, torch.tensor([IGNORE]))
    assert_clear_error(ValueError, 'batch_size to be an integer >= 1', evaluate_nll, m, x, torch.tensor([2]), 0)
    assert_clear_error(ValueError, 'targets in 0..26 or IGNORE', evaluate_nll, m, x, torch.tensor([30]))
    assert_clear_error(ValueError, 'targets in 0..26 or IGNORE', evaluate_nll, m, x, torch.tensor([-1]))
    assert_clear_error(ValueError, 'as many targets as inputs', evaluate_nll, m, torch.tensor([[1], [2]]),
                       torch.tensor([3]))
    assert_clear_error(ValueError, 'batch_size to be an integer >= 1', batch_indices, 10, 0, 2, torch.Generator())
    assert_clear_error(TypeError, 'torch.Generator', batch_indices, 10, 2, 2, 5)


@pytest.mark.parametrize('path', [3, '', None])
def test_load_names_model_wants_a_path(path):
    from minidl.experiments.names_cli import load_names_model
    with pytest.raises(TypeError, match='expects the path of a checkpoint file'): load_names_model(path)
