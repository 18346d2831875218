"""The names experiment: the data split, the bigram's closed form, the torch.nn twins in float64, and the `minidl-names`
command end to end (tiny runs: the numbers mean nothing, the files and errors are checked)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('names')
from minidl.experiments.names import (
    MODELS,
    NamesMLP,
    NamesTransformer,
    OneHotBigram,
    evaluate_nll,
    model_config,
    model_from_config,
    names_data,
    names_optimizers,
    novelty,
    run_names,
    sample_names,
    smoothed_counts,
)
from minidl.experiments.names_cli import OUT_FILES, names_main
from minidl.experiments.names_data import (
    IGNORE,
    VOCAB,
    bigram_counts,
    bigram_nll,
    load_names_split,
    load_surnames,
    name_contexts,
    name_sequences,
)
from minidl.testing import assert_unchanged, snapshot

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT/'benchmarks'))
from names_twins import benchmark_step, train_torch  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope='module')
def split():
    return load_names_split(42)


def test_surnames_and_split(split):
    words = load_surnames()
    assert len(words) == 88_799 and max(map(len, words)) == 13
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert {k: len(v) for k, v in split.items()} == {'train': 71_039, 'val': 8_879, 'test': 8_881}
    assert sorted(split['train'] + split['val'] + split['test']) == sorted(words)
    assert load_names_split(42) == split and load_names_split(1)['val'] != split['val']


def test_contexts_and_sequences_hold_the_same_characters(split):
    x, y = name_sequences(split['test'][:500])
    xc, yc = name_contexts(split['test'][:500], 1)
    assert int((y != IGNORE).sum()) == len(yc) == sum(len(w) + 1 for w in split['test'][:500])
    assert x.shape == (500, 14) and (x[:, 0] == 0).all()


def test_bigram_closed_form_and_the_trained_linear(split):
    counts = bigram_counts(split['train'])
    closed = {k: bigram_nll(counts, split[k]) for k in ('train', 'val', 'test')}
    assert abs(closed['val'] - 2.566) < 5e-4  # the count table's validation NLL measured with torch
    p, _ = smoothed_counts(split['train'])
    table = OneHotBigram().to(dtype=F64)  # the closed form as a network: W = log P
    table.linear.weight.value.copy_(p.log().t()); table.linear.bias.value.zero_()
    assert abs(evaluate_nll(table, *name_contexts(split['val'], 1)) - closed['val']) < 1e-12
    run = run_names('bigram', 0, points=2)  # the recipe: full batch on the smoothed table, 3,000 steps
    for k in closed: assert abs(getattr(run, f'{k}_nll') - closed[k]) < 1e-6, (k, getattr(run, f'{k}_nll'), closed[k])


SMALL = {'bigram': (lambda g: OneHotBigram(generator=g), 27, 1),
         'mlp': (lambda g: NamesMLP(3, 5, 32, 0.0, generator=g), 32, 3),
         'transformer': (lambda g: NamesTransformer(14, 16, 2, 2, dropout=0.0, generator=g), 16, 14),
         # the recipe's gated network: Muon updates linear1's stacked halves, and W_q, W_k, W_v, one by one
         'transformer-geglu': (lambda g: NamesTransformer(14, 16, 2, 2, 12, dropout=0.0, activation='geglu',
                                                          generator=g), 16, 14)}


@pytest.mark.parity
@pytest.mark.parametrize('name', list(SMALL))
def test_twins_agree_after_100_steps_in_float64(name, split):
    """minidl and its torch.nn twin, same start, same batches, dropout 0: 100 steps in float64 of AdamW (and of Muon
    for the Transformer's blocks, torch's in the parameters' dtype) under one-cycle schedules.
    Tolerance: each step agrees to a few ulps times the reduction lengths (~1e-14); Adam's division by sqrt(v) magnifies
    the rounding of the smallest gradients, and 100 steps compound it, so we allow 1e-9 relative to each
    tensor's scale."""
    build, bs, ctx = SMALL[name]
    name = name.split('-')[0]  # the recipe it trains with
    small = {k: v[:2000] for k, v in split.items()}
    data = names_data(MODELS[name].kind, ctx, small)
    ref = train_torch(
        name,
        0,
        steps=100,
        batch_size=bs,
        data=data,
        model=build(torch.Generator().manual_seed(0)).to(F64),
        final=False,
        points=0,
    )
    run = run_names(name, 0, steps=100, batch_size=bs, build=build, dtype=F64, data=data, final=False, points=1)
    sd = ref['model'].state_dict()
    assert list(run.model.state_dict()) == list(sd)
    for k, v in run.model.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=1e-9, atol=1e-9 * float(sd[k].abs().max()))
    start = build(torch.Generator().manual_seed(0)).to(F64).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in run.model.state_dict().items())  # it did train


