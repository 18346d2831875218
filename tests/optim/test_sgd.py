"""SGD against torch.optim.SGD over every combination of momentum, dampening, Nesterov and weight decay."""
import pytest
import torch
from helpers import EXAMPLES, run_both, seeds, unit, widths
from hypothesis import given
from hypothesis import strategies as st

import minidl
from minidl import SGD

pytestmark = pytest.mark.parity  # rerun by CI under other CPU kernels and thread counts (.ci/run)


lrs = st.floats(1e-3, 0.3)


# every combination of SGD's options: momentum off/on, dampening, nesterov, weight decay
SGD_COMBOS = [dict(momentum=m, dampening=d, nesterov=n, weight_decay=w)
              for m in (False, True) for d in (False, True) for n in (False, True) for w in (False, True)
              if not (n and (not m or d)) and not (d and not m)]


@pytest.mark.parametrize('combo', SGD_COMBOS, ids=lambda c: '-'.join(k for k, v in c.items() if v) or 'plain')
@EXAMPLES
@given(seed=seeds, widths=widths, lr=lrs, momentum=unit(0.1, 0.99), dampening=unit(0.05, 0.9), wd=unit(1e-4, 0.1))
def test_sgd(combo, seed, widths, lr, momentum, dampening, wd):
    kw = dict(
        lr=lr,
        momentum=momentum if combo['momentum'] else 0.0,
        dampening=dampening if combo['dampening'] else 0.0,
        nesterov=combo['nesterov'],
        weight_decay=wd if combo['weight_decay'] else 0.0,
    )
    run_both(seed, widths, lambda ps: SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


def test_positional_arguments_are_in_torchs_order():
    "SGD(params, lr, momentum, dampening, weight_decay, nesterov), as torch.optim.SGD; minidl's decay by name only"
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    ours = [minidl.Parameter(torch.ones(2, dtype=torch.float64))]
    o, t = SGD(ours, 0.1, 0.9, 0.0, 0.01, True), torch.optim.SGD([p], 0.1, 0.9, 0.0, 0.01, True)
    for _ in range(3):
        ours[0].grad.fill_(1.0); p.grad = torch.ones(2, dtype=torch.float64); o.step(); t.step()
    assert torch.equal(ours[0].value, p.detach())
    with pytest.raises(TypeError, match='positional'): SGD(ours, 0.1, 0.9, 0.0, 0.0, False, 1e-3)
