"""End-to-end tests of the `minidl-circle` command: through `main(argv)` and as a subprocess (console script and
`python -m minidl`), with tiny epoch counts so the whole file runs in seconds."""
import json, shutil, subprocess, sys
from pathlib import Path

import pytest

from minidl.circle import MODELS
from minidl.cli import main

TINY = ['--epochs', '3', '--quiet']


def _check_results(out: Path, runs: int, epochs: int):
    assert sorted(p.name for p in out.iterdir()) == ['curves.png', 'outputs.png', 'results.json']
    for png in ('curves.png', 'outputs.png'): assert (out/png).read_bytes()[:4] == b'\x89PNG'
    res = json.loads((out/'results.json').read_text())
    assert set(res) == {'settings', 'sigmoid_bce', 'tanh_mse'}
    for name in ('sigmoid_bce', 'tanh_mse'):
        r = res[name]
        assert len(r['train_accuracy']) == len(r['test_accuracy']) == runs
        assert all(isinstance(a, float) and 0 <= a <= 1 for a in r['train_accuracy'] + r['test_accuracy'])
        assert r['settings']['epochs'] == epochs and r['settings']['runs'] == runs
        assert {'lr', 'decay', 'batch_size', 'hidden', 'targets', 'threshold'} <= set(r['settings'])
    return res


def test_main_writes_table_json_and_figures(tmp_path, capsys):
    out = tmp_path/'res'
    assert main(TINY + ['--runs', '2', '--seed', '5', '--out', str(out)]) == 0
    res = _check_results(out, runs=2, epochs=3)
    assert res['sigmoid_bce']['seeds'] == [5, 6] and res['settings']['seeds'] == [5, 6]
    captured = capsys.readouterr()
    table = captured.out
    assert 'Sigmoid + BCE' in table and 'Tanh + MSE' in table and '±' in table  # mean ± std over 2 runs
    assert captured.err == ''  # --quiet: no progress bar


def test_lr_decay_per_model_and_defaults(tmp_path):
    out = tmp_path/'a'
    assert main(TINY + ['--lr', '0.2', '0.01', '--decay', '0', '--batch-size', '100', '--hidden', '8', '--out', str(out)]) == 0
    res = json.loads((out/'results.json').read_text())
    assert res['sigmoid_bce']['settings']['lr'] == 0.2 and res['tanh_mse']['settings']['lr'] == 0.01
    assert res['sigmoid_bce']['settings']['decay'] == res['tanh_mse']['settings']['decay'] == 0.0
    assert res['settings']['batch_size'] == 100 and res['settings']['layers'] == [2, 8, 8, 8, 8, 1]
    out = tmp_path/'b'
    assert main(TINY + ['--out', str(out)]) == 0
    res = json.loads((out/'results.json').read_text())
    for name, spec in MODELS.items():
        assert (res[name]['settings']['lr'], res[name]['settings']['decay']) == (spec.lr, spec.decay)


def test_same_seed_same_results(tmp_path):
    for d in 'ab': assert main(TINY + ['--epochs', '20', '--batch-size', '50', '--out', str(tmp_path/d)]) == 0
    a, b = (json.loads((tmp_path/d/'results.json').read_text()) for d in 'ab')
    for name in MODELS: assert a[name]['test_accuracy'] == b[name]['test_accuracy']


BAD = [
    (['--epochs', '-1'], "argument --epochs: expected a positive integer, got '-1'"),
    (['--epochs', 'ten'], "argument --epochs: expected a positive integer, got 'ten'"),
    (['--runs', '0'], "argument --runs: expected a positive integer, got '0'"),
    (['--seed', '-3'], "argument --seed: expected an integer >= 0, got '-3'"),
    (['--lr', '-0.1'], "argument --lr: expected a finite number > 0, got '-0.1'"),
    (['--lr', 'nan'], "argument --lr: expected a finite number > 0, got 'nan'"),
    (['--lr', '0.1', '0.2', '0.3'], "--lr takes one value or 2"),
    (['--decay', '-1'], "argument --decay: expected a finite number >= 0, got '-1'"),
    (['--batch-size', '0'], "argument --batch-size: expected a positive integer or 'full', got '0'"),
    (['--hidden', '0'], "argument --hidden: expected a positive integer, got '0'"),
    (['--bogus'], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize('argv,msg', BAD)
def test_bad_arguments_main(argv, msg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(argv + ['--out', str(tmp_path/'never')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('minidl-circle: error: ') and msg in err and err.count('\n') == 1, err
    assert not (tmp_path/'never').exists()  # refused before anything is written


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path/'file.txt'; blocker.write_text('not a folder')
    with pytest.raises(SystemExit) as e: main(TINY + ['--out', str(blocker/'res')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'cannot write to --out' in err and err.count('\n') == 1 and 'Traceback' not in err


def _cmds():
    cmds = [[sys.executable, '-m', 'minidl']]
    exe = shutil.which('minidl-circle', path=str(Path(sys.executable).parent))
    if exe: cmds.append([exe])
    return cmds


@pytest.mark.parametrize('cmd', _cmds(), ids=lambda c: Path(c[-1]).name)
def test_subprocess_end_to_end(cmd, tmp_path):
    out = tmp_path/'res'
    r = subprocess.run(cmd + ['--epochs', '5', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'Sigmoid + BCE' in r.stdout and 'Tanh + MSE' in r.stdout and 'test acc' in r.stdout
    assert 'sigmoid_bce  seed   0' in r.stdout  # one line per finished run
    assert 'epoch' in r.stderr  # the tqdm progress bar goes to stderr
    _check_results(out, runs=1, epochs=5)


@pytest.mark.parametrize('cmd', _cmds(), ids=lambda c: Path(c[-1]).name)
@pytest.mark.parametrize('argv,msg', [BAD[0]])
def test_subprocess_bad_arguments(cmd, argv, msg, tmp_path):
    r = subprocess.run(cmd + argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == '' and msg in r.stderr and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr


def test_help():
    r = subprocess.run([sys.executable, '-m', 'minidl', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for opt in ('--epochs', '--runs', '--seed', '--lr', '--decay', '--batch-size', '--hidden', '--out', '--quiet'):
        assert opt in r.stdout
