"""The training loop: what it refuses before any step, divergence, multi-class labels, MLP steps against torch."""
import math

import pytest
import torch
from helpers import LRS, STEPS, dims, dtypes, run_both, seeds
from hypothesis import given
from hypothesis import strategies as st

import minidl
import minidl.nn.init as minit
from minidl import (
    GELU,
    SGD,
    AdamW,
    BatchNorm1d,
    Dropout,
    Linear,
    LossBCE,
    LossCrossEntropy,
    OneCycleLR,
    ReLU,
    Sequential,
    Sigmoid,
    StepLR,
    Tanh,
    accuracy,
    train,
)
from minidl.experiments.circle_data import circle_dataset
from minidl.testing import RAW_MESSAGES, assert_clear_error, assert_parity, assert_unchanged, snapshot
from minidl.training import History


def _circle_model(out=1):
    torch.manual_seed(0)
    m = Sequential(Linear(2, 4), ReLU(), Linear(4, out), Sigmoid())
    return m, SGD(m.parameters(), lr=0.1)


XY = circle_dataset(20, seed=0)


@pytest.mark.parametrize('kw, exc, contains', [
    (dict(y_train=XY[1] * 2), ValueError, 'binary labels in {0, 1}'),
    (dict(y_train=torch.full_like(XY[1], math.nan)), ValueError, 'binary labels in {0, 1}'),
    (dict(x_train=torch.full_like(XY[0], math.nan)), ValueError, 'finite values in x_train'),
    (dict(x_test=torch.full_like(XY[0], math.inf), y_test=XY[1]), ValueError, 'finite values in x_test'),
    (dict(x_test=XY[0], y_test=XY[1] * 3), ValueError, 'in y_test'),
    (dict(x_test=XY[0][:, :1], y_test=XY[1]), ValueError, 'same shape as the training points'),
    (dict(x_test=XY[0].double(), y_test=XY[1]), TypeError, 'x_test is torch.float64'),
    (dict(x_test=XY[0]), ValueError, 'both x_test and y_test'),
    (dict(epochs=True), ValueError, 'epochs'), (dict(epochs=2.0), ValueError, 'epochs'),
    (dict(batch_size=0), ValueError, 'batch_size'), (dict(seed=2**64), ValueError, 'seed'),
    (dict(seed=1.5), TypeError, 'seed'), (dict(targets=(0.0, math.nan)), ValueError, 'targets'),
    (dict(sampler=5), TypeError, 'sampler'), (dict(after_backward='x'), TypeError, 'after_backward'),
])
def test_train_refuses_bad_input_before_any_step(kw, exc, contains):
    m, o = _circle_model()
    args = dict(x_train=XY[0], y_train=XY[1], epochs=2, progress=False) | kw
    before = snapshot(m, o)
    assert_clear_error(exc, contains, train, m, LossBCE(), o, **args)
    assert_unchanged(before, snapshot(m, o))


@pytest.mark.parametrize('kw, contains', [
    (dict(targets=(0.0, 1.0, 2.0)), 'targets'),
    (dict(targets=1.0), 'targets'),
    (dict(sampler=lambda e: [torch.tensor([0, 100])]), 'sampler'),
    (dict(sampler=lambda e: None), 'sampler'),
])
def test_train_refuses_bad_targets_and_sampler_clearly(kw, contains):
    m, o = _circle_model()
    before = snapshot(m, o)
    with pytest.raises((ValueError, TypeError)) as info:
        train(m, LossBCE(), o, XY[0], XY[1], epochs=2, progress=False, **kw)
    assert contains in str(info.value) and not any(r in str(info.value) for r in RAW_MESSAGES)
    assert_unchanged(before, snapshot(m, o))


@pytest.mark.parametrize('which', ['model', 'loss'])
def test_train_refuses_foreign_model_and_loss(which):
    m, o = _circle_model()
    model, loss = (lambda x: x, LossBCE()) if which == 'model' else (m, torch.nn.BCELoss())
    with pytest.raises(TypeError) as info: train(model, loss, o, XY[0], XY[1], epochs=1, progress=False)
    assert which in str(info.value) and not any(r in str(info.value) for r in RAW_MESSAGES)


def test_train_refuses_cross_entropy_with_binary_labels():
    m, o = _circle_model()
    assert_clear_error(ValueError, 'LossBCE', train, m, LossCrossEntropy(), o, XY[0], XY[1], epochs=1, progress=False)


