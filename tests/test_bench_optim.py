"""Smoke test of the optimizer benchmark: `benchmarks/bench_optim.py --quick` runs end to end, checks that minidl and
torch.optim agree, and writes the JSON. No timing is asserted (the machine is noisy): structure and agreement only."""
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run(tmp_path):
    out = tmp_path / 'results_optim.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_optim.py'), '--quick', '--out', str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'torch.get_num_threads() = 1' in proc.stdout and 'm/torch' in proc.stdout
    res = json.loads(out.read_text())
    assert res['schema'] == 1 and res['quick'] is True and res['machine']['torch_threads'] == 1
    assert res['settings']['parameters'] == 2051 and res['implementations'] == ['minidl', 'torch', 'torch-foreach']
    assert [o['name'] for o in res['optimizers']] == ['adam', 'adamw', 'sgd-momentum']
    for o in res['optimizers']:
        assert o['agreement_max_rel_diff'] <= 1e-6  # same maths (in practice: the same bits)
        for impl in res['implementations']:
            t = o['times'][impl]
            assert 0 < t['min_s'] <= t['q1_s'] <= t['median_s'] <= t['q3_s'] and math.isfinite(t['q3_s'])
        assert set(o['ratio_of_medians']) == set(o['median_round_ratio']) == set(o['ratio_of_minima']) == {'minidl/torch', 'minidl/torch-foreach'}
        assert all(r > 0 for r in o['ratio_of_medians'].values())
    assert [p.name for p in tmp_path.iterdir()] == ['results_optim.json']  # written atomically, no temporary left
