"""`import minidl.nn as nn`: the namespace, and a torch program run with it."""
from collections import OrderedDict

import pytest
import torch
from helpers import SMALL_PROGRAM

import minidl
import minidl.nn as nn
from minidl.testing import assert_close

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


F64 = torch.float64


def test_nn_namespace():
    for name in ['Linear', 'ReLU', 'Sequential', 'CrossEntropyLoss', 'MSELoss', 'BCELoss', 'Module', 'Parameter',
                 'Conv2d', 'MaxPool2d', 'Flatten', 'Dropout', 'BatchNorm1d', 'Softmax', 'LeakyReLU', 'Tanh', 'Sigmoid']:
        assert getattr(nn, name) is getattr(minidl, name), name
        assert hasattr(torch.nn, name), name
    assert nn.init is minidl.nn.init and callable(nn.init.kaiming_uniform_)
    assert not any(hasattr(nn, n) for n in ('SGD', 'Adam', 'LossMSE', 'Loss'))
    own = {'Residual', 'CausalSelfAttention', 'TransformerBlock', 'GEGLU'}  # minidl's own: torch.nn has no such class
    assert set(nn.__all__) - own <= set(dir(torch.nn))
    for name in ['Embedding', 'LayerNorm', 'GELU'] + sorted(own):
        assert getattr(nn, name) is getattr(minidl, name), name


def test_a_torch_program_with_minidl_nn():
    "A tiny classifier written the torch way; only the backward line differs."
    def program(nn, x, t):
        torch.manual_seed(0)
        model = nn.Sequential(
            OrderedDict(
                [
                    ('fc1', nn.Linear(in_features=4, out_features=16)),
                    ('act', nn.ReLU(inplace=True)),
                    ('fc2', nn.Linear(16, 3)),
                ]
            )
        ).double()
        loss_fn = nn.CrossEntropyLoss(reduction='sum', ignore_index=-100)
        return model, loss_fn
    x, t = torch.randn(8, 4, dtype=F64), torch.tensor([0, 1, 2, -100, 1, 0, 2, 2])
    ours, loss_fn = program(nn, x, t)
    ref, ref_loss_fn = program(torch.nn, x, t)
    loss = loss_fn(ours(x), t); ours.backward(loss_fn.backward())
    loss_ref = ref_loss_fn(ref(x), t); loss_ref.backward()
    assert_close(loss, loss_ref, **SMALL_PROGRAM)
    for (k, p), (k_ref, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert k == k_ref and p.numel() == q.numel() and p.requires_grad == q.requires_grad
        assert_close(p.grad, q.grad, cond=2, **SMALL_PROGRAM)  # two layers
