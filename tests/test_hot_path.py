"""The hot path never reads a tensor back to the host: a whole training step (forward, loss, backward, optimizer step)
runs with every way of reading a tensor's value made to fail. On a GPU each such read would be a host-device
synchronisation that stalls the pipeline; on the CPU the test proves there is none."""
import contextlib
from unittest import mock

import pytest
import torch

from minidl import Linear, ReLU, Tanh, Sigmoid, Sequential, LossBCE, LossMSE, SGD

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
