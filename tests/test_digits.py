"""The `minidl-digits` command end to end (tiny runs: the numbers mean nothing, the files and errors are checked); the
digits benchmark's smoke run is in test_bench_suites.py."""
import json, subprocess, sys
from pathlib import Path

import pytest

pytest.importorskip('sklearn')
from minidl.experiments.digits_cli import digits_main as main, OUT_FILES

ROOT = Path(__file__).resolve().parent.parent
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
    r = subprocess.run([sys.executable, '-m', 'minidl', 'digits', '--help'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith('usage: minidl-digits') and '--model' in r.stdout
    r = subprocess.run([sys.executable, '-m', 'minidl', 'digits', '--model', 'rnn'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and r.stderr.startswith('minidl-digits: error: argument --model'), r.stderr
