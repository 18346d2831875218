"""Smoke test of the convolution benchmark: `benchmarks/bench_conv.py --quick` runs end to end, checks that minidl and
torch agree before timing, and writes its JSON. No timing is asserted (the machine is noisy)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench_conv') / 'results_conv.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_conv.py'), '--quick', '--out', str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.getbasetemp())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def positive(v): return isinstance(v, float) and math.isfinite(v) and v > 0


def test_prints_threads_and_regimes(quick_run):
    stdout, _ = quick_run
    assert 'torch.get_num_threads() = 1' in stdout
    assert 'cnn-valid' in stdout and 'cnn-same' in stdout and 'minidl/torch' in stdout


def test_implementations_agree(quick_run):
    "minidl and torch compute the same training steps, in float32 and float64 (the script refuses to time them otherwise)."
    _, res = quick_run
    for r in res['regimes']:
        a = r['agreement']
        assert a['ok'] and a['float64']['max_param_rel_diff'] < 1e-10 and a['float32']['max_param_rel_diff'] < 1e-4


def test_json_structure(quick_run):
    _, res = quick_run
    assert res['schema'] == 1 and res['quick'] is True and res['machine']['torch_threads'] == 1
    assert [r['name'] for r in res['regimes']] == ['cnn-valid', 'cnn-same']
    assert isinstance(res['all_targets_met'], bool) and res['target'] == {'minidl/torch': 1.25}
    for r in res['regimes']:
        assert set(r['time_s']) == {'minidl', 'torch'} and len(r['time_s']['minidl']['samples']) == r['rounds']
        assert all(positive(r[k]) for k in ('ratio', 'paired_ratio', 'cpu_ratio')) and isinstance(r['met'], bool)
        assert positive(r['blocks']['cpu_ratio'])
        assert r['ratio'] == pytest.approx(r['time_s']['minidl']['median'] / r['time_s']['torch']['median'])
        stages = r['breakdown']
        assert {'conv2 im2col', 'conv2 forward matmul', 'conv2 dW, db matmuls', 'conv2 dU matmul', 'conv2 col2im'} <= set(stages)
        assert 'conv1 col2im' not in stages  # the first layer skips its input gradient
