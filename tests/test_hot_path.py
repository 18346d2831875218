"""The hot path never reads a tensor back to the host: a whole training step (forward, loss, backward, optimizer step)
runs with every way of reading a tensor's value made to fail. On a GPU each such read would be a host-device
synchronisation that stalls the pipeline; on the CPU the test proves there is none."""
import contextlib
import sys
from unittest import mock

import pytest
import torch
from helpers import groups_of, pair

import minidl
import minidl.nn.init as minit
from minidl import (
    GELU,
    SGD,
    Adam,
    AdamW,
    BatchNorm1d,
    BatchNorm2d,
    CausalSelfAttention,
    CosineAnnealingLR,
    Dropout,
    LeakyReLU,
    Linear,
    LogSoftmax,
    LossBCE,
    LossCrossEntropy,
    LossMSE,
    OneCycleLR,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    StepLR,
    Tanh,
)

READS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy')


@contextlib.contextmanager
def no_readback():
    "Make every host read of a tensor's value raise, for the duration of the block."
    def refuse(*args, **kwargs): raise AssertionError('the hot path read a tensor back to the host')
    with contextlib.ExitStack() as stack:
        for name in READS: stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
        yield


def test_no_readback_refuses_reads():
    t = torch.tensor([1.0])
    with no_readback():
        for read in (lambda: t.item(), lambda: bool(t), lambda: float(t), lambda: int(t), lambda: t.tolist(),
                     lambda: (t > 0).any() and 1, lambda: [0][t.long()]):
            with pytest.raises(AssertionError, match='read a tensor back'): read()
    assert t.item() == 1.0  # restored


def _net(out, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Sequential(Linear(2, 8, generator=g, dtype=dtype), ReLU(), Linear(8, 8, generator=g, dtype=dtype), ReLU(),
                      Linear(8, 1, generator=g, dtype=dtype), out)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('out,loss_cls,low', [(Sigmoid, LossBCE, 0.0), (Tanh, LossMSE, -1.0)])
@pytest.mark.parametrize('input_grad', [True, False])
def test_training_step_reads_nothing_back(dtype, out, loss_cls, low, input_grad):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 2, generator=g, dtype=dtype)
    t = torch.where(x.sum(1, keepdim=True) > 1, 1.0, low).to(dtype)
    model, loss_fn = _net(out(), dtype), loss_cls()
    opt = SGD(model.parameters(), lr=0.1, decay=1e-3)
    before = [p.value.clone() for p in model.parameters()]
    with no_readback():
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            model.backward(loss_fn.backward(), input_grad=input_grad)
            opt.step()
    assert loss.shape == () and torch.isfinite(loss).item()
    assert all(not torch.equal(p.value, b) for p, b in zip(model.parameters(), before))  # it did train


def test_invalid_prediction_still_raises_on_cpu():
    "The device-side range check of LossBCE still stops a wrong call on the CPU, with a clear message."
    with pytest.raises(ValueError, match=r'predictions in \[0, 1\].*apply a Sigmoid'):
        LossBCE()(torch.tensor([0.5, 1.5]), torch.ones(2))
    with pytest.raises(ValueError, match=r'targets in \[0, 1\]'):
        LossBCE()(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 2.0]))


F64 = torch.float64


def test_grouped_steps_read_nothing_back():
    "Several groups, a schedule, values written into the groups: still no tensor value read back to the host."
    import contextlib
    ps, _, grads = pair()
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    def refuse(*a, **k): raise AssertionError('read a tensor back to the host')
    with contextlib.ExitStack() as stack:
        for name in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy'):
            stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
        for make in (lambda: SGD(groups_of(ps, [{}, {'lr': 0.01}]), lr=0.1, momentum=0.9, nesterov=True),
                     lambda: Adam(groups_of(ps, [{}, {'betas': (0.8, 0.9)}]), amsgrad=True)):
            opt = make(); s = OneCycleLR(opt, [0.1, 0.05], 10)
            for t in range(4):
                if t == 2: opt.param_groups[1]['lr'] = 0.02
                opt.step(); s.step(); opt.zero_grad(set_to_none=True)


