"""Data-parallel training over torch.distributed (gloo's connections on 127.0.0.1, spawned processes, bounded time;
torch's rendezvous store, which rank 0 hosts for the length of a job, listens on the free port on every interface, as
torch's TCPStore always does):
2 and 3 processes train like one process with the same global batch, a checkpoint written by rank 0 resumes on
another number of processes, and a failing rank ends the job quickly with its rank named.

The workers are this file run as a script (`python tests/test_distributed.py SCENARIO OUT`) with torchrun's
environment variables set by hand, as torchrun would set them."""
import contextlib
import functools
import inspect
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 45  # seconds for a whole multi-process run; the collectives themselves time out after 20 s
N, BATCH, EPOCHS, RESUME_AT = 103, 20, 4, 2  # 103 = 5 * 20 + 3: uneven shards on 2 and 3 ranks, a last batch of 3
N_BN = 100  # BatchNorm: whole batches of 20, shards of 10 (BatchNorm needs 2 samples per shard)


def _adam():
    try:
        from minidl.optim import Adam
    except ImportError: return None
    return Adam


def _batchnorm():
    try:
        from minidl.nn.normalization import BatchNorm1d
    except ImportError: return None
    return BatchNorm1d


def _optimizers():
    "The optimizers to test, by name: SGD with momentum and Adam where minidl has them, else plain SGD with decay."
    from minidl.optim import SGD
    out = {}
    if 'momentum' in inspect.signature(SGD).parameters: out['sgd_momentum'] = lambda ps: SGD(ps, lr=0.1, momentum=0.9)
    else: out['sgd_decay'] = lambda ps: SGD(ps, lr=0.2, decay=0.01)
    if _adam() is not None: out['adam'] = lambda ps: _adam()(ps, lr=0.01)
    return out


def _model(seed):
    from minidl.nn.activation import ReLU, Tanh
    from minidl.nn.container import Sequential
    from minidl.nn.linear import Linear
    torch.manual_seed(seed)
    return Sequential(Linear(4, 16), Tanh(), Linear(16, 16), ReLU(), Linear(16, 3)).to(dtype=torch.float64)


def _bn_model(seed):
    from minidl.nn.activation import ReLU
    from minidl.nn.container import Sequential
    from minidl.nn.linear import Linear
    torch.manual_seed(seed)
    return Sequential(Linear(4, 16), _batchnorm()(16), ReLU(), Linear(16, 3)).to(dtype=torch.float64)


