"""The timing loop shared by benchmarks/bench_layers.py and bench_seq.py: the table it prints (which the Performance page
parses), the per-round ratio line, and the CPU-time clock. No timing is asserted (the machine is noisy)."""
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'benchmarks'))
from bench_layers import run  # noqa: E402

ROW = re.compile(r"^(.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")  # the Performance page's pattern for a table row


def busy(k):
    def f():
        s = 0
        for i in range(k): s += i
    return f


@pytest.mark.parametrize('clock', ['wall', 'cpu'])
def test_table_and_spread(monkeypatch, capsys, clock):
    monkeypatch.setattr(sys, 'argv', ['bench', '--rounds', '3', '--min-time', '0.001', '--clock', clock])
    run(lambda: {'case A (2, 3)': (busy(2000), busy(1000))}, 'test', rounds=3, spread=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith('median of 3 interleaved rounds' + (', thread CPU time' if clock == 'cpu' else ''))
    rows = [m.groups() for m in map(ROW.match, lines[2:]) if m]
    assert [r[0] for r in rows] == ['case A (2, 3)']  # the per-round line is not taken for a row
    ours, ref, ratio = map(float, rows[0][1:])
    assert ours > 0 and ref > 0 and ratio == pytest.approx(ours / ref, rel=0.01, abs=0.01)
    lo, med, hi = map(float, re.search(r"min ([\d.]+), median ([\d.]+), max ([\d.]+) \(3 rounds\)", lines[3]).groups())
    assert lo <= med <= hi


def test_no_spread_line_by_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['bench', '--rounds', '1', '--min-time', '0.001'])
    run(lambda: {'case B': (busy(10), busy(10))}, 'test', rounds=1)
    assert 'per-round' not in capsys.readouterr().out
