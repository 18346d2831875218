"""Checkpoints: exact resume, plain-data files, crashes mid-save, damaged files, state dicts shared with torch."""
import sys
import zipfile

import pytest
import torch
import torch.nn as nn
from helpers import close_after_steps, groups_of, pair

import minidl
import minidl as M
from minidl import (
    SGD,
    Adam,
    AdamW,
    BatchNorm1d,
    CosineAnnealingLR,
    Dropout,
    Linear,
    LossBCE,
    LossCrossEntropy,
    OneCycleLR,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    StepLR,
    Tanh,
    load_checkpoint,
    save_checkpoint,
)
from minidl.testing import RAW_MESSAGES, assert_clear_error, assert_close, assert_unchanged, snapshot


def _ckpt_setup():
    torch.manual_seed(0)
    m = Sequential(Linear(3, 4), BatchNorm1d(4), ReLU(), Linear(4, 1))
    o = Adam(m.parameters()); s = StepLR(o, 2)
    m(torch.randn(5, 3)); m.backward(torch.ones(5, 1)); o.step(); s.step()
    return m, o, s


def test_checkpoint_roundtrip_and_bad_destinations(tmp_path):
    m, o, s = _ckpt_setup()
    p = tmp_path/'c.pt'
    save_checkpoint(p, m, o, s, epoch=3, note='hi')
    m2, o2, s2 = _ckpt_setup()
    assert load_checkpoint(p, m2, o2, s2) == {'epoch': 3, 'note': 'hi'}
    assert_clear_error(IsADirectoryError, 'is a directory', save_checkpoint, tmp_path, m)
    assert_clear_error(FileNotFoundError, 'does not exist', save_checkpoint, tmp_path/'no'/'c.pt', m)
    assert_clear_error(ValueError, 'epoch', save_checkpoint, p, m, epoch=True)
    assert_clear_error(TypeError, "extra['fn']", save_checkpoint, p, m, fn=lambda: 1)
    assert sorted(f.name for f in tmp_path.iterdir()) == ['c.pt']


