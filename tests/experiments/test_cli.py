"""The command lines (`minidl-circle`, `python -m minidl circle|digits`): results, bad arguments, destinations,
interrupts, devices."""
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minidl
import minidl.experiments.circle
import minidl.experiments.circle_cli
import minidl.files
from minidl import Sigmoid, Tanh
from minidl.experiments.circle import MODELS, circle_mlp, run_circle
from minidl.experiments.circle_cli import main
from minidl.experiments.common import torch_threads

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
    assert (
        main(
            TINY
            + [
                '--lr',
                '0.2',
                '0.01',
                '--decay',
                '0',
                '--batch-size',
                '100',
                '--hidden',
                '8',
                '--out',
                str(out),
            ]
        )
        == 0
    )
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
    (['--seed', str(2**64)], "argument --seed: expected a seed below 2**64 (torch's limit)"),
    (['--seed', str(2**64 - 2), '--runs', '3'], "goes past torch's largest seed"),
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


def _installed_script_is_current(name: str) -> bool:
    ("Whether the installed console script `name` points where this checkout's pyproject.toml says (an "
     "install made before a move does not)")
    from importlib.metadata import entry_points

    import tomllib
    want = tomllib.loads((Path(__file__).parents[2]/'pyproject.toml').read_text())['project']['scripts'][name]
    return any(ep.value == want for ep in entry_points(group='console_scripts', name=name))


def _cmds():
    cmds = [[sys.executable, '-m', 'minidl'], [sys.executable, '-m', 'minidl', 'circle']]
    exe = shutil.which('minidl-circle', path=str(Path(sys.executable).parent))
    if exe and _installed_script_is_current('minidl-circle'): cmds.append([exe])
    return cmds


