"""The import rule of the package: a module imports only modules of its own part or of lower parts
(Foundations < nn < optimisation and training < scale), and the library never imports `minidl.experiments`.
Read from the source with `ast` (imports inside functions count too); the top-level `__init__`/`__main__` may
import anything."""
import ast
import pathlib

import minidl

PKG = pathlib.Path(minidl.__file__).parent
FOUNDATIONS = {'nn.module', 'gradcheck', 'testing', 'files', '_checks'}
RANK = {'Foundations': 0, 'nn': 1, 'training': 2, 'scale': 3}
TOP = {'__init__', '__main__', '_modidx'}


def module_name(path: pathlib.Path) -> str:
    "`minidl/nn/linear.py` -> 'nn.linear'; a package's `__init__.py` -> the package ('nn', 'optim')."
    parts = list(path.relative_to(PKG).with_suffix('').parts)
    if parts[-1] == '__init__' and len(parts) > 1: parts = parts[:-1]
    return '.'.join(parts)


def part(mod: str) -> str | None:
    "The part of the book a module belongs to; None for the top-level package (free to import anything)."
    if mod in TOP: return None
    if mod in FOUNDATIONS: return 'Foundations'
    if mod == 'nn' or mod.startswith('nn.'): return 'nn'
    if (
        mod == 'optim'
        or mod.startswith('optim.')
        or mod in {'training', 'checkpoint', 'plots', 'diagnostics'}
    ):
        return 'training'
    if mod == 'distributed': return 'scale'
    if mod == 'experiments' or mod.startswith('experiments.'): return 'experiments'
    raise AssertionError(f"minidl.{mod} belongs to no part: add it to tests/test_layering.py")


def imported(path: pathlib.Path, mod: str) -> list[tuple[int, str]]:
    "(line, module inside minidl) for every import of a minidl module in the file, relative imports resolved."
    is_pkg = path.name == '__init__.py'
    here = mod.split('.') if is_pkg else mod.split('.')[:-1]  # the package the file is in ([] for minidl itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                if node.level - 1 > len(here): raise AssertionError(f"{path}:{node.lineno}: relative import "
                                                                    "above the package")
                base = '.'.join(base + ([node.module] if node.module else []))
                names = [f"minidl.{base}" if base else 'minidl']
                if not node.module:
                    names = [
                        f"minidl.{'.'.join(here + [a.name])}" if here else f"minidl.{a.name}"
                        for a in node.names
                    ]
            else:
                names = [node.module]
                if node.module == 'minidl': names = [f"minidl.{a.name}" for a in node.names]
        else: continue
        for n in names:
            if n == 'minidl' or n.startswith('minidl.'):
                out.append((node.lineno, n[len('minidl.') :] if n != 'minidl' else '__init__'))
    return out


def resolve(target: str) -> str:
    "An imported name may be a module or a name inside a module: map it to the deepest existing module."
    parts = target.split('.')
    while parts:
        p = PKG.joinpath(*parts)
        if p.with_suffix('.py').exists() or (p / '__init__.py').exists(): return '.'.join(parts)
        parts = parts[:-1]
    return '__init__'


def violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob('*.py')):
        mod = module_name(path); mine = part(mod)
        if mine is None: continue
        for line, target in imported(path, mod):
            t = resolve(target); theirs = part(t)
            where = f"{path.relative_to(PKG.parent)}:{line}"
            if theirs is None:
                if mine == 'experiments': continue  # the experiments sit above the whole library
                bad.append(f"{where}: minidl.{mod} ({mine}) imports the top-level package minidl, which "
                           "imports every part")
            elif theirs == 'experiments':
                if mine != 'experiments': bad.append(f"{where}: the library module minidl.{mod} ({mine}) "
                                                     f"imports minidl.{t} (experiments)")
            elif mine != 'experiments' and RANK[theirs] > RANK[mine]:
                bad.append(f"{where}: minidl.{mod} ({mine}) imports minidl.{t} ({theirs}), a higher part")
    return bad


def test_every_module_has_a_part():
    for path in PKG.rglob('*.py'): part(module_name(path))


def test_no_module_imports_a_higher_part_or_the_experiments():
    bad = violations()
    assert not bad, "imports that break the layering (Foundations < nn < training < scale; the library never imports " \
                    "minidl.experiments):\n" + "\n".join(bad)


def test_the_scan_sees_imports():
    "The scanner itself: relative, absolute and function-local imports are found and resolved."
    src = PKG / 'nn' / 'linear.py'
    assert ('nn.module' in {resolve(t) for _, t in imported(src, 'nn.linear')})
    assert 'experiments.circle_data' in {
        resolve(t)
        for _, t in imported(PKG / 'experiments' / 'distributed_demo.py', 'experiments.distributed_demo')
    }
    assert (
        part('nn.module') == 'Foundations'
        and part('nn.linear') == 'nn'
        and part('optim') == 'training'
        and part('distributed') == 'scale'
    )


def test_no_line_over_120_characters():
    """Every Python line of the package, tests, benchmarks and tools fits 120 columns (ruff's E501 allows 130 for
    one line: nbdev's generated `__all__ = [...`, wrapped at 120 before its prefix)."""
    root = PKG.parent
    files = [f for d in ('minidl', 'tests', 'benchmarks', 'tools') for f in sorted((root / d).rglob('*.py'))]
    long = [f"{f.relative_to(root)}:{i}" for f in files if f.name != '_modidx.py'
            for i, line in enumerate(f.read_text(encoding='utf-8').splitlines(), 1)
            if len(line) > 120 and not line.startswith('__all__ = [')]
    assert files and not long, long