def _data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 4, generator=g, dtype=torch.float64)
    return x, (x[:, 0] * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()  # 3 classes


def _save_checkpoint(path, model, opt, epoch):
    "`minidl.checkpoint.save_checkpoint` where it exists, else model, optimizer step count and epoch with torch.save."
    try:
        from minidl.checkpoint import save_checkpoint
    except ImportError:
        state = dict(model=model.state_dict(), optimizer={'step_count': opt.step_count}, epoch=epoch)
        return torch.save(state, path)
    save_checkpoint(path, model, opt, epoch=epoch)


def _load_checkpoint(path, model, opt):
    "The epoch saved; model and optimizer restored."
    try:
        from minidl.checkpoint import load_checkpoint
    except ImportError:
        ck = torch.load(path)
        model.load_state_dict(ck['model'])
        opt.step_count = ck['optimizer']['step_count']
        return ck['epoch']
    return load_checkpoint(path, model, opt)['epoch']


def _epochs(model, opt, x, y, sampler, first, last, after_backward=None):
    "Epochs `first..last` of `minidl.training.train` with the given sampler and hook; its `History`."
    from minidl.nn.loss import LossCrossEntropy
    from minidl.training import train
    return train(
        model,
        LossCrossEntropy(),
        opt,
        x,
        y,
        epochs=last - first + 1,
        sampler=lambda e: sampler(e + first - 1),
        after_backward=after_backward,
        progress=False,
    )


@contextlib.contextmanager
def _one_thread():
    "Like the workers (and much faster on a busy machine): one thread, restored afterwards."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try: yield
    finally: torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
@_one_thread()
def _reference(name, epochs=EPOCHS):
    "One process, no process group: the global batches themselves."
    from minidl.distributed import ShardedSampler
    x, y = _data()
    model = _model(100)
    opt = _optimizers()[name](model.parameters())
    hist = _epochs(model, opt, x, y, ShardedSampler(N, BATCH, seed=3), 1, epochs)
    return model.state_dict(), hist


@_one_thread()
def _reference_bn(p, epochs=EPOCHS):
    """BatchNorm with per-replica statistics, simulated in one process: every shard's forward and backward
    uses the shard's own
    batch statistics, the gradients are count-weighted, and the running statistics kept are rank 0's."""
    from minidl.distributed import ShardedSampler
    from minidl.nn.loss import LossCrossEntropy
    x, y = _data()
    model, loss_fn = _bn_model(100), LossCrossEntropy()
    opt = _optimizers()[next(iter(_optimizers()))](model.parameters())
    samplers = [ShardedSampler(N_BN, BATCH, seed=3, rank=r, world_size=p) for r in range(p)]
    for epoch in range(1, epochs + 1):
        for shards in zip(*[s(epoch) for s in samplers]):
            before = [b.clone() for b in model.buffers()]
            total = [torch.zeros_like(q.grad) for q in model.parameters()]
            for idx in reversed(shards):  # rank 0 last: its running statistics stay
                for b, v in zip(model.buffers(), before): b.copy_(v)
                model.zero_grad()
                loss_fn(model(x[idx]), y[idx])
                model.backward(loss_fn.backward(), input_grad=False)
                for t, q in zip(total, model.parameters()): t += len(idx) * q.grad
            for t, q in zip(total, model.parameters()): q.grad.copy_(t / sum(len(i) for i in shards))
            opt.step()
    return model.state_dict()


# ---------------------------------------------------------------- the workers (run as a script)
def _worker(scenario, out):
    from minidl import distributed as D
    out = Path(out)
    D.init_distributed(timeout=20)
    rank, world = D.get_rank(), D.get_world_size()
    x, y = _data()
    with D.fail_fast():
        if scenario == 'train':
            for name, make in _optimizers().items():
                model = _model(100 + rank)  # each rank differs: the broadcast must make them rank 0's
                dp = D.DataParallel(model, N, BATCH, seed=3, bucket_cap_mb=0.001)  # tiny buckets: several all-reduces
                opt = make(model.parameters())
                hist = dp.reduce_history(_epochs(model, opt, x, y, dp.sampler, 1, EPOCHS, dp.after_backward))
                torch.save(dict(state=model.state_dict(), loss=hist.train_loss, accuracy=hist.train_accuracy),
                           out / f'{name}_w{world}_r{rank}.pt')
                # the checkpoint of a run stopped after RESUME_AT epochs, written by rank 0 alone
                if world == 2:
                    model = _model(100 + rank)
                    dp = D.DataParallel(model, N, BATCH, seed=3)
                    opt = make(model.parameters())
                    _epochs(model, opt, x, y, dp.sampler, 1, RESUME_AT, dp.after_backward)
                    D.on_main(_save_checkpoint, out / f'{name}_ckpt.pt', model, opt, RESUME_AT)
            if world == 3:  # resume the 2-process checkpoints on 3 processes
                for name, make in _optimizers().items():
                    model = _model(200 + rank)
                    opt = make(model.parameters())
                    epoch = _load_checkpoint(out / f'{name}_ckpt.pt', model, opt)  # every rank reads rank 0's file
                    dp = D.DataParallel(model, N, BATCH, seed=3)
                    _epochs(model, opt, x, y, dp.sampler, epoch + 1, EPOCHS, dp.after_backward)
                    torch.save(model.state_dict(), out / f'{name}_resumed_r{rank}.pt')
            if world == 2 and _batchnorm() is not None:  # per-replica BatchNorm statistics, rank 0's buffers kept
                model = _bn_model(100 + rank)
                dp = D.DataParallel(model, N_BN, BATCH, seed=3)
                opt = next(iter(_optimizers().values()))(model.parameters())
                _epochs(model, opt, x, y, dp.sampler, 1, EPOCHS, dp.after_backward)
                torch.save(model.state_dict(), out / f'bn_w{world}_r{rank}.pt')
        if scenario == 'settings':  # the ranks disagree on the bucket size: every rank must say so, none may hang
            try: D.DataParallel(_model(100), N, BATCH, seed=3, bucket_cap_mb=25 if rank == 0 else 1)
            except ValueError as e: print(f"refused: {e}")
        if scenario == 'edge':  # float16 gradients averaged without overflow, then rank 1 exits: rank 0 says so
            from minidl.nn.container import Sequential
            from minidl.nn.linear import Linear
            model = Sequential(Linear(1, 1)).to(dtype=torch.float16)
            dp = D.DataParallel(model, 10**5, 4096)
            for p in model.parameters(): p.grad.fill_(40.0)
            dp.average_gradients(2048)  # 40 * 2048 is beyond float16's largest number, 65504; the mean, 40, is not
            print(f"float16 mean {[p.grad.item() for p in model.parameters()]}", flush=True)
            if rank == 1: sys.exit(3)
            dp.average_gradients(2048)  # rank 1 is gone
        D.print_main(f"rank 0 of {world} done")  # printed once, by rank 0
        if world == 3:  # then rank 1 fails in the middle of an epoch: every rank must stop, naming rank 1
            model = _model(100)
            dp = D.DataParallel(model, N, BATCH, seed=3)
            opt = next(iter(_optimizers().values()))(model.parameters())
            def boom(m, idx):
                if rank == 1 and dp.steps == 2: raise ValueError("a deliberate error on rank 1")
                dp.after_backward(m, idx)
            _epochs(model, opt, x, y, dp.sampler, 1, EPOCHS, boom)
    D.shutdown()


# ---------------------------------------------------------------- the launcher
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env():
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
    )
    # gloo's connections stay on 127.0.0.1 (the rendezvous store's listening socket is torch's: every interface)
    if Path('/sys/class/net/lo').exists(): env.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    return env