@pytest.mark.parametrize('cmd', _cmds(), ids=lambda c: ' '.join([Path(c[0]).name] + c[1:]))
def test_subprocess_end_to_end(cmd, tmp_path):
    out = tmp_path/'res'
    r = subprocess.run(cmd + ['--epochs', '5', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'Sigmoid + BCE' in r.stdout and 'Tanh + MSE' in r.stdout and 'test acc' in r.stdout
    assert 'sigmoid_bce  seed   0' in r.stdout  # one line per finished run
    assert 'epoch' in r.stderr  # the tqdm progress bar goes to stderr
    _check_results(out, runs=1, epochs=5)


@pytest.mark.parametrize('cmd', _cmds(), ids=lambda c: ' '.join([Path(c[0]).name] + c[1:]))
@pytest.mark.parametrize('argv,msg', [BAD[0]])
def test_subprocess_bad_arguments(cmd, argv, msg, tmp_path):
    r = subprocess.run(cmd + argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == '' and msg in r.stderr and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr


@pytest.mark.parametrize('sub', [[], ['circle']])
def test_help(sub):
    r = subprocess.run([sys.executable, '-m', 'minidl', *sub, '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith('usage: minidl-circle')
    for opt in (
        '--epochs',
        '--runs',
        '--seed',
        '--lr',
        '--decay',
        '--batch-size',
        '--hidden',
        '--out',
        '--quiet',
        '--device',
        '--save',
    ):
        assert opt in r.stdout


def test_python_m_minidl_dispatch(monkeypatch):
    ("`python -m minidl [circle|digits] args`: the first argument picks the command, which gets the rest; "
     "none means the circle")
    import minidl.__main__ as M
    import minidl.experiments.digits_cli as D
    calls = []
    monkeypatch.setattr(minidl.experiments.circle_cli, 'main', lambda argv: calls.append(('circle', argv)) or 0)
    monkeypatch.setattr(D, 'digits_main', lambda argv: calls.append(('digits', argv)) or 3)
    assert (
        M.main(['--runs', '2']) == 0
        and M.main(['circle', '--quiet']) == 0
        and M.main(['digits', '--runs', '1']) == 3
    )
    assert M.main([]) == 0
    assert calls == [('circle', ['--runs', '2']), ('circle', ['--quiet']), ('digits', ['--runs', '1']), ('circle', [])]


def _fail(argv, capsys):
    "Run main(argv), expecting a one-line error: returns (exit status, stderr)"
    try: code = main(argv)
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    return code, err


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize('make,argv_out,msg', [
    (lambda d: (d/'res'/'results.json').mkdir(parents=True), 'res', "results.json' is a folder"),
    (lambda d: (d/'res'/'curves.png').mkdir(parents=True), 'res', "curves.png' is a folder"),
    (lambda d: (d/'res').write_text('a file'), 'res', "is a file, not a folder"),
    (lambda d: None, '', 'argument --out: expected a path, got an empty string'),
    (lambda d: None, '  ', 'argument --out: expected a path, got an empty string'),
])
def test_bad_out_refused_before_training(make, argv_out, msg, tmp_path, capsys, monkeypatch):
    make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        minidl.experiments.circle_cli,
        'run_circle',
        lambda *a, **k: pytest.fail('trained despite a bad destination'),
    )
    code, err = _fail(TINY + ['--out', argv_out if not argv_out.strip() else str(tmp_path/argv_out)], capsys)
    assert code == 2 and msg in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before  # nothing created or touched


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write anywhere')
def test_read_only_out_refused(tmp_path, capsys):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try:
        code, err = _fail(TINY + ['--out', str(ro/'res')], capsys)
        assert code == 2 and 'permission denied' in err
    finally: ro.chmod(0o700)


def test_bad_save_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        minidl.experiments.circle_cli,
        'run_circle',
        lambda *a, **k: pytest.fail('trained despite a bad destination'),
    )
    (tmp_path/'dir.pt').mkdir(); (tmp_path/'file').write_text('x')
    for save, msg in [(tmp_path/'dir.pt', 'it is a folder'), (tmp_path/'file'/'m.pt', "is a file, not a folder")]:
        code, err = _fail(TINY + ['--out', str(tmp_path/'res'), '--save', str(save)], capsys)
        assert code == 2 and 'cannot write to --save' in err and msg in err, err
    code, err = _fail(TINY + ['--save', ''], capsys)
    assert code == 2 and 'argument --save: expected a path' in err
    # two outputs on one path: the checkpoint over results.json, or the checkpoint as the --out folder
    clashes = [(tmp_path/'res'/'results.json', "it is --out's file"), (tmp_path/'res', 'it is the --out folder')]
    for save, msg in clashes:
        code, err = _fail(TINY + ['--out', str(tmp_path/'res'), '--save', str(save)], capsys)
        assert code == 2 and msg in err, err
    if Path('/dev/null').exists():  # a device is never replaced by a file
        code, err = _fail(TINY + ['--out', str(tmp_path/'res'), '--save', '/dev/null'], capsys)
        assert code == 2 and 'not a regular file' in err, err
    assert not (tmp_path/'res').exists()


def test_save_state_dicts_loadable(tmp_path):
    out = tmp_path/'res'
    assert main(TINY + ['--out', str(out), '--save', str(tmp_path/'sub'/'models.pt')]) == 0  # the folder is created
    states = torch.load(tmp_path/'sub'/'models.pt', weights_only=True)
    assert sorted(states) == ['sigmoid_bce', 'tanh_mse']
    for name, out_cls in [('sigmoid_bce', Sigmoid), ('tanh_mse', Tanh)]:
        net = circle_mlp(out_cls())
        net.load_state_dict(states[name])
        assert all(v.device.type == 'cpu' for v in states[name].values())
    # the saved weights are the trained ones: retraining the same seed on the command's one thread (--threads 1, the
    # default; the command puts the caller's setting back) gives the same tensors
    with torch_threads(1): r = run_circle('tanh_mse', 0, epochs=3)
    for k, v in r.model.state_dict().items(): assert torch.equal(states['tanh_mse'][k], v), k
    assert main(TINY + ['--runs', '2', '--out', str(out), '--save', str(out/'models.pt')]) == 0
    states = torch.load(out/'models.pt', weights_only=True)
    assert sorted(states) == ['sigmoid_bce_seed0', 'sigmoid_bce_seed1', 'tanh_mse_seed0', 'tanh_mse_seed1']


def test_diverged_run_keeps_previous_results(tmp_path, capsys):
    out = tmp_path/'res'
    assert main(TINY + ['--out', str(out), '--save', str(out/'m.pt')]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    code, err = _fail(TINY + ['--lr', '1e30', '--out', str(out), '--save', str(out/'m.pt')], capsys)
    assert code == 1 and 'training diverged: lower the learning rate' in err and 'learning rate 1e+30' in err, err
    assert err.startswith('minidl-circle: error: sigmoid_bce seed 0: ')
    assert _snapshot(out) == before


def test_failed_write_leaves_previous_results_and_no_partial_file(tmp_path, capsys, monkeypatch):
    out = tmp_path/'res'
    assert main(TINY + ['--out', str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    calls = []
    def full_disk(src, dst):
        calls.append(dst)
        if len(calls) == 2: raise OSError(errno.ENOSPC, 'No space left on device')  # the second file fails
        return real_replace(src, dst)
    real_replace = os.replace
    monkeypatch.setattr(minidl.files.os, 'replace', full_disk)
    code, err = _fail(TINY + ['--seed', '1', '--out', str(out)], capsys)
    assert code == 2 and 'No space left on device' in err and 'nothing was written' in err, err
    assert _snapshot(out) == before  # all or none: the previous set, whole; no temporary file left behind
    monkeypatch.undo()
    assert main(TINY + ['--seed', '1', '--out', str(out)]) == 0


def test_device_auto_and_cuda(tmp_path, capsys):
    out = tmp_path/'res'
    assert main(TINY + ['--device', 'auto', '--out', str(out)]) == 0
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert json.loads((out/'results.json').read_text())['settings']['device'].startswith(expected)
    if not torch.cuda.is_available():
        capsys.readouterr()
        code, err = _fail(TINY + ['--device', 'cuda', '--out', str(tmp_path/'never')], capsys)
        assert code == 2 and '--device cuda: CUDA is not available' in err
        assert not (tmp_path/'never').exists()


def test_device_is_passed_to_every_run(tmp_path, monkeypatch):
    "`--device` reaches every run (checked with a stand-in device: the runs themselves train on the CPU here)"
    seen = []
    def spy(name, seed, device, **kw):
        seen.append((name, seed, device))
        return real_run(name, seed, device='cpu', **kw)
    real_run = minidl.experiments.circle_cli.run_circle
    monkeypatch.setattr(minidl.experiments.circle_cli, 'resolve_device', lambda name: torch.device('meta'))
    monkeypatch.setattr(minidl.experiments.circle_cli, 'run_circle', spy)
    assert main(TINY + ['--runs', '2', '--device', 'cuda', '--out', str(tmp_path/'res')]) == 0
    assert seen == [(n, s, torch.device('meta')) for s in (0, 1) for n in MODELS]


class _Stop(Exception): pass


@pytest.mark.parametrize('name', list(MODELS))
def test_run_circle_puts_data_and_model_on_the_device(name, monkeypatch):
    seen = {}
    def fake_train(model, loss_fn, opt, x_train, y_train, x_test, y_test, **kw):
        seen['params'] = {p.value.device.type for p in model.parameters()}
        seen['data'] = {t.device.type for t in (x_train, y_train, x_test, y_test)}
        raise _Stop
    monkeypatch.setattr(minidl.experiments.circle, 'train', fake_train)
    with pytest.raises(_Stop): run_circle(name, 0, epochs=1, device='meta')
    assert seen == {'params': {'meta'}, 'data': {'meta'}}


def _cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(Path(minidl.__file__).parent.parent))
    return subprocess.run([sys.executable, '-m', 'minidl', '--quiet', *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


CLI_BAD = [
    (['--epochs', '0'], '--epochs'),
    (['--epochs', '1e3'], '--epochs'),
    (['--seed', '-1'], '--seed'),
    (['--seed', str(2**64)], '--seed'),
    (['--lr', 'nan'], '--lr'),
    (['--lr', '1', '2', '3'], '--lr'),
    (['--decay', 'inf'], '--decay'),
    (['--batch-size', '0'], '--batch-size'),
    (['--out', ''], '--out'),
    (['--out', 'afile'], '--out'),
    (['--out', 'afile/sub'], '--out'),
    (['--out', 'withdir'], 'results.json'),
    (['--save', 'withdir'], '--save'),
    (['--device', 'tpu'], '--device'),
    (['--threads', '0'], '--threads'),
    (['--seed', str(2**64 - 1), '--runs', '2'], '--seed'),
    (['--bogus'], '--bogus'),
    (['--hidden', str(10**20)], '--hidden'),
    (['--threads', str(10**20)], '--threads'),
    (['--runs', str(10**20)], '--runs'),
]


def _layout(tmp_path):
    (tmp_path/'afile').write_text('')
    (tmp_path/'withdir'/'results.json').mkdir(parents=True)
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*'))


def _one_line_exit_2(rc, stderr, contains):
    assert rc == 2, stderr[-500:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('minidl-circle: error:') and contains in lines[0], stderr[-500:]


@pytest.mark.parametrize('args, contains', CLI_BAD)
def test_cli_bad_arguments_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, args, contains):
    "In process (fast): main(argv) exits with status 2 and one line on stderr, and writes nothing."
    from minidl.experiments.circle_cli import main
    before = _layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info: main(['--quiet', '--epochs', '1', *args])
    _one_line_exit_2(info.value.code, capsys.readouterr().err, contains)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*')) == before


@pytest.mark.parametrize('args, contains', [(['--epochs', '0'], '--epochs'), (['--out', 'withdir'], 'results.json'),
                                            CLI_BAD[-3]])
def test_cli_subprocess_bad_arguments(tmp_path, args, contains):
    "As a user runs it: `python -m minidl ...` in a subprocess."
    before = _layout(tmp_path)
    r = _cli(tmp_path, '--epochs', '1', *args)
    _one_line_exit_2(r.returncode, r.stderr, contains)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*')) == before


CIRCLE = [sys.executable, '-m', 'minidl', 'circle']
DIGITS = [sys.executable, '-m', 'minidl', 'digits']


BAD_ARGS = [
    (CIRCLE, ['--lr', '1e200'], "argument --lr: expected a finite number > 0 that torch.float32 parameters can hold"),
    (CIRCLE, ['--lr', '1e-60'], "which is 0 in torch.float32"),
    (CIRCLE, ['--decay', '1e300'], "argument --decay: expected a finite number >= 0 that torch.float32 "
                                   "parameters can hold"),
    (CIRCLE, ['--epochs', str(10**30)], "argument --epochs: expected a positive integer at most 1000000"),
    (CIRCLE, ['--batch-size', str(10**30)], "argument --batch-size: expected a positive integer at most "
                                            "16777216 or 'full'"),
    (CIRCLE, ['--runs', '1' * 5000], "argument --runs: expected a positive integer"),
    (DIGITS, ['--seed', str(2**32)], "argument --seed: expected a seed below 2**32 (scikit-learn's limit)"),
    (DIGITS, ['--seed', str(2**32 - 1), '--runs', '2'], "goes past scikit-learn's largest seed, 2**32 - 1"),
    (DIGITS, ['--runs', str(10**30)], "argument --runs: expected a positive integer at most 10000"),
    (DIGITS, ['--epochs', str(10**30)], "argument --epochs: expected a positive integer at most 1000000"),
    (DIGITS, ['--threads', str(10**6)], "argument --threads: expected a positive integer at most 1024"),
]


@pytest.mark.parametrize('cmd,argv,msg', BAD_ARGS, ids=lambda v: ' '.join(v) if isinstance(v, list) else None)
def test_numeric_arguments_checked_up_front(cmd, argv, msg, tmp_path):
    r = subprocess.run(cmd + argv + ['--out', str(tmp_path / 'never')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path / 'never').exists()


def test_the_same_rules_in_every_command():
    "The shared types: one parser type per kind of number, the same bounds in both commands"
    from minidl.experiments.circle_cli import make_parser
    from minidl.experiments.common import EPOCHS_MAX, RUNS_MAX
    from minidl.experiments.digits_cli import make_digits_parser
    for p in (make_parser(), make_digits_parser()):
        assert p.parse_args(['--runs', str(RUNS_MAX), '--epochs', str(EPOCHS_MAX)]).runs == RUNS_MAX
        for opt, v in (('--runs', RUNS_MAX + 1), ('--epochs', EPOCHS_MAX + 1), ('--seed', -1)):
            with pytest.raises(SystemExit): p.parse_args([opt, str(v)])
    assert make_parser().parse_args(['--seed', str(2**64 - 1)]).seed == 2**64 - 1  # torch's whole range for the circle
    assert make_parser().parse_args(['--lr', '1e30']).lr == [1e30]                 # large, but a float32 holds it


def _interrupt(cmd, argv, tmp_path, wait_for: str, delay: float = 1.0, sig=signal.SIGINT):
    ("Start a real run, send `sig` (SIGINT) `delay` s after `wait_for` appeared on stdout, return (code, stdout, "
     "stderr); never hangs.")
    p = subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, bufsize=1)
    try:
        deadline, seen = time.monotonic() + 120, ''
        while wait_for not in seen:
            left = deadline - time.monotonic()
            assert left > 0 and p.poll() is None, (
                f'the run did not start: {seen!r} {p.stderr.read() if p.poll() is not None else ""}'
            )
            if select.select([p.stdout], [], [], min(left, 1.0))[0]: seen += p.stdout.readline()
        time.sleep(delay)  # training has begun
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    return p.returncode, seen + out, err


@pytest.mark.parametrize('cmd', [CIRCLE, DIGITS], ids=['circle', 'digits'])
def test_ctrl_c_during_training_one_line_exit_130_outputs_intact(cmd, tmp_path):
    if cmd is DIGITS: pytest.importorskip('sklearn')
    out = tmp_path / 'res'; out.mkdir()
    (out / 'results.json').write_text('{"previous": true}\n')
    code, _, err = _interrupt(cmd, ['--epochs', '100000', '--out', str(out)], tmp_path,
                              wait_for='circle task:' if cmd is CIRCLE else 'digits:')
    assert code == 130, err
    last = err.replace('\r', '\n').rstrip('\n').split('\n')[-1]  # after the progress bar (stderr)
    assert last == f"minidl-{'circle' if cmd is CIRCLE else 'digits'}: interrupted; nothing written", err
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err
    assert (out / 'results.json').read_text() == '{"previous": true}\n'           # the previous outputs, intact
    assert sorted(p.name for p in out.iterdir()) == ['results.json']               # no temporary file left


def test_closed_output_pipe_stops_with_one_line(tmp_path):
    "`minidl-circle | head -1`: the reader goes away; the command stops with one line on stderr, exit 1, no traceback"
    p = subprocess.Popen(CIRCLE + ['--epochs', '200', '--out', str(tmp_path / 'res')], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = p.stdout.readline()  # the first line arrived: the reader now stops reading
        p.stdout.close()
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert first, err
    assert p.returncode == 1, err
    last = err.replace('\r', '\n').rstrip('\n').split('\n')[-1]
    assert last == 'minidl-circle: stopped: its output was closed (a pipe whose reader ended); nothing written', err
    assert 'Traceback' not in err and 'BrokenPipeError' not in err, err
    assert not (tmp_path / 'res').exists()


def test_ctrl_c_while_writing_says_what_was_kept(tmp_path, capsys, monkeypatch):
    ("Interrupted between two files: exit 130, one line naming the file already replaced (whole), the others "
     "as they were")
    import minidl.experiments.circle_cli as C
    out = tmp_path / 'res'; out.mkdir()
    for f in C.OUT_FILES: (out / f).write_bytes(b'old')
    monkeypatch.setattr(C, '_render_figures', lambda runs: {'outputs.png': b'new png', 'curves.png': b'new png'})
    real_write = C.write_outputs
    def write_then_interrupt(o, files, save, state, written):
        real_write(o, dict(list(files.items())[:1]), None, None, written)
        raise KeyboardInterrupt
    monkeypatch.setattr(C, 'write_outputs', write_then_interrupt)
    with pytest.raises(SystemExit) as e: C.main(['--epochs', '1', '--quiet', '--out', str(out)])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert (
        err
        == f"minidl-circle: interrupted; wrote {out / 'outputs.png'} before it; the other outputs are as they were\n"
    )
    assert (out / 'outputs.png').read_bytes() == b'new png' and (out / 'results.json').read_bytes() == b'old'


def test_python_m_minidl_help_lists_the_commands():
    r = subprocess.run([sys.executable, '-m', 'minidl', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == ''
    lines = r.stdout.splitlines()
    assert any(l.startswith('  circle  ') for l in lines) and any(l.startswith('  digits  ') for l in lines), r.stdout
    assert 'python -m minidl COMMAND --help' in r.stdout
    for cmd in ('circle', 'digits'):
        r = subprocess.run([sys.executable, '-m', 'minidl', cmd, '--help'], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and f'   or: python -m minidl {cmd} [options]' in r.stdout.splitlines(), r.stdout


def test_sigterm_during_training_one_line_exit_143_outputs_intact(tmp_path):
    "`kill` or `timeout` (SIGTERM) unwinds as Ctrl-C does: one line, exit 143, no temporary file, the old outputs kept"
    out = tmp_path / 'res'; out.mkdir()
    (out / 'results.json').write_text('{"previous": true}\n')
    code, _, err = _interrupt(CIRCLE, ['--epochs', '100000', '--out', str(out)], tmp_path, wait_for='circle task:',
                              sig=signal.SIGTERM)
    assert code == 143, err
    last = err.replace('\r', '\n').rstrip('\n').split('\n')[-1]
    assert last == 'minidl-circle: terminated (SIGTERM); nothing written', err
    assert 'Traceback' not in err
    assert sorted(p.name for p in out.iterdir()) == ['results.json']
    assert (out / 'results.json').read_text() == '{"previous": true}\n'


def test_a_checkpoint_that_cannot_be_written_is_one_line(tmp_path):
    "A full disk under torch.save (a file-size limit here): one line and exit 2, no traceback, no temporary file"
    resource = pytest.importorskip('resource')
    def limit(): resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # results fit, the checkpoint not
    r = subprocess.run(CIRCLE + ['--epochs', '2', '--hidden', '300', '--quiet', '--out', 'o', '--save', 'm.pt'],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, preexec_fn=limit)
    assert r.returncode == 2, r.stderr
    assert "cannot write m.pt: the write failed (File too large)" in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path / 'm.pt').exists() and not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_python_m_minidl_help_into_a_closed_pipe_is_quiet():
    "`python -m minidl --help | head -1`: the reader is gone, the command ends quietly, as the others do"
    p = subprocess.Popen([sys.executable, '-m', 'minidl', '--help'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdout.close()  # before the help is written: its write meets a pipe without a reader, every time
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == 0 and b'Traceback' not in err, err


@pytest.mark.parametrize('cmd', ['circle', 'digits'])
def test_save_ending_with_a_slash_is_a_folder_not_a_file(cmd, tmp_path, capsys):
    "`--save ck/` names a folder: refused before training (pathlib would drop the slash and write a file `ck`)"
    from minidl.__main__ import main as minidl_main
    with pytest.raises(SystemExit) as e:
        minidl_main([cmd, '--epochs', '1', '--out', str(tmp_path / 'o'), '--save', 'ck/'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1
    assert "--save: expected a file path, got 'ck/', which names a folder" in err and 'ck/models.pt' in err
    assert not (tmp_path / 'o').exists() and not Path('ck').exists()


def test_circle_refuses_a_torchrun_launch_on_several_processes(tmp_path, monkeypatch, capsys):
    for k, v in dict(WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500').items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e: main(['--epochs', '1', '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'launched by torchrun with WORLD_SIZE=2, but the circle trains in one process' in err
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('argv, message', [
    (['--n-train', '0'], "argument --n-train: expected a positive integer, got '0'"),
    (['--epochs', '0'], "argument --epochs: expected a positive integer, got '0'"),
    (['--batch-size', '-1'], "argument --batch-size: expected a positive integer, got '-1'"),
    (['--hidden', '0'], "argument --hidden: expected a positive integer, got '0'"),
    (['--lr', 'nan'], "argument --lr: expected a finite number > 0, got 'nan'"),
    (['--timeout', '-1'], "argument --timeout: expected a finite number > 0, got '-1'"),
    (['--seed', '-2'], "argument --seed: expected an integer >= 0, got '-2'"),
    (['--out', '/proc/minidl-demo'], "cannot write to --out '/proc/minidl-demo'"),
    (['--fail-rank', '3'], "argument --fail-rank: there is no rank 3 among 1 process(es)"),
])
def test_distributed_demo_refuses_bad_arguments_before_training(argv, message, capsys, monkeypatch):
    "One line and exit status 2, as the other commands; nothing is trained first."
    from minidl.experiments import distributed_demo as demo
    monkeypatch.setattr(demo, 'train', lambda *a, **k: pytest.fail('trained before refusing the arguments'))
    with pytest.raises(SystemExit) as e: demo.distributed_demo(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err, err


def test_circle_puts_the_number_of_threads_back(tmp_path):
    "The command runs on --threads and leaves the caller's setting as it found it (as the other commands do)."
    from minidl.experiments.circle_cli import main as circle_main
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert circle_main(['--epochs', '1', '--runs', '1', '--threads', '1', '--out', str(tmp_path), '-q']) == 0
        assert torch.get_num_threads() == 2
    finally: torch.set_num_threads(before)


def _full_disk_at(n, monkeypatch):
    "Make the n-th file that atomic_open writes fail as a full disk does"
    import contextlib

    import minidl.experiments.common as common
    real, calls = common.atomic_open, []
    @contextlib.contextmanager
    def failing(path, mode='w'):
        calls.append(path)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, f"cannot write {path}: the write failed (No space left on device)")
        with real(path, mode) as f: yield f
    monkeypatch.setattr(common, 'atomic_open', failing)


@pytest.mark.parametrize('n', [1, 2, 3])
def test_a_full_disk_writes_no_partial_set(n, tmp_path, capsys, monkeypatch):
    "A write that fails, first file or last, --save or not: nothing is put in place, and the one line says so"
    new, old = tmp_path/'new', tmp_path/'old'
    assert main(TINY + ['--out', str(old), '--save', str(old/'m.pt')]) == 0
    capsys.readouterr()
    before = _snapshot(old)
    _full_disk_at(n, monkeypatch)
    code, err = _fail(TINY + ['--out', str(new)], capsys)
    assert code == 2 and '(No space left on device); nothing was written' in err, err
    assert not new.exists()
    _full_disk_at(n, monkeypatch)  # the --save checkpoint is written first: its failure leaves the old set too
    code, err = _fail(TINY + ['--seed', '1', '--out', str(old), '--save', str(old/'m.pt')], capsys)
    assert code == 2 and 'nothing was written' in err and err.startswith('minidl-circle: error: cannot write '), err
    assert _snapshot(old) == before


@pytest.mark.parametrize('cmd', ['circle', 'digits', 'names'])
@pytest.mark.parametrize('option', ['--out', '--save'])
def test_a_path_too_long_is_one_line(cmd, option, tmp_path, capsys, monkeypatch):
    from minidl.__main__ import main as minidl_main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: minidl_main([cmd, '--epochs' if cmd != 'names' else '--steps', '10',
                                                      option, 'x' * 300])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert f'cannot write to {option}' in err and 'the path cannot be used (File name too long)' in err, err
    assert list(tmp_path.iterdir()) == []


def test_links_are_followed_before_training(tmp_path, capsys, monkeypatch):
    "A link to a missing folder, a loop of links as --out or --save: refused before training, naming the option"
    monkeypatch.setattr(minidl.experiments.circle_cli, 'run_circle',
                        lambda *a, **k: pytest.fail('trained despite a bad destination'))
    (tmp_path/'c1').mkdir()
    (tmp_path/'c1'/'outputs.png').write_bytes(b'old')
    (tmp_path/'c1'/'results.json').symlink_to('/nonexistent/dir/results.json')
    (tmp_path/'loopA').symlink_to(tmp_path/'loopB'); (tmp_path/'loopB').symlink_to(tmp_path/'loopA')
    for argv, msg in [(['--out', str(tmp_path/'c1')], "is a symbolic link to '/nonexistent/dir/results.json'"),
                      (['--out', str(tmp_path/'loopA')], f"cannot write to --out '{tmp_path/'loopA'}'"),
                      (['--out', str(tmp_path/'o'), '--save', str(tmp_path/'loopA')], 'cannot write to --save'),
                      (['--out', str(tmp_path/'o'), '--save', str(tmp_path/'loopA')], 'a loop of symbolic links')]:
        code, err = _fail(TINY + argv, capsys)
        assert code == 2 and msg in err, err
    assert (tmp_path/'c1'/'outputs.png').read_bytes() == b'old' and not (tmp_path/'o').exists()


def test_python_m_circle_cli_runs_the_command(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'minidl.experiments.circle_cli', '--epochs', '0'], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "argument --epochs: expected a positive integer, got '0'" in r.stderr, r.stderr


@pytest.mark.parametrize('argv, env, message', [
    (['--seed', str(2**64 - 1)], {}, "expected a seed below 2**31 (ShardedSampler's limit)"),
    (['--hidden', str(2**24)], {}, 'argument --hidden: expected a positive integer at most 4096'),
    ([], {'RANK': '0'}, 'the environment sets RANK but not'),
    (['--out', 'x' * 300], {}, 'the path cannot be used (File name too long)'),
])
def test_distributed_demo_one_line_for_limits_and_environment(argv, env, message, capsys, monkeypatch):
    from minidl.experiments import distributed_demo as demo
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'): monkeypatch.delenv(k, raising=False)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    monkeypatch.setattr(demo, 'train', lambda *a, **k: pytest.fail('trained before refusing the arguments'))
    with pytest.raises(SystemExit) as e: demo.distributed_demo(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and message in err, err


@pytest.mark.parametrize('argv, message', [
    (['--lr', '1e30'], 'error: training diverged: lower the learning rate'),
    (['--fail-rank', '0'], 'error: --fail-rank 0: a deliberate error; nothing was written'),
])
def test_distributed_demo_one_process_failures_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    from minidl.experiments import distributed_demo as demo
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'): monkeypatch.delenv(k, raising=False)
    code = demo.distributed_demo(['--epochs', '1', '--n-train', '400', '--out', str(tmp_path/'o')] + argv)
    err = capsys.readouterr().err
    assert code == 1 and err.count('\n') == 1 and message in err, err
    assert not (tmp_path/'o').exists()


def test_distributed_demo_ctrl_c_and_closed_pipe_are_one_line(tmp_path, capsys, monkeypatch):
    from minidl.experiments import distributed_demo as demo
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'): monkeypatch.delenv(k, raising=False)
    for exc, code, line in [(KeyboardInterrupt, 130, 'interrupted; nothing written'),
                            (BrokenPipeError, 1, 'stopped: its output was closed')]:
        def stop(*a, **k): raise exc
        monkeypatch.setattr(demo, 'train', stop)
        with pytest.raises(SystemExit) as e: demo.distributed_demo(['--epochs', '1', '--n-train', '400'])
        err = capsys.readouterr().err
        assert e.value.code == code and err.count('\n') == 1 and line in err, err


def test_write_protected_results_refused_before_training(tmp_path, capsys, monkeypatch):
    "open(path, 'w') refuses a write-protected file; a rename would replace it without asking: refused up front."
    (tmp_path/'res').mkdir(); (tmp_path/'res'/'results.json').write_text('{"precious": true}')
    real_access = os.access
    protected = tmp_path/'res'/'results.json'
    monkeypatch.setattr(os, 'access',
                        lambda p, mode, **kw: False if Path(p) == protected else real_access(p, mode, **kw))
    monkeypatch.setattr(minidl.experiments.circle_cli, 'run_circle',
                        lambda *a, **k: pytest.fail('trained despite a write-protected destination'))
    code, err = _fail(TINY + ['--out', str(tmp_path/'res')], capsys)
    assert code == 2 and 'results.json' in err and 'is write-protected' in err, err
    assert protected.read_text() == '{"precious": true}'


def test_names_seed_limit_is_run_names_own(capsys):
    from minidl.experiments.names_cli import make_names_parser
    for argv, msg in ((['--seed', str(2**63)], "expected a seed below 2**63 (run_names's limit)"),
                      (['--seed', str(2**63 - 1), '--runs', '2'], "goes past run_names's largest seed")):
        with pytest.raises(SystemExit) as e: make_names_parser().parse_args(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_a_name_too_long_for_the_file_system_is_refused_before_training(tmp_path, capsys, monkeypatch):
    "A folder or file still to be made is created after training: its name's length is checked before."
    monkeypatch.setattr(minidl.experiments.circle_cli, 'run_circle',
                        lambda *a, **k: pytest.fail('trained despite a name the file system refuses'))
    long = 'a' * 300
    for argv in (['--out', str(tmp_path/'new'/long)],
                 ['--out', str(tmp_path/'res'), '--save', str(tmp_path/'new'/f'{long}.pt')]):
        code, err = _fail(TINY + argv, capsys)
        assert code == 2 and 'bytes long, and the file system takes names of at most' in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_an_output_that_refuses_to_be_written_ends_the_command_with_one_line(tmp_path):
    "`> /dev/full`: exit status 1 and one line on stderr, not a traceback."
    with open('/dev/full', 'w') as full:
        proc = subprocess.run([sys.executable, '-m', 'minidl', 'circle', '--epochs', '3', '--out', str(tmp_path/'res')],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 1 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'its printed output could not be written (No space left on device)' in proc.stderr
