"""The digits experiment: its command line, alone and under torchrun."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minidl.experiments.digits_cli import OUT_FILES, digits_main
from minidl.experiments.digits_cli import digits_main as main

pytest.importorskip('sklearn')


ROOT = Path(__file__).resolve().parents[2]
TINY = ['--epochs', '1', '--quiet']


def _check(out: Path, models, runs):
    res = json.loads((out/'results.json').read_text())
    assert set(res) == {'settings', *models}
    assert res['settings']['runs'] == runs and res['settings']['threads'] == 1
    for name in models:
        r = res[name]
        assert len(r['test_accuracy']) == len(r['train_accuracy']) == len(r['seeds']) == len(r['seconds']) == runs
        assert all(isinstance(a, float) and 0 <= a <= 1 for a in r['test_accuracy'] + r['train_accuracy'])
        assert 0 <= r['test_accuracy_mean'] <= 1 and r['test_accuracy_std'] >= 0
        s = r['settings']
        assert s['epochs'] == 1 and s['batch_size'] == 64 and s['label_smoothing'] == 0.1 and s['parameters'] > 0
        assert s['lr'] == {'mlp': 0.01, 'cnn': 0.02}[name]
    for png in out.glob('*.png'): assert png.read_bytes()[:4] == b'\x89PNG'
    return res


def test_both_models_table_json_figures_and_save(tmp_path, capsys):
    out, save = tmp_path/'res', tmp_path/'ck'/'models.pt'
    assert main(TINY + ['--out', str(out), '--save', str(save), '--seed', '4']) == 0
    res = _check(out, ['mlp', 'cnn'], runs=1)
    assert res['mlp']['seeds'] == [4] and res['settings']['seeds'] == [4]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUT_FILES)
    captured = capsys.readouterr()
    assert 'MLP' in captured.out and 'CNN' in captured.out and 'test acc. %' in captured.out
    assert captured.err == ''  # --quiet: no progress bars
    import torch
    states = torch.load(save, weights_only=True)
    assert set(states) == {'mlp', 'cnn'} and states['cnn']['1.weight'].shape == (32, 1, 3, 3)


def test_one_model_several_runs(tmp_path, capsys):
    out = tmp_path/'mlp'
    assert main(TINY + ['--model', 'mlp', '--runs', '2', '--out', str(out)]) == 0
    res = _check(out, ['mlp'], runs=2)
    assert res['mlp']['seeds'] == [0, 1]
    assert '±' in capsys.readouterr().out
    assert not (out/'filters.png').exists()  # the CNN's filters only with the CNN


def test_a_figure_this_run_does_not_make_is_removed_and_said(tmp_path, capsys):
    "An earlier run's filters.png is not left beside a results.json that lists only the MLP"
    out = tmp_path/'d1'
    out.mkdir(); (out/'filters.png').write_bytes(b'an earlier run with the CNN')
    assert main(['--epochs', '1', '--model', 'mlp', '--out', str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f for f in OUT_FILES if f != 'filters.png')
    assert f"removed {out/'filters.png'}" in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['--model', 'rnn'], "argument --model: invalid choice: 'rnn'"),
    (['--runs', '0'], "argument --runs: expected a positive integer, got '0'"),
    (['--epochs', 'ten'], "argument --epochs: expected a positive integer, got 'ten'"),
    (['--seed', '-3'], "argument --seed: expected an integer >= 0, got '-3'"),
    (['--threads', '0'], "argument --threads: expected a positive integer"),
    (['--device', 'tpu'], "argument --device: invalid choice: 'tpu'"),
    (['--out', ''], "argument --out: expected a path, got an empty string"),
    (['--frobnicate'], "unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('minidl-digits: error: ') and message in err, err


def test_bad_destinations_create_nothing(tmp_path, capsys):
    f = tmp_path/'file'; f.write_text('x')
    for argv in (['--out', str(f)], ['--out', str(f/'sub')], ['--out', str(tmp_path/'new'), '--save', str(tmp_path)]):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code == 2 and capsys.readouterr().err.count('\n') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


def test_cuda_missing_is_one_line_through_python_m():
    import torch
    if torch.cuda.is_available(): pytest.skip('a GPU is visible')
    proc = subprocess.run([sys.executable, '-m', 'minidl.experiments.digits_cli', '--device', 'cuda'],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'CUDA is not available' in proc.stderr


def test_python_m_minidl_digits():
    "`python -m minidl digits ...` runs minidl-digits with the other arguments"
    r = subprocess.run(
        [sys.executable, '-m', 'minidl', 'digits', '--help'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.startswith('usage: minidl-digits') and '--model' in r.stdout
    r = subprocess.run(
        [sys.executable, '-m', 'minidl', 'digits', '--model', 'rnn'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert (
        r.returncode == 2
        and r.stderr.count('\n') == 1
        and r.stderr.startswith('minidl-digits: error: argument --model')
    ), r.stderr


# seconds for one torchrun job (imports, 2 epochs of the MLP, figures); the collectives time out after 120 s
TIMEOUT = 90
ARGS = ['--model', 'mlp', '--epochs', '2', '--seed', '3', '--quiet']
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK')


def _env():
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    if Path('/sys/class/net/lo').exists(): env.setdefault('GLOO_SOCKET_IFNAME', 'lo')  # stay on 127.0.0.1
    return env


def _torchrun(nproc, out):
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc-per-node',
        str(nproc),
        '-m',
        'minidl.experiments.digits_cli',
        '--distributed',
        *ARGS,
        '--out',
        str(out),
        '--save',
        str(out / 'models.pt'),
    ]
    t0 = time.monotonic()
    try: proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired: pytest.fail(f"torchrun with {nproc} process(es) did not end within "
                                                  f"{TIMEOUT} s (a hang)")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, time.monotonic() - t0


@pytest.fixture(scope='module')
def jobs(tmp_path_factory):
    base = tmp_path_factory.mktemp('ddp')
    return {n: (base/f'w{n}', *_torchrun(n, base/f'w{n}')) for n in (1, 2)}


@pytest.mark.parametrize('world', [1, 2])
def test_rank_0_alone_prints_and_writes(jobs, world):
    out, proc, _ = jobs[world]
    assert proc.stdout.count('MLP 64-512-10') == 1 and proc.stdout.count('test acc. %') == 1  # one table, from rank 0
    assert 'Traceback' not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        'confusion.png',
        'curves.png',
        'misclassified.png',
        'models.pt',
        'results.json',
    ]
    res = json.loads((out/'results.json').read_text())
    assert res['settings']['distributed'] == dict(world_size=world, backend='gloo')
    assert res['settings']['threads'] == 1 and res['mlp']['settings']['batch_size'] == 64  # the global batch
    assert res['mlp']['seeds'] == [3] and 0 <= res['mlp']['test_accuracy'][0] <= 1


def test_one_process_equals_data_parallel_run_here(jobs):
    "torchrun --nproc-per-node 1 ... --distributed is run_digits(data_parallel=True) in a plain process, bit for bit."
    from minidl.experiments.common import torch_threads
    from minidl.experiments.digits import run_digits
    with torch_threads(1): here = run_digits('mlp', 3, epochs=2, data_parallel=True)
    out = jobs[1][0]
    there = torch.load(out/'models.pt', weights_only=True)['mlp']
    mine = here.model.state_dict()
    assert set(there) == set(mine) and all(torch.equal(there[k], mine[k]) for k in mine)
    res = json.loads((out/'results.json').read_text())['mlp']
    assert res['test_accuracy'] == [here.test_accuracy] and res['train_accuracy'] == [here.train_accuracy]


def test_two_processes_close_to_one(jobs):
    "Not equal (per-replica BatchNorm statistics, per-rank shifts and masks): a comparable run, the same schedule."
    one, two = (json.loads((jobs[w][0]/'results.json').read_text())['mlp'] for w in (1, 2))
    assert abs(one['test_accuracy'][0] - two['test_accuracy'][0]) < 0.1, (one['test_accuracy'], two['test_accuracy'])
    a, b = (torch.load(jobs[w][0]/'models.pt', weights_only=True)['mlp'] for w in (1, 2))
    assert not torch.equal(a['1.weight'], b['1.weight'])


def test_distributed_without_torchrun_is_one_line(monkeypatch, tmp_path, capsys):
    for k in TORCHRUN_ENV: monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as e: digits_main(['--distributed', '--out', str(tmp_path/'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    assert "--distributed needs torchrun's environment" in err and 'torchrun --standalone --nproc-per-node 2' in err
    assert not (tmp_path/'x').exists()


def test_torchrun_without_distributed_is_refused(monkeypatch, tmp_path, capsys):
    "Under torchrun with 2 processes but no --distributed, each would train alone and write the same files."
    for k, v in dict(RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='29999').items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e: digits_main(['--out', str(tmp_path/'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'WORLD_SIZE=2 but without --distributed' in err, err
    # one process under torchrun: an ordinary run is fine, but too many seeds is not
    monkeypatch.setenv('WORLD_SIZE', '1')
    with pytest.raises(SystemExit) as e:
        digits_main(['--distributed', '--seed', str(2**31), '--out', str(tmp_path / 'x')])
    assert e.value.code == 2 and 'seeds < 2**31' in capsys.readouterr().err


def test_partial_environment(monkeypatch, tmp_path, capsys):
    "A stray RANK alone: an error with --distributed (naming what is missing), ignored without it."
    import torch

    from minidl.experiments.common import start_distributed
    from minidl.experiments.digits_cli import make_digits_parser
    for k in TORCHRUN_ENV: monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(SystemExit) as e: digits_main(['--distributed', '--out', str(tmp_path/'x')])
    err = capsys.readouterr().err
    assert (
        e.value.code == 2
        and err.count('\n') == 1
        and 'sets RANK but not WORLD_SIZE, MASTER_ADDR, MASTER_PORT' in err
    ), err
    assert start_distributed(make_digits_parser().parse_args([]), torch.device('cpu'), 'digits') == (None, None)
