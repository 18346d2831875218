"""Smoke test of the benchmark: `benchmarks/bench.py --quick` runs end to end and writes the JSON the Performance page
reads. No timing is asserted (the machine is noisy); only the structure, and that the three implementations agree."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
IMPLS = {'minidl', 'torch', 'hand'}
REGIMES = ['circle-10', 'circle-100', 'circle-1000', 'wide-2048']


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'results.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench.py'), '--quick', '--out', str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.getbasetemp())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text()), proc.stderr


@pytest.fixture(scope='module')
def quick_run_stderr(quick_run): return quick_run[2]


def positive(v): return isinstance(v, float) and math.isfinite(v) and v > 0


def test_prints_threads_and_table(quick_run):
    stdout, _, _ = quick_run
    assert 'torch.get_num_threads() = 1' in stdout
    for name in REGIMES: assert name in stdout
    assert 'm/torch' in stdout and 'm/hand' in stdout


def test_json_structure(quick_run):
    _, res, _ = quick_run
    assert res['schema'] == 1 and res['quick'] is True
    assert res['machine']['torch_threads'] == 1 and res['settings']['threads'] == 1
    assert set(res['implementations']) == IMPLS
    assert [r['name'] for r in res['regimes']] == REGIMES
    assert isinstance(res['all_targets_met'], bool)
    for r in res['regimes']:
        assert r['batch'] in (10, 100, 1000, 2048) and r['sizes'][0] in (2, 256)
        assert set(r['time_s']) == IMPLS
        for t in r['time_s'].values():
            assert all(positive(t[k]) for k in ('median', 'q1', 'q3', 'min'))
            assert len(t['samples']) == r['rounds'] and all(positive(s) for s in t['samples'])
        for key in ('minidl/torch', 'minidl/hand'):
            assert positive(r['ratios'][key]) and positive(r['paired_ratios'][key])
            assert r['ratios'][key] == pytest.approx(r['time_s']['minidl']['median'] / r['time_s'][key[7:]]['median'])
            assert isinstance(r['met'][key], bool) and positive(r['targets'][key])
        assert set(r['ops_per_step']) == IMPLS and all(n > 0 for n in r['ops_per_step'].values())
        assert set(r['peak_memory_mib']) == IMPLS
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in r['peak_memory_mib'].values())


def test_implementations_agree(quick_run):
    "The three implementations compute the same training steps (the script refuses to time them otherwise)."
    _, res, _ = quick_run
    for r in res['regimes']:
        assert r['agreement']['ok'], r['agreement']


def test_quick_run_prints_no_profiler_lines(quick_run_stderr):
    assert 'profiler' not in quick_run_stderr and 'USDT' not in quick_run_stderr, quick_run_stderr[-2000:]


# ---------------------------------------------------------------- --device is honoured by every implementation

sys.path.insert(0, str(ROOT / 'benchmarks'))
import bench  # noqa: E402
import ablation  # noqa: E402


@pytest.mark.parametrize('name', list(bench.BUILDERS))
def test_every_implementation_runs_on_the_requested_device(name):
    "Each implementation puts its parameters on the data's device and computes there. The 'meta' device stands in for a"
    "GPU on a machine without one: a model left on the CPU would make the first product raise (or keep CPU parameters)."
    device = torch.device('meta')
    weights, x, t = bench.to_device(bench.init_weights(bench.CIRCLE), *bench.make_data(bench.CIRCLE, 10), device)
    step, params = bench.BUILDERS[name](weights)
    loss = step(x, t)
    assert loss.device == device and loss.shape == ()
    assert len(params) == 10 and all(p.device == device for p in params)


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available(): pytest.skip('CUDA is available here')
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench.py'), '--quick', '--device', 'cuda'],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and 'CUDA is not available' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr


def test_ablation_variants_compute_the_same_step():
    "The variants of benchmarks/ablation.py (today's minidl and its earlier hot paths) train alike (CPU only)."
    weights, x, t = bench.to_device(bench.init_weights(bench.CIRCLE), *bench.make_data(bench.CIRCLE, 10), torch.device('cpu'))
    ref_step, ref_params = bench.BUILDERS['torch'](weights)
    ref = [ref_step(x, t).item() for _ in range(2)]
    for name, v in ablation.VARIANTS.items():
        step, params = ablation.builder(*v[:5])(weights)
        assert [step(x, t).item() for _ in range(2)] == pytest.approx(ref, rel=1e-5), name
        for p, q in zip(params, ref_params): torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


def test_suites_are_checked_before_anything_runs(capsys):
    "`--suites` names the other benchmark scripts; an unknown name is a one-line usage error (exit 2) before any timing."
    assert set(bench.SUITES) == {'conv', 'digits', 'optim'}
    for name, script in bench.SUITES.items(): assert (Path(bench.__file__).parent / script).is_file(), script
    with pytest.raises(SystemExit) as e: bench.main(['--quick', '--suites', 'digits,nope'])
    assert e.value.code == 2 and "--suites: unknown nope" in capsys.readouterr().err