@pytest.mark.parametrize('path', [3, ''])
def test_checkpoint_path_of_the_wrong_kind(tmp_path, path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m, _, _ = _ckpt_setup()
    with pytest.raises((TypeError, ValueError)) as info: save_checkpoint(path, m)
    assert 'path' in str(info.value) and not any(r in str(info.value) for r in RAW_MESSAGES)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_load_wrong_model_changes_nothing(tmp_path):
    m, o, s = _ckpt_setup()
    save_checkpoint(tmp_path/'c.pt', m, o, s)
    m3 = Sequential(Linear(3, 4), ReLU(), Linear(4, 1)); o3 = Adam(m3.parameters())
    before = snapshot(m3, o3)
    with pytest.raises((ValueError, RuntimeError)): load_checkpoint(tmp_path/'c.pt', m3, o3)
    assert_unchanged(before, snapshot(m3, o3))
    o4 = SGD(m.parameters())  # the right model, another kind of optimizer
    assert_clear_error(ValueError, "'Adam' optimizer", load_checkpoint, tmp_path/'c.pt', m, o4)


def test_checkpoint_garbage_file(tmp_path):
    (tmp_path/'g.pt').write_bytes(b'not a checkpoint')
    m, _, _ = _ckpt_setup()
    assert_clear_error(ValueError, 'not a readable checkpoint', load_checkpoint, tmp_path/'g.pt', m)


@pytest.mark.parametrize('corrupt', [
    lambda ck: ck.pop('rng'),
    lambda ck: ck.__setitem__('extra', 5),
    lambda ck: ck['rng'].pop('generators'),
    lambda ck: ck.__setitem__('epoch', 'x'),
])
def test_checkpoint_corrupt_structure_changes_nothing(tmp_path, corrupt):
    m, o, s = _ckpt_setup()
    save_checkpoint(tmp_path/'c.pt', m, o, s, epoch=1)
    ck = torch.load(tmp_path/'c.pt', weights_only=True)
    corrupt(ck)
    torch.save(ck, tmp_path/'bad.pt')
    m2, o2, s2 = _ckpt_setup()
    m2[0].weight.value.add_(1.0)
    before = snapshot(m2, o2)
    assert_clear_error(ValueError, 'load_checkpoint', load_checkpoint, tmp_path/'bad.pt', m2, o2, s2)
    assert_unchanged(before, snapshot(m2, o2))


def _record_start(raw: bytes, info: zipfile.ZipInfo) -> int:
    h = info.header_offset
    return h + 30 + int.from_bytes(raw[h + 26:h + 28], 'little') + int.from_bytes(raw[h + 28:h + 30], 'little')


def _state(model, opt):
    return [p.value.clone() for p in model.parameters()] + [p.grad.clone() for p in model.parameters()], repr(
        opt.state_dict()
    )


def test_damaged_checkpoint_never_loads(tmp_path):
    torch.manual_seed(0)
    model = M.Sequential(M.Linear(4, 8), M.ReLU(), M.Linear(8, 2))
    opt = M.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(5, 4)
    loss = M.LossMSE()
    loss(model(x), torch.zeros(5, 2))
    model.backward(loss.backward())
    opt.step()
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
            with pytest.raises(ValueError, match=r"the record data/0 \(the storage of model\['0.weight'\]\) "
                                                 r"fails its CRC-32 check"):
                load_checkpoint(tmp_path / 'bad.pt', model, opt)
            after = _state(model, opt)
            assert all(torch.equal(a, b) for a, b in zip(after[0], before[0])) and after[1] == before[1]
    for name, info in infos.items():  # every record, the structure included
        raw = bytearray(good); raw[_record_start(good, info) + info.compress_size // 2] ^= 0x10
        (tmp_path / 'bad.pt').write_bytes(bytes(raw))
        with pytest.raises(ValueError, match=f"the record {name}"): load_checkpoint(tmp_path / 'bad.pt', model, opt)
    for cut in (1, 100, len(good) // 2, len(good) - 1):
        (tmp_path / 'cut.pt').write_bytes(good[:cut])
        with pytest.raises(ValueError, match='is not a readable checkpoint'):
            load_checkpoint(tmp_path / 'cut.pt', model, opt)
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


F64 = torch.float64


def test_checkpoint_continues_as_torch(tmp_path):
    ("save_checkpoint stores the torch-layout optimizer state: torch.optim loads it from the file and "
     "continues as minidl.")
    ps, qs, grads = pair(8)
    model = Sequential(Linear(2, 2))  # the checkpoint needs a model; the parameters trained here are ps
    opt = AdamW(groups_of(ps, [{}, {'lr': 3e-3}]), lr=0.01, amsgrad=True)
    for gs in grads[:10]:
        for p, g in zip(ps, gs): p.grad.copy_(g)
        opt.step()
    path = save_checkpoint(tmp_path / 'c.pt', model, opt)
    sd = torch.load(path, weights_only=True)['optimizer']
    qs2 = [p.value.clone().requires_grad_() for p in ps]
    ref = torch.optim.AdamW(groups_of(qs2, [{}, {}])); ref.load_state_dict(sd)
    ps3 = [Parameter(p.value.clone()) for p in ps]
    opt3 = AdamW(groups_of(ps3, [{}, {}]))
    load_checkpoint(path, Sequential(Linear(2, 2)), opt3)
    for gs in grads[10:30]:
        for p, p3, q, g in zip(ps, ps3, qs2, gs): p.grad.copy_(g); p3.grad.copy_(g); q.grad = g.clone()
        opt.step(); opt3.step(); ref.step()
    # same ops, same order
    for p, p3, q in zip(ps, ps3, qs2): close_after_steps(p.value, q); assert torch.equal(p3.value, p.value)


def test_checkpoint_helpers_refuse_a_schedule_of_another_optimizer(tmp_path):
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())
    opt, other = Adam(model.parameters()), Adam(model.parameters())
    with pytest.raises(ValueError, match='drives another optimizer'):
        save_checkpoint(tmp_path / 'c.pt', model, opt, StepLR(other, 2))
    with pytest.raises(ValueError, match='that was not given'):
        save_checkpoint(tmp_path / 'c.pt', model, None, StepLR(other, 2))
    assert not any(tmp_path.iterdir())  # nothing written
    sched = StepLR(opt, 2)
    path = save_checkpoint(tmp_path / 'c.pt', model, opt, sched)
    for p in model.parameters(): p.grad += 1.0
    opt.step(); sched.step()
    before = ([p.value.clone() for p in model.parameters()], opt.step_count, sched.last_epoch)
    with pytest.raises(ValueError, match='drives another optimizer'):
        load_checkpoint(path, model, opt, StepLR(other, 2))
    assert all(torch.equal(a, p.value) for a, p in zip(before[0], model.parameters()))
    assert (opt.step_count, sched.last_epoch) == before[1:]
    load_checkpoint(path, model, opt, sched)
    assert (opt.step_count, sched.last_epoch) == (0, 0)


def test_checkpoint_in_the_earlier_layout_loads(tmp_path):
    ("A checkpoint written before the torch layout (optimizer {'type', 'step_count', 'hyper', 'state'}, "
     "schedule with base_lr/last_lr) loads and continues exactly.")
    g = torch.Generator().manual_seed(0)
    def fresh():
        model = Sequential(Linear(2, 3, generator=g), ReLU(), Linear(3, 1, generator=g)).to(dtype=F64)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        return model, opt, OneCycleLR(opt, 0.1, 30)
    grads = [[torch.randn(p.shape, generator=g, dtype=F64) for p in fresh()[0].parameters()] for _ in range(30)]
    def steps(model, opt, sched, gs_list):
        for gs in gs_list:
            for p, gr in zip(model.parameters(), gs): p.grad.copy_(gr)
            opt.step(); sched.step()
    model, opt, sched = fresh()
    steps(model, opt, sched, grads[:10])
    path = save_checkpoint(tmp_path / 'new.pt', model, opt, sched)
    ck = torch.load(path, weights_only=True)
    sd, ssd = ck['optimizer'], ck['scheduler']
    ck['optimizer'] = {
        'type': 'SGD',
        'step_count': 10,
        'state': {'momentum_buffer': [sd['state'][i]['momentum_buffer'] for i in range(4)]},
        'hyper': {
            k: sd['param_groups'][0][k]
            for k in ('lr', 'decay', 'momentum', 'dampening', 'nesterov', 'weight_decay')
        },
    }
    ck['scheduler'] = {
        'type': 'OneCycleLR',
        'last_epoch': ssd['last_epoch'],
        'base_lr': ssd['base_lrs'][0],
        'last_lr': ssd['last_lrs'][0],
        'hyper': ssd['hyper'],
    }
    torch.save(ck, tmp_path / 'old.pt')
    model2, opt2, sched2 = fresh()
    load_checkpoint(tmp_path / 'old.pt', model2, opt2, sched2)
    assert (opt2.step_count, sched2.last_epoch, opt2.param_groups[0]['max_lr']) == (10, 10, 0.1)
    steps(model, opt, sched, grads[10:]); steps(model2, opt2, sched2, grads[10:])
    # same ops, same order
    for p, q in zip(model.parameters(), model2.parameters()): assert torch.equal(p.value, q.value)


@pytest.mark.parity
def test_decoder_checkpoint_round_trip(tmp_path):
    "save_checkpoint / load_checkpoint restore a decoder and its AdamW state: the next step is bit-equal."
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    from benchmarks.seq import DecoderLM
    from minidl import AdamW, load_checkpoint, save_checkpoint
    ce, idx = LossCrossEntropy(), torch.randint(0, 11, (4, 7), generator=torch.Generator().manual_seed(3))
    def step(m, opt):
        opt.zero_grad(); loss = ce(m(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
        m.backward(ce.backward().view(4, 6, 11)); opt.step()
        return loss
    m = DecoderLM(11, 6, 8, 2, 2, 16, generator=torch.Generator().manual_seed(0)); opt = AdamW(m.parameters(), lr=1e-2)
    step(m, opt)
    save_checkpoint(tmp_path / 'ck.pt', m, opt, epoch=1)
    m2 = DecoderLM(11, 6, 8, 2, 2, 16, generator=torch.Generator().manual_seed(5))
    opt2 = AdamW(m2.parameters(), lr=1e-2)
    assert load_checkpoint(tmp_path / 'ck.pt', m2, opt2) == {'epoch': 1}
    assert torch.equal(step(m, opt), step(m2, opt2))  # the same operations on the same numbers
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


gen = torch.Generator().manual_seed(0)
X = torch.rand(200, 2, generator=gen) * 2 - 1
Y = ((X ** 2).sum(1, keepdim=True) < 0.5).float()
BATCH, EPOCHS, N_EPOCHS = 25, 4, 2
TOTAL = EPOCHS * len(X) // BATCH


OPTIMIZERS = {'sgd': lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
              'sgd-decay': lambda ps: SGD(ps, lr=0.1, decay=0.01),
              'adam': lambda ps: Adam(ps, lr=0.01, weight_decay=1e-3),
              'adamw': lambda ps: AdamW(ps, lr=0.01, amsgrad=True)}


SCHEDULES = {'none': None, 'step': lambda o: StepLR(o, 7, 0.5), 'cosine': lambda o: CosineAnnealingLR(o, TOTAL),
             'onecycle': lambda o: OneCycleLR(o, 0.05, TOTAL)}


def fresh(seed, opt_name, sched_name):
    g = torch.Generator().manual_seed(seed)
    layers = [Linear(2, 12, generator=g), ReLU(), Dropout(0.2),
              Linear(12, 12, generator=g), Tanh(), Linear(12, 1, generator=g), Sigmoid()]
    model = Sequential(*layers)
    opt = OPTIMIZERS[opt_name](model.parameters())
    sched = SCHEDULES[sched_name](opt) if SCHEDULES[sched_name] else None
    return model, opt, sched, torch.Generator().manual_seed(1)


def train(model, opt, sched, shuffler, epochs):
    loss_fn = LossBCE()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=shuffler).split(BATCH):
            xb = X[idx] + 0.01 * torch.randn(len(idx), 2)  # global random state, as Dropout uses it
            opt.zero_grad()
            loss_fn(model(xb), Y[idx])
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            if sched: sched.step()


# every optimizer and every schedule, in five pairs
@pytest.mark.parametrize('opt_name,sched_name', [('sgd', 'onecycle'), ('sgd-decay', 'none'), ('adam', 'step'),
                                                 ('adamw', 'cosine'), ('adam', 'onecycle')])
def test_resume_is_exact(tmp_path, opt_name, sched_name):
    torch.manual_seed(5)
    model, opt, sched, shuffler = fresh(0, opt_name, sched_name)
    train(model, opt, sched, shuffler, EPOCHS)
    straight = [p.value.clone() for p in model.parameters()], opt.state_dict(), torch.get_rng_state()

    torch.manual_seed(5)
    model, opt, sched, shuffler = fresh(0, opt_name, sched_name)
    train(model, opt, sched, shuffler, N_EPOCHS)
    save_checkpoint(tmp_path / 'c.pt', model, opt, sched, epoch=N_EPOCHS, generators={'shuffle': shuffler}, tag='mid')

    torch.manual_seed(77)
    model, opt, sched, shuffler = fresh(9, opt_name, sched_name)
    info = load_checkpoint(tmp_path / 'c.pt', model, opt, sched, generators={'shuffle': shuffler})
    assert info == {'epoch': N_EPOCHS, 'tag': 'mid'}
    train(model, opt, sched, shuffler, EPOCHS - N_EPOCHS)
    for p, q in zip(model.parameters(), straight[0]): assert torch.equal(p.value, q)
    sd = opt.state_dict()
    assert sd['step_count'] == straight[1]['step_count'] == TOTAL and sd['param_groups'] == straight[1]['param_groups']
    assert sd['state'].keys() == straight[1]['state'].keys()
    for i, bufs in sd['state'].items():  # torch's layout: parameter index -> buffers
        assert bufs.keys() == straight[1]['state'][i].keys()
        for k, a in bufs.items(): assert torch.equal(a, straight[1]['state'][i][k])
    assert torch.equal(torch.get_rng_state(), straight[2])


def test_file_is_plain_data(tmp_path):
    model, opt, sched, shuffler = fresh(0, 'adamw', 'onecycle')
    train(model, opt, sched, shuffler, 1)
    path = save_checkpoint(tmp_path / 'c.pt', model, opt, sched, epoch=1, generators=shuffler, history=[0.5, 0.25],
                           cfg={'lr': 0.01, 'name': 'run', 'sizes': (2, 12, 1)}, best=torch.tensor(0.9))
    ck = torch.load(path, weights_only=True)
    assert ck['format'] == 'minidl.checkpoint' and ck['epoch'] == 1
    assert ck['extra']['history'] == [0.5, 0.25] and ck['extra']['cfg']['sizes'] == (2, 12, 1)
    assert list(ck['model']) == list(model.state_dict())
    assert set(ck['optimizer']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'}  # torch's layout
    assert ck['scheduler']['type'] == 'OneCycleLR' and ck['rng']['generators'].keys() == {'generator'}


def test_crash_mid_save_keeps_previous(tmp_path, monkeypatch):
    model, opt, sched, _ = fresh(0, 'adam', 'step')
    path = save_checkpoint(tmp_path / 'c.pt', model, opt, sched, epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save({'partial': torch.zeros(1000)}, f)
        raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(OSError, match='No space left'): save_checkpoint(path, model, opt, sched, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['c.pt']  # no temporary file left
    assert load_checkpoint(path, model, opt, sched)['epoch'] == 1


def test_invalid_extra_is_refused_before_writing(tmp_path):
    model = fresh(0, 'sgd', 'none')[0]
    with pytest.raises(TypeError, match="extra\\['fn'\\] is a function"):
        save_checkpoint(tmp_path / 'c.pt', model, fn=lambda: 0)
    with pytest.raises(TypeError, match='generators'): save_checkpoint(tmp_path / 'c.pt', model, generators='g')
    assert not any(tmp_path.iterdir())


def test_failed_loads_change_nothing(tmp_path):
    model, opt, sched, shuffler = fresh(0, 'adam', 'cosine')
    train(model, opt, sched, shuffler, 1)
    good = save_checkpoint(tmp_path / 'good.pt', model, opt, sched, generators={'shuffle': shuffler})
    train(model, opt, sched, shuffler, 1)  # move on, so that a load would change things
    other = Sequential(Linear(2, 5), ReLU(), Linear(5, 1), Sigmoid())
    other_opt = Adam(other.parameters())
    wrong_arch = save_checkpoint(
        tmp_path / 'arch.pt',
        other,
        other_opt,
        CosineAnnealingLR(other_opt, 5),
        generators={'shuffle': torch.Generator()},
    )
    sgd_model, sgd_opt, sgd_sched, _ = fresh(0, 'sgd', 'step')
    wrong_opt = save_checkpoint(tmp_path / 'opt.pt', sgd_model, sgd_opt, sgd_sched)
    truncated = tmp_path / 'trunc.pt'; truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / 'garbage.pt'; garbage.write_text('not a checkpoint')
    bare = tmp_path / 'bare.pt'; torch.save(model.state_dict(), bare)
    ck = torch.load(good, weights_only=True); ck['rng']['torch'] = torch.zeros(3, dtype=torch.uint8)
    bad_rng = tmp_path / 'rng.pt'; torch.save(ck, bad_rng)
    ck = torch.load(good, weights_only=True); ck['optimizer']['state'][0]['exp_avg'] = torch.zeros(7)
    bad_buf = tmp_path / 'buf.pt'; torch.save(ck, bad_buf)

    before = snapshot(model, opt, sched, shuffler, torch.get_rng_state())
    cases = [
        (wrong_arch, {}, 'shape'),
        (wrong_opt, {}, "'SGD' optimizer"),
        (truncated, {}, 'not a readable checkpoint'),
        (garbage, {}, 'not a readable checkpoint'),
        (bare, {}, 'not a minidl checkpoint'),
        (bad_rng, {}, 'not a valid random state'),
        (bad_buf, {}, 'exp_avg[0] is shape (7)'),
        (good, {'generators': {'other': shuffler}}, "no state for the generator 'other'"),
        (tmp_path / 'missing.pt', {}, 'no checkpoint file'),
    ]
    for path, kw, msg in cases:
        with pytest.raises(
            (ValueError, RuntimeError, FileNotFoundError),
            match=msg.replace('(', '\\(').replace(')', '\\)').replace('[', '\\[').replace(']', '\\]'),
        ):
            load_checkpoint(path, model, opt, sched, **{'generators': {'shuffle': shuffler}, **kw})
        assert_unchanged(before, snapshot(model, opt, sched, shuffler, torch.get_rng_state()))
    no_schedule = save_checkpoint(tmp_path / 'noschedule.pt', model, opt)
    with pytest.raises(ValueError, match='holds no schedule state'): load_checkpoint(no_schedule, model, opt, sched)
    assert_unchanged(before, snapshot(model, opt, sched, shuffler, torch.get_rng_state()))


def test_optimizer_state_follows_the_parameters_dtype(tmp_path):
    "A state saved from float32 parameters loads into float64 ones (cast, as torch does), and continues identically."
    p32 = minidl.Parameter(torch.randn(3, 4))
    opt = Adam([p32]); p32.grad += 1.0; opt.step()
    p64 = minidl.Parameter(p32.value.double())
    opt64 = Adam([p64]); opt64.load_state_dict(opt.state_dict())
    assert opt64.state['exp_avg'][0].dtype == torch.float64 and opt64.step_count == 1
    assert opt64.state['exp_avg'][0] is not opt.state['exp_avg'][0]
    p64.grad += 1.0; opt64.step()
    assert opt64.step_count == 2


def torch_twin(bn=False):
    layers = [nn.Linear(2, 25), nn.ReLU()] + ([nn.BatchNorm1d(25)] if bn else []) + [
        nn.Linear(25, 25), nn.Tanh(), nn.Linear(25, 1), nn.Sigmoid()]
    return nn.Sequential(*layers).double()


def minidl_twin(bn=False):
    layers = (
        [Linear(2, 25), ReLU()]
        + ([BatchNorm1d(25)] if bn else [])
        + [Linear(25, 25), Tanh(), Linear(25, 1), Sigmoid()]
    )
    return Sequential(*layers).to(dtype=torch.float64)


@pytest.mark.parametrize('bn', [False, True])
def test_state_dicts_exchange_with_torch_nn(tmp_path, bn):
    x = torch.rand(32, 2, dtype=torch.float64)
    ours, theirs = minidl_twin(bn), torch_twin(bn)
    if bn:  # non-trivial running statistics on both sides
        for _ in range(3): ours.train()(torch.randn(16, 2, dtype=torch.float64))
        with torch.no_grad():
            for _ in range(2): theirs.train()(torch.randn(16, 2, dtype=torch.float64))
    # minidl -> torch, through a checkpoint file
    sd = torch.load(save_checkpoint(tmp_path / 'm.pt', ours), weights_only=True)['model']
    theirs.load_state_dict(sd)
    ours.eval(); theirs.eval()
    # minidl.testing's policy: three or four layers reducing over up to 25 inputs
    with torch.no_grad(): assert_close(ours(x), theirs(x), n=2 + 25 + 25, cond=4)
    # torch -> minidl
    theirs2 = torch_twin(bn).eval()
    if bn:
        with torch.no_grad(): theirs2.train()(torch.randn(16, 2, dtype=torch.float64)); theirs2.eval()
    ours.load_state_dict(theirs2.state_dict())
    with torch.no_grad(): assert_close(ours(x), theirs2(x), n=2 + 25 + 25, cond=4)
    assert list(ours.state_dict()) == list(theirs2.state_dict())


def test_checkpoint_after_the_last_schedule_step_loads(tmp_path):
    "PyTorch's linear one-cycle ends on a slightly negative rate (never used): a checkpoint taken then still loads."
    model, opt, _, _ = fresh(0, 'sgd', 'none')
    sched = OneCycleLR(opt, 0.05, 8, anneal_strategy='linear')
    for _ in range(8): opt.step(); sched.step()
    assert opt.lr < 0
    path = save_checkpoint(tmp_path / 'end.pt', model, opt, sched)
    model2, opt2, _, _ = fresh(1, 'sgd', 'none')
    sched2 = OneCycleLR(opt2, 0.05, 8, anneal_strategy='linear')
    load_checkpoint(path, model2, opt2, sched2)
    assert (opt2.lr, opt2.momentum, sched2.last_epoch) == (opt.lr, opt.momentum, 8)
    with pytest.raises(ValueError, match='tried to step 9 times'): sched2.step()
    with pytest.raises(ValueError, match='the learning rate is -'): opt2.step()


def test_values_that_torch_load_would_refuse_are_refused_before_writing(tmp_path):
    "subclasses of the plain types pass isinstance but not torch.load(weights_only=True): the good file stays"
    import collections
    import enum

    import numpy as np
    m, o, s = _ckpt_setup()
    p = tmp_path/'c.pt'
    save_checkpoint(p, m, o, s, epoch=1)
    good = p.read_bytes()
    Pair = collections.namedtuple('Pair', 'a b')
    Colour = enum.IntEnum('Colour', 'RED')
    for bad, name in [(np.float64(0.9), 'numpy.float64'), (np.bool_(True), 'numpy.bool'), (Pair(1, 2), 'Pair'),
                      (collections.defaultdict(int), 'collections.defaultdict'), (Colour.RED, 'Colour')]:
        assert_clear_error(TypeError, name, save_checkpoint, p, m, o, s, best=bad)
    o.param_groups[0]['lr'] = np.float64(0.05)  # a rate a hand-written schedule set as a NumPy number
    assert_clear_error(TypeError, "optimizer['param_groups'][0]['lr'] is a numpy.float64", save_checkpoint, p, m, o)
    assert p.read_bytes() == good and sorted(f.name for f in tmp_path.iterdir()) == ['c.pt']
    o.param_groups[0]['lr'] = 0.05
    save_checkpoint(p, m, o, s, best=0.9, pairs=[(1, 2)], table={'a': [1.0]})
    m2, o2, s2 = _ckpt_setup()
    assert load_checkpoint(p, m2, o2, s2)['best'] == 0.9


def test_a_tensor_subclass_in_extra_is_refused_before_the_previous_checkpoint_is_replaced(tmp_path):
    "torch.load(weights_only=True) refuses a tensor subclass: written, the checkpoint could not be read back."
    class Tagged(torch.Tensor): pass
    p = tmp_path / 'ck.pt'
    model = M.Sequential(M.Linear(2, 1))
    save_checkpoint(p, model)
    good = p.read_bytes()
    with pytest.raises(TypeError, match=r"stats.* is a .*Tagged, a subclass of torch.Tensor"):
        save_checkpoint(p, model, stats=torch.ones(2).as_subclass(Tagged))
    assert p.read_bytes() == good
    save_checkpoint(p, model, kept=nn.Parameter(torch.ones(2)))  # torch's Parameter itself: read back by torch.load
    assert torch.equal(torch.load(p, weights_only=True)['extra']['kept'], torch.ones(2))


def test_a_checkpoint_of_another_version_and_an_empty_file_are_told_as_such(tmp_path):
    model = M.Sequential(M.Linear(2, 1))
    save_checkpoint(tmp_path/'v1.pt', model)
    ck = torch.load(tmp_path/'v1.pt', weights_only=True); ck['version'] = 2
    torch.save(ck, tmp_path/'v2.pt')
    (tmp_path/'empty.pt').write_bytes(b'')
    before = snapshot(model)
    assert_clear_error(ValueError, 'a minidl checkpoint of version 2, and this minidl reads version 1',
                       load_checkpoint, tmp_path/'v2.pt', model)
    assert_clear_error(ValueError, 'EOFError: the file is empty or ends too early', load_checkpoint,
                       tmp_path/'empty.pt', model)
    assert_unchanged(before, snapshot(model))