def test_train_divergence_is_reported_clearly():
    m, o = _circle_model()
    o.lr = 1e30
    assert_clear_error(minidl.TrainingDiverged, ['training diverged', 'lower the learning rate', 'epoch'],
           train, m, LossBCE(), o, XY[0], XY[1], epochs=5, progress=False)


def test_train_multiclass_labels():
    torch.manual_seed(0)
    x, y = torch.randn(30, 2), torch.randint(0, 3, (30,))
    m = Sequential(Linear(2, 3)); o = SGD(m.parameters(), lr=0.1)
    before = snapshot(m, o)
    assert_clear_error(
        ValueError,
        'class indices in [0, 3)',
        train,
        m,
        LossCrossEntropy(),
        o,
        x,
        y.clone().index_fill_(0, torch.tensor([0]), 3),
        epochs=1,
        progress=False,
    )
    assert_clear_error(
        ValueError,
        'integer class indices',
        train,
        m,
        LossCrossEntropy(),
        o,
        x,
        y.bool(),
        epochs=1,
        progress=False,
    )
    assert_unchanged(before, snapshot(m, o))
    assert len(train(m, LossCrossEntropy(), o, x, y.int(), epochs=2, progress=False)) == 2


def test_accuracy_refuses_non_tensors():
    assert_clear_error(TypeError, 'accuracy', accuracy, [0.5], [1.0])


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=g) * 2 - 1
    return x, (x.sum(1, keepdim=True) > 0).float()


def test_train_refuses_a_schedule_of_another_optimizer():
    x, y = _data()
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())
    opt, other = SGD(model.parameters(), lr=0.1), SGD(Sequential(Linear(2, 1)).parameters(), lr=0.1)
    before = [p.value.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match='drives another optimizer \\(SGD over 2 parameters\\), not the SGD '
                                         'over 4 parameters given'):
        train(model, LossBCE(), opt, x, y, epochs=2, scheduler=StepLR(other, 1), progress=False)
    assert all(torch.equal(a, p.value) for a, p in zip(before, model.parameters())) and opt.step_count == 0
    ref = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # any schedule with an optimizer attribute
    with pytest.raises(ValueError, match='drives another optimizer'):
        train(model, LossBCE(), opt, x, y, epochs=1, scheduler=torch.optim.lr_scheduler.StepLR(ref, 1), progress=False)
    hist = train(model, LossBCE(), opt, x, y, epochs=3, scheduler=StepLR(opt, 1, 0.5), progress=False)
    assert hist.lr == [0.1, 0.05, 0.025]


def test_train_refuses_an_optimizer_of_other_parameters():
    x, y = _data()
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())
    opt = SGD(model.parameters(), lr=0.1)
    again = Sequential(Linear(2, 4), ReLU(), Linear(4, 1), Sigmoid())  # re-created after its optimizer
    before = snapshot(again, opt)
    assert_clear_error(ValueError, ['4 of the 4 parameters the SGD updates are not the model', 're-created'],
                       train, again, LossBCE(), opt, x, y, epochs=2, progress=False)
    assert_unchanged(before, snapshot(again, opt))
    assert_clear_error(ValueError, 'has no parameters', train, Sequential(Sigmoid()), LossBCE(), opt, x, y,
                       epochs=1, progress=False)
    part = SGD(model[0].parameters() + again[2].parameters(), lr=0.1)  # one foreign layer is refused too
    assert_clear_error(ValueError, '2 of the 4 parameters', train, model, LossBCE(), part, x, y, epochs=1,
                       progress=False)
    frozen = SGD(model[2].parameters(), lr=0.1)  # a subset of the model's parameters (the rest frozen) trains
    assert len(train(model, LossBCE(), frozen, x, y, epochs=2, progress=False)) == 2


@pytest.mark.parametrize('loss, opt, exc, contains', [
    (LossBCE, None, TypeError, 'got the class LossBCE: instantiate it'),
    (None, SGD, TypeError, 'got the class SGD: instantiate it'),
    (None, 'torch', TypeError, "PyTorch's optimizer"),
])
def test_train_explains_torch_habits(loss, opt, exc, contains):
    x, y = _data()
    model = Sequential(Linear(2, 1), Sigmoid())
    if opt == 'torch': opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert_clear_error(exc, contains, train, model, loss or LossBCE(), opt or SGD(model.parameters(), lr=0.1), x, y,
                       epochs=1, progress=False)


def test_train_refuses_epochs_past_its_limit():
    m, o = _circle_model()
    assert_clear_error(ValueError, 'epochs to be at most 2**63 - 1', train, m, LossBCE(), o, XY[0], XY[1],
                       epochs=10**30, progress=False)


