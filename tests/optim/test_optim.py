"""`minidl.optim`: the torch-shaped namespace."""
import minidl


def test_namespace_imports():
    import minidl.optim.lr_scheduler as lrs
    from minidl import optim as o
    from minidl.optim import Optimizer
    from minidl.optim.lr_scheduler import LRScheduler
    from minidl.optim.lr_scheduler import OneCycleLR as O
    from minidl.optim.lr_scheduler import StepLR as S
    assert (o.SGD, o.Adam, o.AdamW, o.Muon, o.Optimizer) == (minidl.SGD, minidl.Adam, minidl.AdamW, minidl.Muon,
                                                         minidl.Optimizer)
    assert o.lr_scheduler is lrs and o.lr_scheduler.OneCycleLR is O is minidl.OneCycleLR and S is minidl.StepLR
    assert issubclass(S, LRScheduler) and issubclass(o.SGD, Optimizer)
    assert set(o.__all__) == {'Optimizer', 'SGD', 'Adam', 'AdamW', 'Muon', 'lr_scheduler'}
    for name in ('SGD', 'Adam', 'AdamW', 'Muon', 'newton_schulz', 'Optimizer', 'StepLR', 'CosineAnnealingLR',
                 'OneCycleLR', 'LRScheduler'):
        assert name in minidl.__all__