@pytest.mark.parity
def test_hot_path_reads_nothing_back():
    """Forward and backward run on the meta device (shapes only, no data): any .item(), bool(tensor), float(tensor) or
    value-dependent branch would raise there, so this shows the hot path never synchronises with the device."""
    meta = torch.device('meta')
    x, g = torch.randn(8, 6, device=meta), torch.randn(8, 6, device=meta)
    for m in [
        Dropout(0.3),
        Dropout(0.3).eval(),
        Softmax(),
        LogSoftmax(0),
        LeakyReLU(),
        GELU(),
        GELU('tanh'),
        BatchNorm1d(6, device=meta),
        BatchNorm1d(6, momentum=None, device=meta),
        BatchNorm1d(6, device=meta).eval(),
        BatchNorm1d(6, affine=False, track_running_stats=False, device=meta),
    ]:
        assert m(x).device == meta and m.backward(g).shape == x.shape
    x4 = torch.randn(2, 6, 3, 3, device=meta)
    bn = BatchNorm2d(6, momentum=None, device=meta)
    assert bn(x4).device == meta and bn.backward(x4).shape == x4.shape
    t, p = torch.randint(0, 6, (8,), device=meta), torch.rand(8, 6, device=meta)
    for kw in [{}, dict(label_smoothing=0.1), dict(weight=torch.ones(6, device=meta), label_smoothing=0.2)]:
        for target in (t, p):
            ce = LossCrossEntropy(**kw)
            assert ce(x, target).shape == () and ce.backward().shape == x.shape
    w = Parameter(torch.empty(4, 3, device=meta))
    for f in (minit.kaiming_uniform_, minit.kaiming_normal_, minit.xavier_uniform_, minit.xavier_normal_): f(w)


@pytest.mark.parity
def test_decoder_training_step_reads_nothing_back():
    ("Embedding, TransformerBlock (attention with dropout, LayerNorm, GELU), LossCrossEntropy, AdamW: no "
     "host read in a step.")
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    from benchmarks.seq import DecoderLM
    from minidl import AdamW, LossCrossEntropy
    gen = torch.Generator().manual_seed(0)
    model = DecoderLM(11, 6, 8, 2, 2, 16, generator=gen)
    for m in model.modules():  # dropout on: the masks are drawn on the device too
        if isinstance(m, CausalSelfAttention): m.dropout = 0.1
        if isinstance(m, minidl.Dropout): m.p = 0.1
    opt, ce = AdamW(model.parameters(), lr=1e-2), LossCrossEntropy()
    idx = torch.randint(0, 11, (4, 7), generator=gen)
    before = [p.value.clone() for p in model.parameters()]
    with no_readback():
        for _ in range(2):
            opt.zero_grad()
            ce(model(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
            model.backward(ce.backward().view(4, 6, 11))
            opt.step()
    assert all(not torch.equal(p.value, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize('make_opt,make_sched', [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), lambda o: OneCycleLR(o, 0.1, 10)),
    (lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=1e-3), lambda o: CosineAnnealingLR(o, 10)),
    (lambda ps: AdamW(ps), lambda o: StepLR(o, 2))])
def test_steps_read_nothing_back(make_opt, make_sched):
    "zero_grad, step (its first, full check included) and the schedule read no tensor value back to the host."
    import contextlib
    from unittest import mock
    model = Sequential(Linear(2, 8), ReLU(), Linear(8, 1))
    for p in model.parameters(): p.grad += 0.1
    def refuse(*a, **k): raise AssertionError('read a tensor back to the host')
    with contextlib.ExitStack() as stack:
        for name in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy'):
            stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
        opt = make_opt(model.parameters()); sched = make_sched(opt)
        for _ in range(3):
            opt.step(); sched.step(); _ = opt.current_lr
        opt.zero_grad()
    assert opt.step_count == 3