def test_train_with_reversed_targets_judges_by_the_nearer_target():
    x, y = _data()
    torch.manual_seed(0)
    model = Sequential(Linear(2, 8), ReLU(), Linear(8, 1))
    hist = train(model, minidl.LossMSE(), SGD(model.parameters(), lr=0.1), x, y, x, y, epochs=60,
                 targets=(1.0, 0.0), progress=False)
    out = model(x)
    assert hist.train_accuracy[-1] > 0.8
    assert hist.test_accuracy[-1] == accuracy(-out, y, threshold=-0.5)  # class 1 below the threshold
    m, o = _circle_model()
    assert_clear_error(ValueError, 'two different targets', train, m, minidl.LossMSE(), o, XY[0], XY[1],
                       targets=(0.5, 0.5), epochs=1, progress=False)


@pytest.mark.parametrize('args, exc, contains', [
    ((torch.rand(4, 1), torch.tensor([[1.], [0.], [1.], [0.]]), math.nan), ValueError, 'threshold to be a finite'),
    ((torch.rand(4, 1), torch.tensor([[1.], [0.], [1.], [0.]]), 'a'), ValueError, 'threshold to be a finite'),
    ((torch.rand(4, 1), torch.tensor([[1.], [0.], [1.], [0.]]), None), ValueError, 'threshold to be a finite'),
    ((torch.rand(4, 1), torch.tensor([[7.], [0.], [7.], [0.]])), ValueError, 'binary labels in {0, 1}'),
    ((torch.rand(4, 1), torch.full((4, 1), math.nan)), ValueError, 'binary labels in {0, 1}'),
    ((torch.rand(4, 3), torch.tensor([0, 1, 5, -1])), ValueError, 'class indices in [0, 3)'),
    ((torch.rand(4, 1), torch.tensor([0, 1, 1, 0])), ValueError, 'one output per class'),
    ((torch.rand(4), torch.tensor([1., 0., 1., 0.])), ValueError, 'labels of shape (n, 1)'),
])
def test_accuracy_checks_as_train_does(args, exc, contains):
    assert_clear_error(exc, contains, accuracy, *args)


def test_history_checks_its_lists_and_as_dict_is_json():
    import json
    assert_clear_error(ValueError, 'lists of the same length', History, epoch=[1])
    assert_clear_error(TypeError, 'epoch to be a list', History, epoch=5)
    m, o = _circle_model()
    hist = train(m, LossBCE(), o, XY[0], XY[1], epochs=2, progress=False)  # no test set: NaN test accuracy
    assert json.loads(json.dumps(hist.as_dict(), allow_nan=False))['test_accuracy'] == [None, None]


@pytest.mark.parity
@given(widths=st.lists(st.integers(1, 10), min_size=2, max_size=5), n=dims, dtype=dtypes, seed=seeds,
       act=st.sampled_from(['relu', 'tanh', 'sigmoid']), lr=st.floats(1e-3, 1.0), decay=st.floats(0.0, 0.5))
def test_mlp_training_steps(widths, n, dtype, seed, act, lr, decay):
    "Three full SGD steps (zero_grad, forward, BCE, backward, step) of a random MLP equal torch's."
    gen = torch.Generator().manual_seed(seed)
    Act, act_fn = {'relu': (ReLU, torch.relu), 'tanh': (Tanh, torch.tanh), 'sigmoid': (Sigmoid, torch.sigmoid)}[act]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]): layers += [Linear(a, b, dtype=dtype, generator=gen), Act()]
    model = Sequential(*layers, Linear(widths[-1], 1, dtype=dtype, generator=gen), Sigmoid())
    ref = [p.value.clone().requires_grad_() for p in model.parameters()]
    x = torch.rand(n, widths[0], generator=gen, dtype=dtype)
    y = (torch.rand(n, 1, generator=gen, dtype=dtype) > 0.5).to(dtype)

    def ref_forward(x):
        h = x
        for i in range(0, len(ref) - 2, 2): h = act_fn(h @ ref[i].T + ref[i + 1])
        return torch.sigmoid(h @ ref[-2].T + ref[-1])

    opt, bce = SGD(model.parameters(), lr=lr, decay=decay), LossBCE()
    chain = n + sum(widths)       # the reductions along the longest path, forward and back
    depth = 3 * (len(widths) + 1)  # the error is amplified layer by layer, over three steps
    for t in range(3):
        opt.zero_grad()
        loss = bce(model(x), y)
        model.backward(bce.backward())
        opt.step()
        loss_ref = torch.nn.functional.binary_cross_entropy(ref_forward(x), y)
        grads = torch.autograd.grad(loss_ref, ref)
        with torch.no_grad():
            for p, gr in zip(ref, grads): p -= lr / (1 + decay * t) * gr
        assert_parity(loss, loss_ref.detach(), dtype, n=chain, cond=depth)
    for p, r in zip(model.parameters(), ref): assert_parity(p.value, r.detach(), dtype, n=chain, cond=depth)


