"""Adam and AdamW against torch.optim, AMSGrad and weight decay included; betas and eps checked when written."""
import pytest
import torch
from helpers import EXAMPLES, groups_of, pair, run_both, seeds, unit, widths
from hypothesis import given
from hypothesis import strategies as st

from minidl import Adam, AdamW
from minidl.testing import assert_unchanged, snapshot

F64 = torch.float64


def test_adam_written_betas_and_eps_checked():
    ps, _, grads = pair()
    opt = Adam(groups_of(ps, [{}, {}]))
    for p, g in zip(ps, grads[0]): p.grad.copy_(g)
    opt.step()
    before = snapshot(ps, opt)
    for key, value, msg in [
        ('betas', (1.0, 0.9), 'two numbers in'),
        ('betas', [0.9], 'two numbers in'),
        ('eps', -1e-8, 'eps'),
        ('amsgrad', 'yes', 'True or False'),
    ]:
        good = opt.param_groups[1][key]
        opt.param_groups[1][key] = value
        with pytest.raises((ValueError, TypeError), match=msg): opt.step()
        opt.param_groups[1][key] = good  # (put back before comparing: the snapshot covers the groups' settings)
        assert_unchanged(before, snapshot(ps, opt))
    opt.param_groups[1]['betas'] = [0.8, 0.99]  # a list, as a user may write it: used as a tuple
    opt.step()
    assert opt.param_groups[1]['betas'] == (0.8, 0.99) and opt.step_count == 2


ADAM_COMBOS = [(cls, ams, w) for cls in ('Adam', 'AdamW') for ams in (False, True) for w in (False, True)]


@pytest.mark.parity
@pytest.mark.parametrize('cls,amsgrad,wd_on', ADAM_COMBOS)
@EXAMPLES
@given(seed=seeds, widths=widths, lr=st.floats(1e-4, 0.05), b1=unit(0.0, 0.95), b2=unit(0.9, 0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 0.0]), wd=unit(1e-4, 0.1), foreach=st.booleans())
def test_adam(cls, amsgrad, wd_on, seed, widths, lr, b1, b2, eps, wd, foreach):
    ours, ref = {'Adam': (Adam, torch.optim.Adam), 'AdamW': (AdamW, torch.optim.AdamW)}[cls]
    kw = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd if wd_on else 0.0, amsgrad=amsgrad)
    run_both(seed, widths, lambda ps: ours(ps, **kw), lambda ps: ref(ps, foreach=foreach, **kw))
