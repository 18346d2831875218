"""Checkpoints: exact resume (shuffling, global random state, Dropout when it exists, every optimizer and schedule),
files readable with weights_only=True, atomic writes, all-or-nothing loads, and state dicts exchanged with torch.nn."""
import pytest
import torch
import torch.nn as nn

import minidl
from minidl import (Linear, ReLU, Tanh, Sigmoid, Sequential, LossBCE, SGD, Adam, AdamW, StepLR, CosineAnnealingLR,
                    OneCycleLR, save_checkpoint, load_checkpoint)
from minidl.testing import assert_close

Dropout = getattr(minidl, 'Dropout', None)  # written by another helper; included once it is on main
BatchNorm1d = getattr(minidl, 'BatchNorm1d', None)

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
    layers = [Linear(2, 12, generator=g), ReLU()] + ([Dropout(0.2)] if Dropout else []) + [
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
            opt.zero_grad(); loss_fn(model(xb), Y[idx]); model.backward(loss_fn.backward(), input_grad=False); opt.step()
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
    with pytest.raises(TypeError, match="extra\\['fn'\\] is a function"): save_checkpoint(tmp_path / 'c.pt', model, fn=lambda: 0)
    with pytest.raises(TypeError, match='generators'): save_checkpoint(tmp_path / 'c.pt', model, generators='g')
    assert not any(tmp_path.iterdir())


def snapshot(model, opt, sched, shuffler):
    return ([p.value.clone() for p in model.parameters()], opt.state_dict()['step_count'],
            {k: [t.clone() for t in v] for k, v in opt.state.items()}, opt.lr, sched.state_dict(),
            torch.get_rng_state(), shuffler.get_state())


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor): assert torch.equal(x, y)
        elif isinstance(x, list): assert_same(x, y)
        elif isinstance(x, dict): assert x.keys() == y.keys(); assert_same(list(x.values()), list(y.values()))
        else: assert x == y


def test_failed_loads_change_nothing(tmp_path):
    model, opt, sched, shuffler = fresh(0, 'adam', 'cosine')
    train(model, opt, sched, shuffler, 1)
    good = save_checkpoint(tmp_path / 'good.pt', model, opt, sched, generators={'shuffle': shuffler})
    train(model, opt, sched, shuffler, 1)  # move on, so that a load would change things
    other = Sequential(Linear(2, 5), ReLU(), Linear(5, 1), Sigmoid())
    other_opt = Adam(other.parameters())
    wrong_arch = save_checkpoint(tmp_path / 'arch.pt', other, other_opt, CosineAnnealingLR(other_opt, 5), generators={'shuffle': torch.Generator()})
    sgd_model, sgd_opt, sgd_sched, _ = fresh(0, 'sgd', 'step')
    wrong_opt = save_checkpoint(tmp_path / 'opt.pt', sgd_model, sgd_opt, sgd_sched)
    truncated = tmp_path / 'trunc.pt'; truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / 'garbage.pt'; garbage.write_text('not a checkpoint')
    bare = tmp_path / 'bare.pt'; torch.save(model.state_dict(), bare)
    ck = torch.load(good, weights_only=True); ck['rng']['torch'] = torch.zeros(3, dtype=torch.uint8)
    bad_rng = tmp_path / 'rng.pt'; torch.save(ck, bad_rng)
    ck = torch.load(good, weights_only=True); ck['optimizer']['state'][0]['exp_avg'] = torch.zeros(7)
    bad_buf = tmp_path / 'buf.pt'; torch.save(ck, bad_buf)

    before = snapshot(model, opt, sched, shuffler)
    cases = [(wrong_arch, {}, 'shape'), (wrong_opt, {}, "'SGD' optimizer"), (truncated, {}, 'not a readable checkpoint'),
             (garbage, {}, 'not a readable checkpoint'), (bare, {}, 'not a minidl checkpoint'),
             (bad_rng, {}, 'not a valid random state'), (bad_buf, {}, 'exp_avg[0] is shape (7)'),
             (good, {'generators': {'other': shuffler}}, "no state for the generator 'other'"),
             (tmp_path / 'missing.pt', {}, 'no checkpoint file')]
    for path, kw, msg in cases:
        with pytest.raises((ValueError, RuntimeError, FileNotFoundError), match=msg.replace('(', '\\(').replace(')', '\\)').replace('[', '\\[').replace(']', '\\]')):
            load_checkpoint(path, model, opt, sched, **{'generators': {'shuffle': shuffler}, **kw})
        assert_same(snapshot(model, opt, sched, shuffler), before)
    no_schedule = save_checkpoint(tmp_path / 'noschedule.pt', model, opt)
    with pytest.raises(ValueError, match='holds no schedule state'): load_checkpoint(no_schedule, model, opt, sched)
    assert_same(snapshot(model, opt, sched, shuffler), before)


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
    layers = [Linear(2, 25), ReLU()] + ([BatchNorm1d(25)] if bn else []) + [Linear(25, 25), Tanh(), Linear(25, 1), Sigmoid()]
    return Sequential(*layers).to(dtype=torch.float64)


@pytest.mark.parametrize('bn', [False, pytest.param(True, marks=pytest.mark.skipif(BatchNorm1d is None, reason='no BatchNorm1d yet'))])
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
