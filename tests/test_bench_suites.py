"""Smoke test of the training-step suites: `python -m benchmarks core conv digits --quick` runs end to end, checks that
minidl and its torch counterparts agree before timing, and writes each suite's JSON for the Performance page. No timing
is asserted (the machine is noisy): the structure, the agreement, and that the ratios are the ratios of the medians."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPLS = {'minidl', 'torch', 'hand'}
REGIMES = ['circle-10', 'circle-100', 'circle-1000', 'wide-2048']


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks', 'core', 'conv', 'digits', '--quick', '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ['conv.json', 'core.json', 'digits.json']
    return proc, {p.stem: json.loads(p.read_text()) for p in out.iterdir()}


def positive(v): return isinstance(v, float) and math.isfinite(v) and v > 0


def test_prints_threads_and_no_profiler_lines(quick_run):
    proc, _ = quick_run
    assert proc.stdout.count('torch.get_num_threads() = 1') == 3
    assert 'profiler' not in proc.stderr and 'USDT' not in proc.stderr, proc.stderr[-2000:]


def test_core(quick_run):
    res = quick_run[1]['core']
    assert res['suite'] == 'core' and res['quick'] is True and res['machine']['torch_threads'] == 1
    assert set(res['implementations']) == IMPLS and [r['name'] for r in res['regimes']] == REGIMES
    assert isinstance(res['all_targets_met'], bool)
    for r in res['regimes']:
        assert r['agreement']['ok'], r['agreement']  # the suite refuses to time implementations that disagree
        assert set(r['time_s']) == IMPLS
        for t in r['time_s'].values():
            assert all(positive(t[k]) for k in ('median', 'q1', 'q3', 'min'))
            assert len(t['samples']) == r['rounds'] and all(positive(s) for s in t['samples'])
        for key in ('minidl/torch', 'minidl/hand'):
            assert positive(r['ratios'][key]) and positive(r['paired_ratios'][key])
            assert r['ratios'][key] == pytest.approx(r['time_s']['minidl']['median'] / r['time_s'][key[7:]]['median'])
            assert isinstance(r['met'][key], bool) and positive(r['targets'][key])
        assert set(r['ops_per_step']) == IMPLS and all(n > 0 for n in r['ops_per_step'].values())
        assert set(r['python_calls_per_step']) == IMPLS and all(n > 0 for n in r['python_calls_per_step'].values())
        assert set(r['peak_memory_mib']) == IMPLS
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in r['peak_memory_mib'].values())


def test_conv(quick_run):
    res = quick_run[1]['conv']
    assert res['target'] == {'minidl/torch': 1.25} and isinstance(res['all_targets_met'], bool)
    assert [r['name'] for r in res['regimes']] == ['cnn-valid', 'cnn-same']
    for r in res['regimes']:
        a = r['agreement']
        assert a['ok'] and a['float64']['max_param_rel_diff'] < 1e-10 and a['float32']['max_param_rel_diff'] < 1e-4
        assert set(r['time_s']) == {'minidl', 'torch'} and len(r['time_s']['minidl']['samples']) == r['rounds']
        assert all(positive(r[k]) for k in ('ratio', 'paired_ratio', 'cpu_ratio')) and isinstance(r['met'], bool)
        assert positive(r['blocks']['cpu_ratio'])
        assert r['ratio'] == pytest.approx(r['time_s']['minidl']['median'] / r['time_s']['torch']['median'])
        stages = r['breakdown']
        assert {
            'conv2 im2col',
            'conv2 forward matmul',
            'conv2 dW, db matmuls',
            'conv2 dU matmul',
            'conv2 col2im',
        } <= set(stages)
        assert 'conv1 col2im' not in stages  # the first layer skips its input gradient


def test_digits(quick_run):
    res = quick_run[1]['digits']
    assert set(res['models']) == {'mlp', 'cnn'}
    for name, target in (('mlp', 0.8), ('cnn', 1.25)):
        r = res['models'][name]
        assert r['target'] == target and r['ratio'] > 0 and r['agreement_float64'] < 1e-10
        assert set(r['seconds_per_step']) == {'minidl', 'torch'} and isinstance(r['meets_target'], bool)
