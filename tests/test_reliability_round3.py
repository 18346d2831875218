"""What a careless or hostile user still got through, each class checked at its root: the commands' numeric arguments
and Ctrl-C, damaged checkpoints, zero-size inputs against torch.nn, sizes torch cannot hold, a folder that refuses new
files, parameters built from expanded tensors, and the activations at NaN and infinities against torch."""
import math, os, select, signal, subprocess, sys, time, zipfile
from pathlib import Path

import pytest
import torch

import minidl as M
from minidl.checkpoint import save_checkpoint, load_checkpoint
from minidl.files import atomic_open

nn = torch.nn
D = torch.float64


# ---------------------------------------------------------------- commands: arguments
CIRCLE = [sys.executable, '-m', 'minidl', 'circle']
DIGITS = [sys.executable, '-m', 'minidl', 'digits']

BAD_ARGS = [
    (CIRCLE, ['--lr', '1e200'], "argument --lr: expected a finite number > 0 that torch.float32 parameters can hold"),
    (CIRCLE, ['--lr', '1e-60'], "which is 0 in torch.float32"),
    (CIRCLE, ['--decay', '1e300'], "argument --decay: expected a finite number >= 0 that torch.float32 parameters can hold"),
    (CIRCLE, ['--epochs', str(10**30)], "argument --epochs: expected a positive integer at most 1000000"),
    (CIRCLE, ['--batch-size', str(10**30)], "argument --batch-size: expected a positive integer at most 16777216 or 'full'"),
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
    from minidl.experiments.digits_cli import make_digits_parser
    from minidl.experiments.common import RUNS_MAX, EPOCHS_MAX
    for p in (make_parser(), make_digits_parser()):
        assert p.parse_args(['--runs', str(RUNS_MAX), '--epochs', str(EPOCHS_MAX)]).runs == RUNS_MAX
        for opt, v in (('--runs', RUNS_MAX + 1), ('--epochs', EPOCHS_MAX + 1), ('--seed', -1)):
            with pytest.raises(SystemExit): p.parse_args([opt, str(v)])
    assert make_parser().parse_args(['--seed', str(2**64 - 1)]).seed == 2**64 - 1  # torch's whole range for the circle
    assert make_parser().parse_args(['--lr', '1e30']).lr == [1e30]                 # large, but a float32 holds it


# ---------------------------------------------------------------- commands: Ctrl-C
def _interrupt(cmd, argv, tmp_path, wait_for: str, delay: float = 1.0):
    "Start a real run, send SIGINT `delay` s after `wait_for` appeared on stdout, return (code, stdout, stderr); never hangs."
    p = subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, bufsize=1)
    try:
        deadline, seen = time.monotonic() + 120, ''
        while wait_for not in seen:
            left = deadline - time.monotonic()
            assert left > 0 and p.poll() is None, f'the run did not start: {seen!r} {p.stderr.read() if p.poll() is not None else ""}'
            if select.select([p.stdout], [], [], min(left, 1.0))[0]: seen += p.stdout.readline()
        time.sleep(delay)  # training has begun
        p.send_signal(signal.SIGINT)
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


def test_ctrl_c_while_writing_says_what_was_kept(tmp_path, capsys, monkeypatch):
    "Interrupted between two files: exit 130, one line naming the file already replaced (whole), the others as they were"
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
    assert err == f"minidl-circle: interrupted; wrote {out/'outputs.png'} before it; the other outputs are as they were\n"
    assert (out / 'outputs.png').read_bytes() == b'new png' and (out / 'results.json').read_bytes() == b'old'


# ---------------------------------------------------------------- damaged checkpoints
def _record_start(raw: bytes, info: zipfile.ZipInfo) -> int:
    h = info.header_offset
    return h + 30 + int.from_bytes(raw[h + 26:h + 28], 'little') + int.from_bytes(raw[h + 28:h + 30], 'little')