def test_benchmark_step_callables():
    m_step, t_step = benchmark_step(batch_size=8)
    before = {k: v.clone() for k, v in m_step.model.state_dict().items()}
    for _ in range(2): m_step(); t_step()
    after = m_step.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert set(after) == set(t_step.model.state_dict())


def test_sample_names_and_config_round_trip():
    m = NamesMLP(4, 6, 16, generator=torch.Generator().manual_seed(0))
    s = sample_names(m, 12, 0.8, torch.Generator().manual_seed(5))
    assert s == sample_names(m, 12, 0.8, torch.Generator().manual_seed(5)) and len(s) == 12
    assert all(len(x) <= 13 and set(x) <= set(VOCAB[1:]) for x in s)
    assert novelty(['a', 'b'], {'a'}) == 0.5
    m2 = model_from_config(model_config(m))
    assert type(m2) is NamesMLP and model_config(m2) == model_config(m)


def test_short_run_writes_results_and_checkpoints_then_sample(tmp_path, capsys):
    out, ck = tmp_path/'res', tmp_path/'ck'
    assert (
        names_main(
            [
                '--model',
                'all',
                '--steps',
                '12',
                '--seed',
                '3',
                '--out',
                str(out),
                '--save',
                str(ck),
                '--quiet',
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(OUT_FILES)  # no temporary file left behind
    res = json.loads((out/'results.json').read_text())
    assert set(res) == {'settings', 'bigram', 'mlp', 'transformer'}
    assert res['settings']['seeds'] == [3] and res['settings']['threads'] == 1 and res['settings']['split_seed'] == 42
    for name in ('bigram', 'mlp', 'transformer'):
        r = res[name]
        assert len(r['val_nll']) == len(r['test_nll']) == len(r['train_nll']) == 1 and r['steps'] == 12
        assert all(isinstance(v, float) and 0 < v < 4 for v in r['val_nll'] + r['test_nll'])
        assert r['parameters'] > 0 and len(r['curves']) == 1
    assert abs(res['bigram']['closed_form']['val'] - 2.566) < 5e-4
    table = capsys.readouterr().out
    assert 'Transformer' in table and 'closed form' in table
    assert sorted(p.name for p in ck.iterdir()) == [f"{n}-seed3.pt" for n in ('bigram', 'mlp', 'transformer')]
    assert (
        names_main(
            [
                'sample',
                '--from',
                str(ck / 'transformer-seed3.pt'),
                '--n',
                '7',
                '--temperature',
                '0.8',
                '--seed',
                '2',
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and 'not in the training set' in lines[-1]


@pytest.mark.parametrize('argv, message', [
    (['--model', 'rnn'], "argument --model: invalid choice: 'rnn'"),
    (['--runs', '0'], "argument --runs: expected a positive integer, got '0'"),
    (['--steps', 'lots'], "argument --steps: expected a positive integer, got 'lots'"),
    # the Transformer's warm-up of 0.2 x 5 = 1 step is empty: refused before any model trains, not after two
    (['--steps', '5'], "argument --steps: the transformer model's one-cycle schedule warms up over 0.2 of the steps"),
    (['--seed', '-3'], "argument --seed: expected an integer >= 0, got '-3'"),
    (['--threads', '0'], "argument --threads: expected a positive integer"),
    (['--device', 'tpu'], "argument --device: invalid choice: 'tpu'"),
    (['--out', ''], "argument --out: expected a path, got an empty string"),
    (['--frobnicate'], "unrecognized arguments: --frobnicate"),
    (['sample'], "the following arguments are required: --from"),
    (['sample', '--from', 'x.pt', '--temperature', '0'], "argument --temperature: expected a finite number > "
                                                         "0, got '0'"),
    (['sample', '--from', 'x.pt', '--n', '0'], "argument --n: expected a positive integer, got '0'"),
    (['sample', '--from', 'no-such-file.pt'], "--from 'no-such-file.pt': no checkpoint file at"),
    (['sample', '--from', '.'], "--from '.': '.' is a folder, expected a checkpoint file"),
])
def test_bad_arguments_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e: names_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('minidl-names') and message in err, err


def test_bad_destinations_and_checkpoints_create_nothing(tmp_path, capsys):
    f = tmp_path/'file'; f.write_text('x')
    for argv in (
        ['--out', str(f)],
        ['--out', str(f / 'sub')],
        ['--out', str(tmp_path / 'new'), '--save', str(f)],
        ['sample', '--from', str(f)],
    ):
        with pytest.raises(SystemExit) as e: names_main(argv)
        assert e.value.code == 2 and capsys.readouterr().err.count('\n') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


def test_python_m_minidl_names():
    r = subprocess.run(
        [sys.executable, '-m', 'minidl', 'names', '--help'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.startswith('usage: minidl-names') and '--temperature' not in r.stdout
    r = subprocess.run(
        [sys.executable, '-m', 'minidl', 'names', 'sample', '--help'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.startswith('usage: minidl-names sample') and '--temperature' in r.stdout


def test_distributed_two_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc-per-node',
        '2',
        '-m',
        'minidl',
        'names',
        '--distributed',
        '--model',
        'transformer',
        '--steps',
        '6',
        '--quiet',
        '--out',
        str(tmp_path / 'dp'),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path/'dp'/'results.json').read_text())
    assert res['settings']['distributed']['world_size'] == 2 and len(res['transformer']['val_nll']) == 1
    assert r.stdout.count('Transformer') == 1  # rank 0 alone prints the table


def test_names_budget_steps_and_carry():
    from names_budget import BUDGET_S, REFERENCE_MS, carry, mlp_step, reference_step
    for make in (reference_step, mlp_step):
        step = make()
        step(); step()  # two steps of each run
    r = carry({'reference': 40.0, 'transformer': 120.0, 'mlp': 4.0})
    t = r['transformer']
    assert t['per_reference_step'] == 3.0 and t['seconds_here'] == MODELS['transformer'].steps * 0.120
    assert t['seconds_there'] == pytest.approx(MODELS['transformer'].steps * 3.0 * REFERENCE_MS / 1000)
    assert t['within_budget'] == (t['seconds_there'] <= BUDGET_S)
    assert t['steps_in_budget'] == int(BUDGET_S * 1000 / (3.0 * REFERENCE_MS))
    assert r['mlp']['per_reference_step'] == 0.1


def test_names_budget_bad_rounds_one_line_exit_2(capsys):
    from names_budget import main
    with pytest.raises(SystemExit) as e: main(['--rounds', '0'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and '--rounds must be at least 1, got 0' in err


def test_interrupted_first_checkpoint_leaves_no_empty_save_folder(tmp_path, capsys, monkeypatch):
    "Ctrl-C while the first checkpoint is written: exit 130, the results kept, no empty --save folder left behind"
    import minidl.experiments.names_cli as C
    def interrupt(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(C, 'save_checkpoint', interrupt)
    out, ck = tmp_path/'res', tmp_path/'ck'/'models'
    with pytest.raises(SystemExit) as e:
        names_main(['--model', 'bigram', '--steps', '3', '--out', str(out), '--save', str(ck), '--quiet'])
    assert e.value.code == 130
    # all or none: the checkpoints come first, so nothing was put in place; no folder made for them is left
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.startswith('minidl-names: interrupted; nothing written')


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_results(tmp_path, capsys, monkeypatch):
    "The checkpoints are written before the results replace the old ones: a failure leaves the old set, in one line"
    import errno

    import minidl.experiments.names_cli as C
    out, ck = tmp_path/'res', tmp_path/'ck'
    out.mkdir(); (out/'results.json').write_text('{"previous": true}\n')
    def full(path, *a, **k): raise OSError(errno.ENOSPC, f"cannot write {path}: the write failed (No space left)")
    monkeypatch.setattr(C, 'save_checkpoint', full)
    assert names_main(['--model', 'bigram', '--steps', '3', '--out', str(out), '--save', str(ck), '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f"cannot write {ck/'bigram-seed0.pt'}" in err and 'nothing was written' in err, err
    assert [p.name for p in out.iterdir()] == ['results.json'] and not ck.exists()
    assert (out/'results.json').read_text() == '{"previous": true}\n'


def test_sample_from_a_diverged_checkpoint_is_one_line(tmp_path, capsys):
    from minidl.checkpoint import save_checkpoint
    from minidl.experiments.names_cli import load_names_model
    ck = tmp_path/'ck'
    assert names_main(['--model', 'mlp', '--steps', '5', '--out', str(tmp_path/'res'), '--save', str(ck), '-q']) == 0
    model, info = load_names_model(ck/'mlp-seed0.pt')
    for p in model.parameters(): p.value.fill_(float('nan'))
    save_checkpoint(tmp_path/'nan.pt', model, names=info)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: names_main(['sample', '--from', str(tmp_path/'nan.pt')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'holds NaN or infinite weights' in err, err
    # a checkpoint whose recorded split seed cannot make the split again: one line too
    model, info = load_names_model(ck/'mlp-seed0.pt')
    save_checkpoint(tmp_path/'split.pt', model, names={**info, 'split_seed': -1})
    with pytest.raises(SystemExit) as e: names_main(['sample', '--from', str(tmp_path/'split.pt')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'its recorded split cannot be made again' in err, err
    # a bit flipped in the checkpoint's structure record: the record is named, as load_checkpoint names it
    import struct
    import zipfile
    raw = bytearray((ck/'mlp-seed0.pt').read_bytes())
    with zipfile.ZipFile(ck/'mlp-seed0.pt') as z:
        info = next(i for i in z.infolist() if i.filename.endswith('data.pkl'))
    name_len, extra_len = struct.unpack('<HH', raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x10
    (tmp_path/'flip.pt').write_bytes(raw)
    with pytest.raises(SystemExit) as e: names_main(['sample', '--from', str(tmp_path/'flip.pt')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'data.pkl' in err and 'fails its CRC-32' in err, err


def test_transformer_schedules_warm_up_a_fifth_then_come_down_in_a_straight_line():
    """The recipe's schedules, AdamW's and Muon's, are torch's OneCycleLR with `pct_start=0.2` and
    `anneal_strategy='linear'`: the peak after a fifth of the steps, then halfway down at 60 % (both rates the same)."""
    spec, steps, lr = MODELS['transformer'], 100, 1e-2
    assert (spec.pct_start, spec.anneal_strategy) == (0.2, 'linear')
    m = NamesTransformer(14, 16, 2, 2, 12, dropout=0.0, activation='geglu', generator=torch.Generator().manual_seed(0))
    opts, scheds = names_optimizers(m, spec, lr, spec.weight_decay, steps)
    assert [type(o).__name__ for o in opts] == ['AdamW', 'Muon']
    ref = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=lr, total_steps=steps, pct_start=0.2,
                                                    anneal_strategy='linear')
    rates = []
    for _ in range(steps - 1):
        rates.append(ref.param_groups[0]['lr'])
        for o in opts: assert [g['lr'] for g in o.param_groups] == [rates[-1]] * len(o.param_groups)
        for o, s in zip(opts, scheds): o.step(); s.step()
        ref.step(); ref_sched.step()
    low = lr / 25 / 1e4  # the final rate: max_lr / div_factor / final_div_factor
    assert rates[19] == pytest.approx(lr, rel=1e-12) and max(rates) == rates[19]  # the peak ends the warm-up
    assert rates[59] == pytest.approx((lr + low) / 2, rel=1e-12)  # halfway down, in a straight line
    assert rates[1] - rates[0] == pytest.approx(rates[2] - rates[1], rel=1e-9)  # the warm-up is a line too


def test_a_twin_run_with_dropout_repeats_and_leaves_the_global_generator_alone(split):
    """The twins draw their dropout masks from torch's global generator: `train_torch` seeds it with the run's seed for
    the run and gives it back as it was, so the same seed gives the same weights, and the caller's draws are unmoved."""
    small = {k: v[:500] for k, v in split.items()}
    data = names_data('context', 3, small)
    build = lambda g: NamesMLP(3, 5, 32, 0.5, generator=g)  # noqa: E731  (dropout 0.5: the masks matter)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runs = [train_torch('mlp', 0, steps=20, batch_size=16, data=data, build=build, final=False, points=0)['model']
            for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_torch('mlp', 1, steps=20, batch_size=16, data=data, build=build, final=False, points=0)['model']
    c = other.state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: another start and other masks


def _names_models():
    g = torch.Generator().manual_seed(0)
    return [(OneHotBigram(generator=g), torch.randint(0, 27, (5, 1), generator=g), (5, 27)),
            (NamesMLP(context=3, embed=4, hidden=8, dropout=0.0, generator=g),
             torch.randint(0, 27, (5, 3), generator=g), (5, 27)),
            (NamesTransformer(9, 8, 2, 1, 16, dropout=0.0, generator=g), torch.randint(0, 27, (2, 4), generator=g),
             (2, 4, 27))]


@pytest.mark.parametrize('i', range(3))
def test_names_models_refuse_a_module_that_ran_on_its_own_since_their_forward(i):
    "Its saved state is that call's: the model's backward would give a gradient mixing two inputs."
    model, x, out_shape = _names_models()[i]
    model(x)
    child = model.modules()[1]  # the token embedding (the bigram's: its Linear, on one-hot rows)
    child(torch.zeros(5, 27) if isinstance(model, OneHotBigram) else torch.zeros(x.shape, dtype=torch.long))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=f'{type(model).__name__}.backward: its module .* ran forward on its own'):
        model.backward(torch.ones(out_shape))
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize('i', [1, 2])  # (the bigram keeps the one-hot rows, not the indices)
def test_names_models_refuse_an_edited_input_before_any_gradient_is_added(i):
    "The embedding, which backpropagates last, sees the edit: every module is checked before the first accumulates."
    model, x, out_shape = _names_models()[i]
    model(x)
    x[0, 0] = (x[0, 0] + 1) % 27
    before = snapshot(model)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'):
        model.backward(torch.ones(out_shape))
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize('i', range(3))
def test_names_models_say_which_input_shape_they_take(i):
    model, x, _ = _names_models()[i]
    with pytest.raises(ValueError, match=f'{type(model).__name__} expects character indices of shape .*, got \\(7\\)'):
        model(torch.zeros(7, dtype=torch.long))
    with pytest.raises(TypeError, match='expects a tensor of character indices .*, got list'):
        model([[1, 2]])