@pytest.mark.parity
def test_trains_multiclass_with_training_loop():
    "minidl.training.train with BatchNorm1d, GELU, Dropout, LossCrossEntropy and Kaiming init learns a 3-class problem."
    from minidl import SGD, train
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=gen)
    y = (torch.atan2(x[:, 1], x[:, 0]) + math.pi).mul(3 / (2 * math.pi)).long().clamp(max=2)  # three angular sectors
    lin1, lin2 = Linear(2, 32, generator=gen), Linear(32, 3, generator=gen)
    minit.kaiming_normal_(lin1.weight, nonlinearity='relu', generator=gen)
    model = Sequential(lin1, BatchNorm1d(32), GELU(), Dropout(0.1, generator=gen), lin2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids BLAS threads spinning on a shared machine
    try:
        hist = train(model, LossCrossEntropy(label_smoothing=0.05), SGD(model.parameters(), lr=0.5), x[:500], y[:500],
                     x[500:], y[500:], epochs=30, batch_size=50, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert hist.train_loss[-1] < hist.train_loss[0] and hist.test_accuracy[-1] > 0.9, hist
    assert not model.training or all(m.training for m in model.modules())
    assert model[1].num_batches_tracked == 30 * 10


@pytest.mark.parity
@pytest.mark.parametrize(
    'make_ours,make_ref',
    [
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        ),
        (
            lambda ps: AdamW(ps, lr=0.01, amsgrad=True),
            lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True),
        ),
    ],
    ids=['sgd', 'adamw'],
)
def test_end_to_end_with_autograd(make_ours, make_ref):
    ("Each side computes its own gradients (minidl's backward vs torch.autograd) and takes its own steps, "
     "with a schedule.")
    run_both(
        3,
        [2, 8, 8],
        make_ours,
        make_ref,
        lambda o: OneCycleLR(o, 0.05, STEPS),
        lambda o: LRS.OneCycleLR(o, 0.05, STEPS),
        grads='autograd',
    )


def test_a_batchnorm_without_running_statistics_trains():
    ("it normalises with the batch's statistics even in evaluation mode: the model's first look at the data takes two "
     "points")
    from minidl import BatchNorm1d, LossCrossEntropy, ReLU
    torch.manual_seed(0)
    x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    m = Sequential(Linear(4, 8), BatchNorm1d(8, track_running_stats=False), ReLU(), Linear(8, 2))
    train(m, LossCrossEntropy(), SGD(m.parameters(), lr=0.1), x, y, epochs=1, batch_size=16, progress=False)


def test_the_recorded_loss_is_per_sample_whatever_the_reduction_and_none_is_refused_first():
    "A 'sum' loss is not multiplied by the batch size again; 'none' (no number to record) is refused before training."
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 2, generator=g); y = (x.sum(1, keepdim=True) > 1).float()
    def run(reduction, lr):
        gm = torch.Generator().manual_seed(0)
        m = minidl.Sequential(minidl.Linear(2, 1, generator=gm), minidl.Sigmoid())
        return m, minidl.train(m, minidl.LossBCE(reduction=reduction), minidl.SGD(m.parameters(), lr=lr), x, y,
                               epochs=1, batch_size=10, progress=False)
    # a sum over batches of 10 with a tenth of the rate: the same steps, the same per-sample loss
    (_, mean), (_, summed) = run('mean', 0.01), run('sum', 0.001)
    assert math.isclose(mean.train_loss[0], summed.train_loss[0], rel_tol=1e-6)
    m = minidl.Sequential(minidl.Linear(2, 1), minidl.Sigmoid())
    before = [p.value.clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"reduction='mean' or 'sum'.*reduction='none'"):
        minidl.train(m, minidl.LossBCE(reduction='none'), minidl.SGD(m.parameters(), lr=0.1), x, y, epochs=1,
                     progress=False)
    assert all(torch.equal(a, p.value) for a, p in zip(before, m.parameters()))