def _by_hand(world, scenario, out):
    "Start `world` workers with the environment torchrun would give them; [(returncode, stdout, stderr)] per rank."
    env = dict(_env(), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, scenario, str(out)],
            cwd=ROOT,
            text=True,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in range(world)
    ]
    deadline, results = time.monotonic() + TIMEOUT, []
    try:
        for p in procs: results.append((p.returncode, *p.communicate(timeout=max(deadline - time.monotonic(), 0.1))))
    except subprocess.TimeoutExpired:
        for p in procs: p.kill()
        pytest.fail(f"{world} processes running {scenario!r} did not end within {TIMEOUT} s (a hang)")
    return [(p.returncode, o, e) for p, (_, o, e) in zip(procs, results)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    ("2 processes launched by torchrun (they write the checkpoints), then 3 launched by hand (they resume "
     "them, then fail).")
    out = tmp_path_factory.mktemp('dist')
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc-per-node',
        '2',
        __file__,
        'train',
        str(out),
    ]
    try: two = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired: pytest.fail(f"torchrun with 2 processes did not end within {TIMEOUT} s (a hang)")
    assert two.returncode == 0, two.stderr[-3000:]
    t0 = time.monotonic()
    three = _by_hand(3, 'train', out)
    return dict(out=out, two=two, three=three, three_seconds=time.monotonic() - t0)


def _rel(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in b)


@pytest.mark.parametrize('world', [2, 3])
def test_equals_one_process(runs, world):
    out = runs['out']
    for name in _optimizers():
        ref, ref_hist = _reference(name)
        res = [torch.load(out / f'{name}_w{world}_r{r}.pt') for r in range(world)]
        ranks = [r['state'] for r in res]
        for r in res:  # the history summed over the ranks is that of one process
            assert max(abs(a / b - 1) for a, b in zip(r['loss'], ref_hist.train_loss)) < 1e-12
            assert max(abs(a - b) for a, b in zip(r['accuracy'], ref_hist.train_accuracy)) < 1e-12
        for sd in ranks[1:]:  # the replicas are identical, bit for bit
            assert all(torch.equal(sd[k], ranks[0][k]) for k in ref), name
        assert _rel(ranks[0], ref) < 1e-12, (name, world, _rel(ranks[0], ref))
        start = _model(100).state_dict()  # and training did move the parameters
        assert _rel(start, ref) > 1e-3


def test_checkpoint_resumes_on_another_world_size(runs):
    for name in _optimizers():
        ref, _ = _reference(name)
        resumed = [torch.load(runs['out'] / f'{name}_resumed_r{r}.pt') for r in range(3)]
        assert _rel(resumed[0], ref) < 1e-12, (name, _rel(resumed[0], ref))
        assert all(torch.equal(sd[k], resumed[0][k]) for sd in resumed[1:] for k in ref)


