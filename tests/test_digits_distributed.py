"""`minidl-digits --distributed` under torchrun (gloo on 127.0.0.1, bounded time): rank 0 alone prints and writes, one process
under torchrun is bit for bit `run_digits(..., data_parallel=True)` in this process, two processes give a comparable run
(not the same weights: BatchNorm statistics per replica, shifts and dropout masks per rank), and the launch errors are one line."""
import json, os, subprocess, sys, time
from pathlib import Path

import pytest
import torch

pytest.importorskip('sklearn')
from minidl.experiments.digits_cli import digits_main

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90  # seconds for one torchrun job (imports, 2 epochs of the MLP, figures); the collectives time out after 120 s
ARGS = ['--model', 'mlp', '--epochs', '2', '--seed', '3', '--quiet']
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK')


def _env():
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    if Path('/sys/class/net/lo').exists(): env.setdefault('GLOO_SOCKET_IFNAME', 'lo')  # stay on 127.0.0.1
    return env


def _torchrun(nproc, out):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(nproc),
           '-m', 'minidl.experiments.digits_cli', '--distributed', *ARGS, '--out', str(out), '--save', str(out/'models.pt')]
    t0 = time.monotonic()
    try: proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired: pytest.fail(f"torchrun with {nproc} process(es) did not end within {TIMEOUT} s (a hang)")
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
    assert sorted(p.name for p in out.iterdir()) == ['confusion.png', 'curves.png', 'misclassified.png', 'models.pt', 'results.json']
    res = json.loads((out/'results.json').read_text())
    assert res['settings']['distributed'] == dict(world_size=world, backend='gloo')
    assert res['settings']['threads'] == 1 and res['mlp']['settings']['batch_size'] == 64  # the global batch
    assert res['mlp']['seeds'] == [3] and 0 <= res['mlp']['test_accuracy'][0] <= 1


def test_one_process_equals_data_parallel_run_here(jobs):
    "torchrun --nproc-per-node 1 ... --distributed is run_digits(data_parallel=True) in a plain process, bit for bit."
    from minidl.experiments.digits import run_digits
    from minidl.experiments.common import torch_threads
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
    for k, v in dict(RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='29999').items(): monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e: digits_main(['--out', str(tmp_path/'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'WORLD_SIZE=2 but without --distributed' in err, err
    monkeypatch.setenv('WORLD_SIZE', '1')  # one process under torchrun: an ordinary run is fine, but too many seeds is not
    with pytest.raises(SystemExit) as e: digits_main(['--distributed', '--seed', str(2**31), '--out', str(tmp_path/'x')])
    assert e.value.code == 2 and 'seeds < 2**31' in capsys.readouterr().err


def test_partial_environment(monkeypatch, tmp_path, capsys):
    "A stray RANK alone: an error with --distributed (naming what is missing), ignored without it."
    from minidl.experiments.digits_cli import make_digits_parser, _start_distributed
    import torch
    for k in TORCHRUN_ENV: monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(SystemExit) as e: digits_main(['--distributed', '--out', str(tmp_path/'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'sets RANK but not WORLD_SIZE, MASTER_ADDR, MASTER_PORT' in err, err
    assert _start_distributed(make_digits_parser().parse_args([]), torch.device('cpu')) == (None, None)
