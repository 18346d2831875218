"""Importing and using minidl leaves torch's global state alone, and the package holds no autograd or torch.nn code."""
import ast, pathlib, subprocess, sys

import minidl

PKG = pathlib.Path(minidl.__file__).parent


def test_import_has_no_side_effects():
    code = """
import torch
before = (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(), torch.random.get_rng_state().clone())
import minidl
from minidl import *
after = (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(), torch.random.get_rng_state())
assert before[:3] == after[:3], (before[:3], after[:3])
assert torch.equal(before[3], after[3]), 'import changed the global RNG state'
m = Sequential(Linear(2, 3, generator=torch.Generator().manual_seed(0)), ReLU(), Linear(3, 1, generator=torch.Generator().manual_seed(1)), Sigmoid())
loss = LossBCE()
opt = SGD(m.parameters(), lr=0.1, decay=0.01)
x = torch.rand(4, 2, generator=torch.Generator().manual_seed(2))
opt.zero_grad(); l = loss(m(x), torch.ones(4, 1)); m.backward(loss.backward()); opt.step()
assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32 and torch.get_num_threads() == before[2]
assert torch.equal(before[3], torch.random.get_rng_state()), 'using minidl with explicit generators touched the global RNG'
print('ok')
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


CORE = ['core', 'gradcheck', 'linear', 'activations', 'losses', 'sequential', 'optim']


def test_core_modules_use_no_autograd_nor_torch_nn():
    for name in CORE:
        tree = ast.parse((PKG / f'{name}.py').read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
                for mod in mods: assert not mod.startswith(('torch.nn', 'torch.autograd')), (name, mod)
            if isinstance(node, ast.Attribute):
                text = ast.unparse(node)
                assert not text.startswith(('torch.nn', 'torch.autograd')), (name, text)
                assert node.attr not in ('set_grad_enabled', 'no_grad', 'requires_grad_', 'enable_grad'), (name, text)


def test_public_api_is_exposed_at_top_level():
    for name in ['Parameter', 'Module', 'Linear', 'ReLU', 'Tanh', 'Sigmoid', 'LossMSE', 'LossBCE', 'MSELoss', 'BCELoss',
                 'SGD', 'Sequential', 'gradcheck']:
        assert name in minidl.__all__ and hasattr(minidl, name), name
    assert minidl.MSELoss is minidl.LossMSE and minidl.BCELoss is minidl.LossBCE
