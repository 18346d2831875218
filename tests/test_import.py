"""Importing and using minidl leaves torch's global state alone, and the package holds no autograd or torch.nn code."""
import ast
import math
import pathlib
import subprocess
import sys

import pytest
import torch

import minidl

PKG = pathlib.Path(minidl.__file__).parent


def test_import_has_no_side_effects():
    code = """
import torch
def state(): return (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
                    torch.random.get_rng_state())
before = state()
import minidl
from minidl import *
after = state()
assert before[:3] == after[:3], (before[:3], after[:3])
assert torch.equal(before[3], after[3]), 'import changed the global RNG state'
gen = lambda seed: torch.Generator().manual_seed(seed)
m = Sequential(Linear(2, 3, generator=gen(0)), ReLU(), Linear(3, 1, generator=gen(1)), Sigmoid())
loss = LossBCE()
opt = SGD(m.parameters(), lr=0.1, decay=0.01)
x = torch.rand(4, 2, generator=gen(2))
opt.zero_grad(); l = loss(m(x), torch.ones(4, 1)); m.backward(loss.backward()); opt.step()
assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32 and torch.get_num_threads() == before[2]
assert torch.equal(before[3], torch.random.get_rng_state()), 'minidl with explicit generators touched the global RNG'
print('ok')
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


BANNED_MODULES = ('torch.nn', 'torch.autograd', 'torch.ops', 'torch.func', 'torch._C', 'functorch')
BANNED_ATTRS = {'set_grad_enabled', 'no_grad', 'requires_grad_', 'enable_grad', 'inference_mode', 'ops', 'aten', '_nn'}


def _is_aten_backward(name: str) -> bool:
    ("True for the name of one of PyTorch's derivative operators (`threshold_backward`, "
     "`binary_cross_entropy_backward`, ...).")
    return name.endswith('_backward') and hasattr(torch.ops.aten, name)


def banned_uses(source: str) -> list[str]:
    ("Every use of PyTorch's autograd, torch.nn, torch.func or its operator library (ATen `*_backward` "
     "kernels) in `source`.")
    tree, found = ast.parse(source), []
    aliases = {'torch'}  # names bound to the torch module (`import torch as T`)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == 'torch' and a.asname: aliases.add(a.asname)
    prefixes = tuple(m.replace('torch', al, 1) for al in aliases for m in BANNED_MODULES if m.startswith('torch'))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
            if isinstance(node, ast.ImportFrom): mods += [f"{node.module}.{a.name}" for a in node.names]
            found += [f"import {m}" for m in mods if m.startswith(BANNED_MODULES)]
            found += [f"import {a.name}" for a in node.names if _is_aten_backward(a.name)]
        elif isinstance(node, ast.Attribute):
            text = ast.unparse(node)
            if text.startswith(prefixes) or node.attr in BANNED_ATTRS or _is_aten_backward(node.attr):
                found.append(text)
        elif isinstance(node, ast.Name) and _is_aten_backward(node.id): found.append(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_aten_backward(node.value):
            found.append(repr(node.value))  # getattr(..., 'threshold_backward')
    return found


def test_scanner_catches_every_banned_use():
    for bad in [
        'import torch.nn as nn',
        'from torch.nn import functional',
        'from torch import nn',
        'from torch import autograd',
        'torch.nn.functional.relu(x)',
        'torch.autograd.grad(y, x)',
        'torch.ops.aten.threshold_backward(g, y, 0)',
        '_aten = torch.ops.aten',
        'torch.func.grad(f)',
        'import torch as T\nT.ops.aten.mm',
        'from torch.ops import aten',
        'x.requires_grad_()',
        'with torch.no_grad(): pass',
        'torch._C._nn.binary_cross_entropy_backward(g, p, t)',
        'aten.sigmoid_backward(g, y)',
        "getattr(ops, 'tanh_backward')(g, y)",
        'from functorch import vmap',
    ]:
        assert banned_uses(bad), bad
    for fine in ['self._save_for_backward(y)', 'm.backward(g)', 'torch.addmm(b, x, w.t())', '"like torch.nn.Linear"',
                 'y.masked_fill(y <= 0, 0)']:
        assert not banned_uses(fine), fine


# PyTorch's side of the comparisons: it runs torch.autograd by design (tests and notebooks only)
ORACLE = PKG / 'testing.py'


def imports_of(source: str) -> set[str]:
    "The modules that `source` imports (relative imports as written: '.testing')."
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import): found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = '.' * node.level + (node.module or '')
            found.add(mod); found.update(f"{mod}.{a.name}" if node.module else f"{mod}{a.name}" for a in node.names)
    return found


def test_package_uses_no_autograd_nor_torch_nn_nor_aten_backward():
    ("Every derivative in minidl is written by hand: the package never calls autograd, torch.nn, torch.func "
     "or torch.ops.")
    files = sorted(f for f in PKG.rglob('*.py') if f != ORACLE)
    assert len(files) >= 10 and ORACLE.exists()
    bad = {str(f.relative_to(PKG)): uses for f in files if (uses := banned_uses(f.read_text()))}
    assert not bad, bad
    # the oracle stays out of the library: no module imports it
    users = [
        str(f.relative_to(PKG))
        for f in files
        if {'minidl.testing', '.testing', '..testing'} & imports_of(f.read_text())
    ]
    assert not users, users
    assert {'.testing', 'minidl.testing'} <= imports_of('from . import testing\nimport minidl.testing')


def test_public_api_is_exposed_at_top_level():
    for name in ['Parameter', 'Module', 'Linear', 'ReLU', 'Tanh', 'Sigmoid', 'LossMSE', 'LossBCE', 'MSELoss', 'BCELoss',
                 'SGD', 'Sequential', 'gradcheck']:
        assert name in minidl.__all__ and hasattr(minidl, name), name
    assert minidl.MSELoss is minidl.LossMSE and minidl.BCELoss is minidl.LossBCE


@pytest.mark.parity
def test_exports():
    import sys
    assert minidl.nn.init is sys.modules['minidl.nn.init']
    for name in [
        'LossCrossEntropy',
        'CrossEntropyLoss',
        'Dropout',
        'BatchNorm1d',
        'BatchNorm2d',
        'Softmax',
        'LogSoftmax',
        'LeakyReLU',
        'GELU',
        'kaiming_normal_',
        'calculate_gain',
    ]:
        assert name in minidl.__all__ and hasattr(minidl, name), name
    assert minidl.CrossEntropyLoss is minidl.LossCrossEntropy
    assert math.isclose(minidl.calculate_gain('relu'), math.sqrt(2))