def test_batchnorm_per_replica_statistics(runs):
    if _batchnorm() is None: pytest.skip("no minidl.nn.normalization yet")
    ranks = [torch.load(runs['out'] / f'bn_w2_r{r}.pt') for r in range(2)]
    ref, one = _reference_bn(2), _reference_bn(1)
    assert all(torch.equal(ranks[1][k], ranks[0][k]) for k in ref)  # parameters and running statistics identical
    assert ranks[0]['1.num_batches_tracked'].item() == EPOCHS * N_BN // BATCH
    assert _rel(ranks[0], ref) < 1e-12, _rel(ranks[0], ref)
    # per-replica statistics: not the big batch's (that would need synchronised statistics)
    assert _rel(ref, one) > 1e-6


def test_rank_0_alone_prints(runs):
    assert runs['two'].stdout.count("done") == 1 and "rank 0 of 2 done" in runs['two'].stdout
    assert [o.count("done") for _, o, _ in runs['three']] == [1, 0, 0]


def test_failing_rank_ends_the_job(runs):
    "Rank 1 of 3 raises: all three end (no hang), each with a message naming rank 1."
    (rc0, _, err0), (rc1, _, err1), (rc2, _, err2) = runs['three']
    assert rc0 != 0 and rc1 != 0 and rc2 != 0
    assert "rank 1 of 3 failed: ValueError: a deliberate error on rank 1" in err1
    for r, err in ((0, err0), (2, err2)):
        assert (
            f"rank {r} of 3 stopped because rank 1 of 3 failed: ValueError: a deliberate error on rank 1"
            in err
        ), err[-2000:]


def test_ranks_that_disagree_on_the_communication_settings_are_refused(tmp_path):
    "the bucket size shapes every message: a mismatch would crash a process inside gloo, or mix the buckets"
    for rc, out, err in _by_hand(2, 'settings', tmp_path):
        assert rc == 0, err[-2000:]
        assert ("refused: DataParallel: rank(s) 1 have a different bucket_cap_mb or broadcast_buffers than rank 0"
                in out), out


@pytest.mark.parametrize('count', [float('inf'), float('nan'), 0, -3, torch.tensor(-3.0), torch.tensor([1.0, 2.0])])
def test_a_sample_count_that_is_not_a_finite_positive_number_is_refused(count):
    "an infinite count made every gradient NaN; a negative 0-dim tensor was accepted"
    from minidl import Linear, Sequential
    from minidl.distributed import DataParallel
    model = Sequential(Linear(4, 8), Linear(8, 3))
    dp = DataParallel(model, 10)
    y = model(torch.randn(10, 4)); model.backward(torch.ones_like(y))
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match='expects a sample count > 0, finite'):
        dp.average_gradients(count)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))


def test_float16_gradients_average_without_overflow_and_a_rank_that_exits_is_named(tmp_path):
    (rc0, out0, err0), (rc1, out1, err1) = _by_hand(2, 'edge', tmp_path)
    for out, err in ((out0, err0), (out1, err1)): assert 'float16 mean [40.0, 40.0]' in out, err[-2000:]
    assert rc1 == 3 and rc0 != 0
    assert 'rank 0 of 2 stopped because rank 1 of 2 exited with status 3' in err0, err0[-2000:]


def test_torchrun_without_init_distributed_is_refused(monkeypatch):
    "every rank would train alone on all the data, as rank 0, and write the same files"
    from minidl import Linear
    from minidl.distributed import DataParallel, ShardedSampler
    for k, v in dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500').items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match='WORLD_SIZE=2 .*call minidl.distributed.init_distributed'):
        ShardedSampler(10, 5)
    with pytest.raises(RuntimeError, match='process group is not initialised'): DataParallel(Linear(2, 2), 10)
    assert ShardedSampler(10, 5, rank=0, world_size=1).world_size == 1  # given explicitly: as asked


def test_missing_environment_is_a_clear_error(monkeypatch):
    from minidl.distributed import init_distributed, launch_info
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'): monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match='launch with `torchrun'): init_distributed()
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(RuntimeError, match='sets RANK but not WORLD_SIZE, MASTER_ADDR, MASTER_PORT'): launch_info()


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    _worker(*sys.argv[1:])


def test_torch_sampler_habits_get_clear_answers():
    from minidl.distributed import ShardedSampler
    s = ShardedSampler(10, 5)
    with pytest.raises(AttributeError, match=r'the epoch is an argument, sampler\(epoch\)'): s.set_epoch(1)
    with pytest.raises(TypeError, match=r'called with the epoch, not iterated'): iter(s)
    with pytest.raises(AttributeError, match="no attribute .foo."): _ = s.foo
    assert len(s(0)) == 2 and len(s) == 2