def _state(model, opt):
    return [p.value.clone() for p in model.parameters()] + [p.grad.clone() for p in model.parameters()], repr(opt.state_dict())


def test_damaged_checkpoint_never_loads(tmp_path):
    torch.manual_seed(0)
    model = M.Sequential(M.Linear(4, 8), M.ReLU(), M.Linear(8, 2))
    opt = M.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(5, 4); loss = M.LossMSE(); loss(model(x), torch.zeros(5, 2)); model.backward(loss.backward()); opt.step()
    path = save_checkpoint(tmp_path / 'c.pt', model, opt)
    good = path.read_bytes()
    with zipfile.ZipFile(path) as z: infos = {i.filename.split('/', 1)[1]: i for i in z.infolist()}
    model.zero_grad()
    before = _state(model, opt)
    w = infos['data/0']  # the first weight's storage
    for pos in (0, 1, w.compress_size // 2, w.compress_size - 1):
        for bit in (0, 5, 7):
            raw = bytearray(good); raw[_record_start(good, w) + pos] ^= 1 << bit
            (tmp_path / 'bad.pt').write_bytes(bytes(raw))
            with pytest.raises(ValueError, match=r"the record data/0 \(the storage of model\['0.weight'\]\) fails its CRC-32 check"):
                load_checkpoint(tmp_path / 'bad.pt', model, opt)
            after = _state(model, opt)
            assert all(torch.equal(a, b) for a, b in zip(after[0], before[0])) and after[1] == before[1]
    for name, info in infos.items():  # every record, the structure included
        raw = bytearray(good); raw[_record_start(good, info) + info.compress_size // 2] ^= 0x10
        (tmp_path / 'bad.pt').write_bytes(bytes(raw))
        with pytest.raises(ValueError, match=f"the record {name}"): load_checkpoint(tmp_path / 'bad.pt', model, opt)
    for cut in (1, 100, len(good) // 2, len(good) - 1):
        (tmp_path / 'cut.pt').write_bytes(good[:cut])
        with pytest.raises(ValueError, match='is not a readable checkpoint'): load_checkpoint(tmp_path / 'cut.pt', model, opt)
    after = _state(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(after[0], before[0])) and after[1] == before[1]
    load_checkpoint(path, model, opt)  # the intact file still loads


def test_checkpoint_always_carries_crcs(tmp_path):
    model = M.Linear(3, 2)
    old = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try: path = save_checkpoint(tmp_path / 'c.pt', model)
    finally: torch.serialization.set_crc32_options(old)
    assert torch.serialization.get_crc32_options() == old
    with zipfile.ZipFile(path) as z: assert all(i.CRC != 0 for i in z.infolist() if i.file_size)
    load_checkpoint(path, model)
    torch.serialization.set_crc32_options(False)  # a file written without them cannot be verified: refused
    try: torch.save(torch.load(path, weights_only=True), tmp_path / 'nocrc.pt')
    finally: torch.serialization.set_crc32_options(old)
    with pytest.raises(ValueError, match='carries no CRC-32'): load_checkpoint(tmp_path / 'nocrc.pt', model)


# ---------------------------------------------------------------- zero-size inputs against torch.nn
def _pair(cls_m, cls_t, *a, **k):
    m = cls_m(*a, **k)
    t = cls_t(*a, **k).double()
    if list(m.state_dict()): t.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
    return m, t


def _modules():
    torch.manual_seed(0)
    yield 'Linear', lambda: _pair(lambda: M.Linear(3, 4, dtype=D), lambda: nn.Linear(3, 4)), [(0, 3), (2, 0, 3)]
    for name in ('ReLU', 'Tanh', 'Sigmoid', 'LeakyReLU', 'GELU', 'Flatten'):
        yield name, (lambda n=name: (getattr(M, n)(), getattr(nn, n)())), [(0, 3), (2, 0), (0,), (2, 0, 4, 4)]
    yield 'Dropout', lambda: (M.Dropout(0.5), nn.Dropout(0.5)), [(0, 3), (2, 0)]
    yield 'Dropout.eval', lambda: (M.Dropout(0.5).eval(), nn.Dropout(0.5).eval()), [(0, 3)]
    yield 'BatchNorm1d', lambda: _pair(lambda: M.BatchNorm1d(3, dtype=D), lambda: nn.BatchNorm1d(3)), [(0, 3), (2, 3, 0), (0, 3, 4)]
    yield 'BatchNorm1d.eval', lambda: tuple(x.eval() for x in _pair(lambda: M.BatchNorm1d(3, dtype=D), lambda: nn.BatchNorm1d(3))), [(0, 3)]
    yield 'BatchNorm2d', lambda: _pair(lambda: M.BatchNorm2d(2, dtype=D), lambda: nn.BatchNorm2d(2)), [(0, 2, 3, 3), (2, 2, 0, 3)]
    yield 'Conv2d', lambda: _pair(lambda: M.Conv2d(2, 3, 3, padding=1, dtype=D), lambda: nn.Conv2d(2, 3, 3, padding=1)), [(0, 2, 4, 4), (2, 2, 0, 4), (2, 2, 4, 0)]
    yield 'Conv2d.k2p1', lambda: _pair(lambda: M.Conv2d(2, 3, 2, padding=1, dtype=D), lambda: nn.Conv2d(2, 3, 2, padding=1)), [(2, 2, 0, 4)]
    for P in ('MaxPool2d', 'AvgPool2d'):
        yield P, (lambda P=P: (getattr(M, P)(2), getattr(nn, P)(2))), [(0, 2, 4, 4), (2, 0, 4, 4), (2, 2, 0, 4)]
        yield P + '.p1', (lambda P=P: (getattr(M, P)(2, 1, 1), getattr(nn, P)(2, 1, 1))), [(0, 2, 4, 4), (2, 2, 0, 4)]
    seq = lambda: _pair(lambda: M.Sequential(M.Linear(3, 4, dtype=D), M.ReLU(), M.Linear(4, 2, dtype=D)),
                        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    yield 'Sequential', seq, [(0, 3)]


CASES = [(name, make, shape) for name, make, shapes in _modules() for shape in shapes]


@pytest.mark.parametrize('name,make,shape', CASES, ids=[f"{n}-{s}" for n, _, s in CASES])
def test_zero_size_inputs_like_torch(name, make, shape):
    m, t = make()
    x = torch.randn(*shape, dtype=D)
    try:
        xt = x.clone().requires_grad_(); yt = t(xt); yt.backward(torch.ones_like(yt))
    except (RuntimeError, ValueError, IndexError) as e:
        with pytest.raises((ValueError, RuntimeError)) as info: m(x)
        assert type(info.value) in (ValueError, RuntimeError, TypeError) and type(m).__name__ in str(info.value)
        return
    y = m(x)
    assert y.shape == yt.shape and y.numel() == 0  # every case here: an empty output, as torch's
    dx = m.backward(torch.ones_like(y))
    assert dx.shape == xt.grad.shape
    for (k, a), (_, b) in zip(m.state_dict().items(), t.state_dict().items()):  # running statistics: as torch
        assert torch.equal(a.to(b.dtype), b) or (a.isnan() == b.isnan()).all(), k
    for (k, p), tp in zip(m.named_parameters(), t.parameters()):
        ref = tp.grad if tp.grad is not None else torch.zeros_like(tp)
        torch.testing.assert_close(p.grad, ref, rtol=1e-12, atol=0, msg=k)  # sums over no elements: exact zeros


@pytest.mark.parametrize('loss_m,loss_t', [(M.LossMSE, nn.MSELoss), (M.LossBCE, nn.BCELoss)])
@pytest.mark.parametrize('shape', [(0,), (0, 1), (2, 0)])
def test_zero_size_losses_nan_mean_like_torch(loss_m, loss_t, shape):
    p, y = torch.rand(*shape, dtype=D), torch.rand(*shape, dtype=D)
    lm = loss_m(); l = lm(p, y); d = lm.backward()
    pt = p.clone().requires_grad_(); lt = loss_t()(pt, y); lt.backward()
    assert torch.isnan(l) and torch.isnan(lt) and d.shape == pt.grad.shape == shape


def test_zero_size_cross_entropy_like_torch():
    for ls in (0.0, 0.1):
        p, y = torch.randn(0, 3, dtype=D), torch.zeros(0, dtype=torch.long)
        lm = M.CrossEntropyLoss(label_smoothing=ls); l = lm(p, y); d = lm.backward()
        pt = p.clone().requires_grad_(); lt = nn.CrossEntropyLoss(label_smoothing=ls)(pt, y); lt.backward()
        assert torch.isnan(l) and torch.isnan(lt) and d.shape == pt.grad.shape


# ---------------------------------------------------------------- sizes torch cannot hold; a folder that refuses files
@pytest.mark.parametrize('make,call,msg', [
    (lambda: M.Conv2d(1, 1, 2**31), None, 'Conv2d: the weight (out_channels, in_channels, kh, kw) would have shape'),
    (lambda: M.Conv2d(1, 1, (1, 2**62)), None, 'Conv2d: the weight'),
    (lambda: M.Conv2d(1, 1, 3, padding=2**40), None, 'Conv2d: an input padded by'),
    (lambda: M.Conv2d(1, 1, 3, padding=2**29), (2**4, 1, 1, 1), 'Conv2d: the padded input (N, H + 2 ph, W + 2 pw, C) would have shape'),
    (lambda: M.Conv2d(1, 1, 3, stride=2**62, padding=1), (1, 1, 4, 4), 'Conv2d: the stride'),
    (lambda: M.MaxPool2d(2**40, padding=2**39), None, 'MaxPool2d: an input padded by'),
    (lambda: M.AvgPool2d(2**62, padding=2**61), None, 'AvgPool2d: an input padded by'),
    (lambda: M.MaxPool2d(2**29, padding=2**28), (2**6, 1, 1, 1), 'MaxPool2d: the padded input'),
    (lambda: M.AvgPool2d(3, stride=2**62, padding=1), (1, 1, 4, 4), 'AvgPool2d: the stride'),
])
def test_sizes_torch_cannot_hold_name_the_layer(make, call, msg):
    with pytest.raises(ValueError) as e:
        m = make()
        if call is not None: m(torch.zeros(call))
    assert msg in str(e.value) and 'Storage size calculation overflowed' not in str(e.value)


def test_huge_stride_alone_is_fine_as_in_torch():
    x = torch.randn(1, 1, 4, 4, dtype=D)
    c = M.Conv2d(1, 1, 3, stride=2**62, dtype=D); t = nn.Conv2d(1, 1, 3, stride=2**62).double()
    t.load_state_dict(c.state_dict())
    torch.testing.assert_close(c(x), t(x).detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='needs a folder that refuses new files (Linux /proc)')
def test_folder_that_refuses_new_files_names_the_destination(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        with atomic_open('/proc/ckpt.pt', 'wb') as f: f.write(b'x')
    assert str(e.value.strerror).startswith('cannot write /proc/ckpt.pt: the folder /proc refuses new files')
    assert e.value.filename == '/proc/ckpt.pt' and '.tmp' not in str(e.value)
    with pytest.raises(OSError, match='cannot write /proc/m.pt: the folder /proc refuses new files'):
        save_checkpoint('/proc/m.pt', M.Linear(2, 1))


# ---------------------------------------------------------------- Parameter from an expanded tensor
def test_parameter_owns_expanded_memory_and_steps():
    b = torch.zeros(1).expand(4)
    lin = M.Linear(3, 4)
    lin.bias = M.Parameter(b)
    assert lin.bias.value.stride() == (1,) and lin.bias.value.data_ptr() != b.data_ptr()
    w = torch.randn(4, 3)
    assert M.Parameter(w).value.data_ptr() == w.data_ptr() and M.Parameter(w.t()).value.data_ptr() == w.data_ptr()  # not copied otherwise
    opt = M.SGD(lin.parameters(), lr=0.1)
    loss = M.LossMSE(); loss(lin(torch.randn(5, 3)), torch.zeros(5, 4)); lin.backward(loss.backward())
    opt.step()  # every parameter updated in place, the bias included
    assert not torch.equal(lin.bias.value, torch.zeros(4)) and torch.equal(b, torch.zeros(4))
    sd = {k: v.clone() for k, v in lin.state_dict().items()}
    sd['bias'] = torch.ones(1).expand(4)                    # an expanded source loads (copied into owned memory)
    lin.load_state_dict(sd); assert torch.equal(lin.bias.value, torch.ones(4))


def test_load_state_dict_refuses_a_shared_memory_target_up_front():
    lin = M.Linear(3, 4)
    sd = {k: v.clone() + 1 for k, v in lin.state_dict().items()}
    lin.bias.value = torch.zeros(1).expand(4)  # replaced by hand
    w = lin.weight.value.clone()
    with pytest.raises(RuntimeError, match=r"bias: the model's tensor has elements that share memory .*nothing was loaded"):
        lin.load_state_dict(sd)
    assert torch.equal(lin.weight.value, w)   # the weight, before it in order, was not loaded either


# ---------------------------------------------------------------- activations at NaN and infinities
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 1e-40, -1e30]
ACTS = [('ReLU', lambda: M.ReLU(), lambda: nn.ReLU()), ('Tanh', lambda: M.Tanh(), lambda: nn.Tanh()),
        ('Sigmoid', lambda: M.Sigmoid(), lambda: nn.Sigmoid()),
        ('LeakyReLU', lambda: M.LeakyReLU(), lambda: nn.LeakyReLU()), ('LeakyReLU(0)', lambda: M.LeakyReLU(0.0), lambda: nn.LeakyReLU(0.0)),
        ('LeakyReLU(2)', lambda: M.LeakyReLU(2.0), lambda: nn.LeakyReLU(2.0)), ('LeakyReLU(-0.5)', lambda: M.LeakyReLU(-0.5), lambda: nn.LeakyReLU(-0.5)),
        ('Dropout.eval', lambda: M.Dropout(0.3).eval(), lambda: nn.Dropout(0.3).eval())]


def _same(a, b):
    "Equal, NaN where the other is NaN (element-wise functions of one element: the same operations, so exact)"
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(torch.nan_to_num(a, 0.0), torch.nan_to_num(b, 0.0))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('name,make,make_t', ACTS, ids=[a[0] for a in ACTS])
def test_activations_at_nan_and_inf_like_torch(name, make, make_t, dtype):
    x = torch.tensor(SPECIAL, dtype=dtype)
    g = torch.linspace(-2, 3, len(SPECIAL), dtype=dtype)  # finite upstream gradients
    m = make(); y = m(x.clone()); dx = m.backward(g.clone())
    xt = x.clone().requires_grad_(); yt = make_t()(xt); yt.backward(g.clone())
    assert _same(y, yt.detach()), (y, yt)
    if name in ('Tanh', 'Sigmoid'):  # a product of three factors; the same formula as torch's, maybe another order
        assert torch.equal(dx.isnan(), xt.grad.isnan())
        torch.testing.assert_close(torch.nan_to_num(dx), torch.nan_to_num(xt.grad), rtol=4 * torch.finfo(dtype).eps, atol=0)
    else: assert _same(dx, xt.grad), (dx, xt.grad)


def test_dropout_keeps_nan_like_torch():
    x = torch.full((500,), math.nan)
    assert M.Dropout(0.5)(x).isnan().all() and nn.Dropout(0.5)(x).isnan().all()   # NaN * 0 is NaN in both
    assert M.Dropout(1.0)(x).isnan().all() and nn.Dropout(1.0)(x).isnan().all()
