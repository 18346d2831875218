"""Run minidl's benchmark suites one after the other, one thread, and write each one's results as JSON.

    python -m benchmarks [suite ...|all] [--quick] [--out DIR] [--device cpu|cuda|auto]

The suites run in this process, in the order named, and each writes DIR/<suite>.json (default: benchmarks/results/;
a --quick run writes only with --out). See benchmarks/harness.py."""
import argparse
import importlib
import sys

from benchmarks import SUITES


class Parser(argparse.ArgumentParser):
    def error(self, message):
        "A bad argument: one line on stderr, exit status 2."
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse(argv=None):
    ap = Parser(prog='python -m benchmarks', description=__doc__.splitlines()[0])
    ap.add_argument('suites', nargs='*', metavar='suite', help=f"any of {', '.join(SUITES)}, or all (default: all)")
    ap.add_argument('--quick', action='store_true', help='smoke run: a few short rounds (the numbers mean nothing)')
    ap.add_argument('--out', default=None, help='folder for <suite>.json (default: benchmarks/results; --quick: none)')
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'),
                    help='where the suites that support it run (core, optim; default cpu; auto: cuda if available)')
    args = ap.parse_args(argv)
    names = list(SUITES) if not args.suites or args.suites == ['all'] else args.suites
    if bad := [n for n in names if n not in SUITES]:
        ap.error(f"unknown suite {', '.join(map(repr, bad))}: expected names among {', '.join(SUITES)}, or all")
    if len(set(names)) != len(names): ap.error(f"a suite is named twice: {' '.join(names)}")
    import torch
    if args.device == 'auto': args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        ap.error(f"--device cuda: CUDA is not available here (torch {torch.__version__}"
                 f"{', built without CUDA' if torch.version.cuda is None else ''}); use --device cpu")
    modules = {n: importlib.import_module(f'benchmarks.{n}') for n in names}
    cpu_only = [n for n, m in modules.items() if 'cuda' not in getattr(m, 'DEVICES', ('cpu',))]
    if args.device != 'cpu' and cpu_only:
        ap.error(f"--device {args.device}: the suites {', '.join(cpu_only)} run on the CPU only")
    return args, modules


def main(argv=None):
    args, modules = parse(argv)
    from pathlib import Path

    from benchmarks.harness import RESULTS, run_suite
    out = Path(args.out) if args.out is not None else (None if args.quick else RESULTS)
    command = ' '.join(['python -m benchmarks'] + (sys.argv[1:] if argv is None else list(argv)))
    return {n: run_suite(n, m, args.quick, args.device, out, command) for n, m in modules.items()}


if __name__ == '__main__':
    main()
