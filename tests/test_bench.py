"""The benchmark harness (`benchmarks/harness.py`) and its entry point (`python -m benchmarks`): calibration,
interleaving, statistics, atomic JSON, the command line, and a --quick run of a small suite. The harness's timing
logic runs on a fake clock here, so its assertions are exact; no real timing is asserted (the machine is noisy)."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import benchmarks  # noqa: E402
from benchmarks import __main__ as bench_main  # noqa: E402
from benchmarks import ablation, core, harness, overhead, seq  # noqa: E402


class FakeClock:
    "Stands in for the `time` module inside the harness: time passes only when a candidate runs."
    def __init__(self): self.now, self.cpu_share = 0.0, 0.5  # as if the process had half of a core
    def perf_counter(self): return self.now
    def process_time(self): return self.now * self.cpu_share


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(harness, 'time', c)
    return c


def candidates(clock, costs, log=None):
    "Functions of no arguments that each advance the fake clock by their cost (and log their name)."
    def make(name, cost):
        def fn():
            clock.now += cost
            if log is not None: log.append(name)
        return fn
    return {name: make(name, cost) for name, cost in costs.items()}


def test_sample_measures_wall_and_cpu_time_per_call(clock):
    fns = candidates(clock, {'a': 0.002})
    assert harness.sample(fns['a'], 5) == pytest.approx((0.002, 0.001))


def test_calibration_sizes_each_sample_to_about_sample_s(clock):
    ("Sized on the CPU time per call (waiting for a core does not count), or on the wall clock when a device "
     "is synchronised.")
    fns = candidates(clock, {'fast': 1e-5, 'slow': 3e-3, 'slower_than_a_sample': 0.05})
    clock.cpu_share = 1.0
    assert harness.calibrate(fns, sample_s=0.01, warmup_s=0.1) == {'fast': 1000, 'slow': 3, 'slower_than_a_sample': 1}
    clock.cpu_share = 0.5  # half of the wall-clock time was spent waiting: the samples still hold about 10 ms of work
    assert harness.calibrate(fns, sample_s=0.01, warmup_s=0.1) == {'fast': 2000, 'slow': 7, 'slower_than_a_sample': 1}
    synced = []
    ks = harness.calibrate(fns, sample_s=0.01, warmup_s=0.1, sync=lambda: synced.append(1))
    assert ks == {'fast': 1000, 'slow': 3, 'slower_than_a_sample': 1} and synced


def test_warm_up_runs_every_candidate_round_robin_at_least_twice(clock):
    log = []
    fns = candidates(clock, {'a': 1.0, 'b': 1.0}, log)
    harness.calibrate(fns, sample_s=1.0, warmup_s=0.0)
    assert log[:4] == ['a', 'b', 'a', 'b']


def test_rotation():
    assert [harness.rotation('ABC', r) for r in range(4)] == [list('ABC'), list('BCA'), list('CAB'), list('ABC')]
    assert [harness.rotation(['x', 'y'], r) for r in range(3)] == [['x', 'y'], ['y', 'x'], ['x', 'y']]


def test_interleaving_order_and_sample_sizes(clock):
    log = []
    fns = candidates(clock, {'A': 1e-3, 'B': 1e-3, 'C': 1e-3}, log)
    samples = harness.interleave(fns, {'A': 2, 'B': 1, 'C': 1}, min_rounds=3, max_rounds=3, budget_s=0.0)
    assert ''.join(log) == 'AABC' 'BCAA' 'CAAB'  # rotating order, k calls of each candidate per sample
    assert all(len(v) == 3 for v in samples.values())
    assert samples['A'][0] == pytest.approx((1e-3, 5e-4))


def test_rounds_stop_at_the_budget_but_not_before_min_rounds_nor_after_max_rounds(clock):
    fns = candidates(clock, {'a': 1 / 64, 'b': 1 / 64})  # a round lasts 1/32 s: 4 rounds 0.125 s, 5 rounds 0.15625 s
    ks = {'a': 1, 'b': 1}
    assert len(harness.interleave(fns, ks, min_rounds=2, max_rounds=1000, budget_s=0.15)['a']) == 5
    assert len(harness.interleave(fns, ks, min_rounds=20, max_rounds=1000, budget_s=0.15)['a']) == 20
    assert len(harness.interleave(fns, ks, min_rounds=2, max_rounds=3, budget_s=10.0)['a']) == 3


def test_before_runs_untimed_before_each_sample_of_its_candidate(clock):
    log, clock.cpu_share = [], 1.0
    fns = candidates(clock, {'a': 1e-3, 'b': 1e-3}, log)
    before = {'a': lambda: (log.append('setup a'), setattr(clock, 'now', clock.now + 100.0))}
    res = harness.compare(fns, sample_s=2e-3, warmup_s=0.0, budget_s=0.0, min_rounds=2, max_rounds=2, before=before)
    assert log[-10:] == ['setup a', 'a', 'a', 'b', 'b', 'b', 'b', 'setup a', 'a', 'a']  # two rounds of two calls each
    assert res['time_s']['a']['median'] == pytest.approx(1e-3)  # the 100 s of the setup are not in the samples


def test_summary_medians_quartiles_and_ratios():
    samples = {
        'm': [(1.0, 0.5), (2.0, 1.0), (9.0, 1.5)],
        't': [(2.0, 1.0), (2.0, 2.0), (3.0, 3.0)],
        'h': [(1.0, 1.0)] * 3,
    }
    s = harness.summarize(samples, {'m': 1, 't': 1, 'h': 1})
    assert s['rounds'] == 3 and s['steps_per_sample'] == {'m': 1, 't': 1, 'h': 1}
    assert (
        s['time_s']['m']['median'] == 2.0
        and s['time_s']['m']['min'] == 1.0
        and s['time_s']['m']['samples'] == [1.0, 2.0, 9.0]
    )
    q = statistics.quantiles([1.0, 2.0, 9.0], n=4)
    assert (s['time_s']['m']['q1'], s['time_s']['m']['q3']) == (q[0], q[2])
    assert s['ratios'] == {'m/t': 1.0, 'm/h': 2.0}                 # ratio of the medians
    assert s['paired_ratios'] == {'m/t': 1.0, 'm/h': 2.0}          # median of 0.5, 1, 3 and of 1, 2, 9
    assert s['min_ratios'] == {'m/t': 0.5, 'm/h': 1.0}
    assert s['cpu_ratios'] == {'m/t': 0.5, 'm/h': 1.0}
    assert s['cpu_time_s']['t']['median'] == 2.0
    one = harness.summarize({'a': [(3.0, 1.0)], 'b': [(1.5, 1.0)]})
    assert one['time_s']['a'] | {'samples': None} == dict(median=3.0, q1=3.0, q3=3.0, min=3.0, samples=None)
    assert one['ratios'] == one['paired_ratios'] == {'a/b': 2.0}


def test_paired_ratios_differ_from_the_ratio_of_medians_when_load_hits_rounds():
    "A burst of load that slows one round for both candidates leaves the per-round ratio alone."
    samples = {'m': [(1.0, 1.0), (10.0, 1.0), (10.0, 1.0)], 't': [(2.0, 1.0), (20.0, 1.0), (2.0, 1.0)]}
    s = harness.summarize(samples)
    assert s['ratios']['m/t'] == 5.0 and s['paired_ratios']['m/t'] == 0.5


def test_time_alone_uses_torch_benchmark_timer():
    assert 0 < harness.time_alone(lambda: torch.ones(8).sum(), min_run_time=0.01) < 0.01


def test_machine_info_names_the_cpu_threads_capability_and_load():
    m = harness.machine_info()
    assert m['torch'] == torch.__version__ and m['logical_cpus'] >= 1 and isinstance(m['cpu'], str) and m['cpu']
    assert m['cpu_capability'] == torch.backends.cpu.get_cpu_capability() and m['device'] == 'cpu'
    assert len(m['load_average']) == 3 and all(x >= 0 for x in m['load_average'])


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / 'sub' / 'x.json'
    harness.write_json(path, {'a': [1, 2.5]})
    assert json.loads(path.read_text()) == {'a': [1, 2.5]}
    with pytest.raises(TypeError): harness.write_json(path, {'a': {1, 2}})  # not JSON: the old file stays whole
    assert json.loads(path.read_text()) == {'a': [1, 2.5]} and [p.name for p in path.parent.iterdir()] == ['x.json']


# ---------------------------------------------------------------- the suites and the command line

def test_every_suite_is_a_module_with_settings_and_run():
    assert len(set(benchmarks.SUITES)) == len(benchmarks.SUITES)
    for name in benchmarks.SUITES:
        m = __import__(f'benchmarks.{name}', fromlist=['run'])
        assert callable(m.run) and m.__doc__.strip(), name
        assert isinstance(m.QUICK, dict) and set(m.QUICK) == set(m.FULL), name


@pytest.fixture
def one_thread_restored():
    "The suites set one torch thread: give the test process its threads back afterwards."
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    'args, words',
    [
        (['nope'], "unknown suite 'nope'"),
        (['core', '--bogus'], 'unrecognized arguments'),
        (['optim', 'optim'], 'named twice'),
        (['--device', 'tpu'], 'invalid choice'),
        (['all', 'core'], "unknown suite 'all'"),
    ]
    + [(['optim', '--device', 'cuda'], 'CUDA is not available')] * (not torch.cuda.is_available()),
)
def test_bad_arguments_are_one_line_and_exit_2(args, words, capsys):
    with pytest.raises(SystemExit) as e: bench_main.main(args)
    out, err = capsys.readouterr()
    assert (
        e.value.code == 2
        and err.count('\n') == 1
        and err.startswith('python -m benchmarks: error: ')
        and words in err
    ), err
    assert out == ''


def test_quick_run_without_out_writes_nothing(tmp_path, monkeypatch, capsys, one_thread_restored):
    monkeypatch.chdir(tmp_path)
    before = sorted(harness.RESULTS.glob('*')) if harness.RESULTS.is_dir() else []
    res = bench_main.main(['version_check', '--quick'])
    assert set(res) == {'version_check'} and len(res['version_check']['cases']) == 4
    assert 'wrote' not in capsys.readouterr().out and list(tmp_path.iterdir()) == []
    assert (sorted(harness.RESULTS.glob('*')) if harness.RESULTS.is_dir() else []) == before


def test_quick_run_of_a_small_suite_writes_its_json(tmp_path):
    "The command line end to end, in a process of its own, from another folder (the repository on the path)."
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(
        [sys.executable, '-m', 'benchmarks', 'optim', '--quick', '--out', str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert 'torch.get_num_threads() = 1' in p.stdout
    assert [f.name for f in tmp_path.iterdir()] == ['optim.json']  # written atomically, no temporary left
    res = json.loads((tmp_path / 'optim.json').read_text())
    assert res['schema'] == harness.SCHEMA and res['suite'] == 'optim' and res['quick'] is True
    assert res['command'] == f'python -m benchmarks optim --quick --out {tmp_path}'
    m = res['machine']
    assert m['torch_threads'] == 1 and len(m['load_average']) == len(m['load_average_end']) == 3
    assert res['settings'] == __import__('benchmarks.optim', fromlist=['QUICK']).QUICK
    assert res['parameters'] == 2051 and res['implementations'] == ['minidl', 'torch', 'torch-foreach']
    assert [o['name'] for o in res['optimizers']] == ['adam', 'adamw', 'sgd-momentum']
    for o in res['optimizers']:
        assert o['agreement_max_rel_diff'] <= 1e-6 and o['rounds'] == 3  # same maths (in practice: the same bits)
        for t in o['times'].values():
            assert 0 < t['min_s'] <= t['q1_s'] <= t['median_s'] <= t['q3_s'] and math.isfinite(t['q3_s'])
        for key in ('minidl/torch', 'minidl/torch-foreach'):
            assert o['ratio_of_medians'][key] == pytest.approx(
                o['times']['minidl']['median_s'] / o['times'][key[7:]]['median_s']
            )
            assert o['median_round_ratio'][key] > 0 and o['ratio_of_minima'][key] > 0


# ---------------------------------------------------------------- the core suite's implementations

@pytest.mark.parametrize('name', list(core.BUILDERS))
def test_every_implementation_runs_on_the_requested_device(name):
    "Each implementation puts its parameters on the data's device and computes there. The 'meta' device stands in for a"
    "GPU on a machine without one: a model left on the CPU would make the first product raise (or keep CPU parameters)."
    device = torch.device('meta')
    weights, x, t = core.to_device(core.init_weights(core.CIRCLE), *core.make_data(core.CIRCLE, 10), device)
    step, params = core.BUILDERS[name](weights)
    loss = step(x, t)
    assert loss.device == device and loss.shape == ()
    assert len(params) == 10 and all(p.device == device for p in params)


def test_core_implementations_agree():
    a = core.check_agreement(core.CIRCLE, 10, torch.device('cpu'))
    assert a['ok'] and set(a['vs_torch']) == {'minidl', 'hand'}


def test_ablation_variants_compute_the_same_step():
    "The ablation's variants (today's minidl and its earlier hot paths) train alike (CPU only)."
    weights, x, t = core.to_device(
        core.init_weights(core.CIRCLE), *core.make_data(core.CIRCLE, 10), torch.device('cpu')
    )
    ref_step, ref_params = core.BUILDERS['torch'](weights)
    ref = [ref_step(x, t).item() for _ in range(2)]
    for name, v in ablation.VARIANTS.items():
        step, params = ablation.builder(*v[:5])(weights)
        assert [step(x, t).item() for _ in range(2)] == pytest.approx(ref, rel=1e-5), name
        for p, q in zip(params, ref_params): torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


def test_overhead_variants_compute_the_same_step():
    "The overhead suite's candidates (the bare maths, each layer of checks added, minidl) train as the hand loop does."
    weights, x, t = core.to_device(
        core.init_weights(core.CIRCLE), *core.make_data(core.CIRCLE, 10), torch.device('cpu')
    )
    ref_step, ref_params = core.build_hand(weights)
    ref = [ref_step(x, t).item() for _ in range(3)]
    for name, v in overhead.VARIANTS.items():
        step, params = overhead.build(weights, *v)
        assert [step(x, t).item() for _ in range(3)] == pytest.approx(ref, rel=1e-6), name
        for p, q in zip(params, ref_params): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_overhead_quick_run(one_thread_restored, capsys):
    res = bench_main.main(['overhead', '--quick'])['overhead']
    names = list(overhead.VARIANTS)
    assert [r['name'] for r in res['regimes']] == [f'circle-{b}' for b in overhead.BATCHES]
    assert list(res['variants']) == names and res['variants']['minidl'] == dict.fromkeys(
        ('Sequential', 'LossBCE', 'SGD.step', 'zero_grad'), True)
    for r in res['regimes']:
        assert list(r['over_hand']) == names and list(r['paired_over_hand']) == names
        for n in names:
            assert r['over_hand'][n] == pytest.approx(r['median_s'][n] / r['median_s']['hand'])
            assert math.isfinite(r['paired_over_hand'][n]) and r['paired_over_hand'][n] > 0
    assert capsys.readouterr().out.count('over hand:') == len(overhead.BATCHES)


def test_decoder_hand_step_is_minidls_maths():
    ("The seq suite's hand-written decoder step trains as minidl's decoder does, in float64 (the same kernels in the "
     "same order: equal to the last bit here; the suite allows 1e-12 of the largest weight), and the comparison is "
     "not vacuous: a learning rate 0.1 % off moves the weights.")
    agree = seq.decoder_agreement()
    assert agree['ok'] and agree['max_param_diff'] <= 1e-12 * agree['max_param'], agree
    ours, step, x, y = seq.decoder_minidl(**seq.DECODER, dtype=torch.float64)
    hand, params = seq.decoder_hand(ours, seq.DECODER['B'], seq.DECODER['T'], lr=1.001e-3)
    for _ in range(2): step(); hand(x, y)
    assert max(float((p.value - q).abs().max()) for p, q in zip(ours.parameters(), params)) > 1e-7


def test_decoder_vs_hand_record(one_thread_restored):
    "The record the seq suite writes for the decoder against its hand-written step: times, ratio, counts, agreement."
    ctx = harness.Context(quick=True, device='cpu', settings=dict(seq.QUICK))
    row = seq.decoder_vs_hand(ctx)
    assert row['agreement']['ok'] and row['ratio'] == pytest.approx(row['minidl_s'] / row['hand_s'])
    assert set(row['ops_per_step']) == set(row['python_calls_per_step']) == {'minidl', 'hand'}
    # the hand loop is one function: its Python calls are its few helpers (LayerNorm, GELU...), minidl's are modules
    assert row['python_calls_per_step']['hand'] < row['python_calls_per_step']['minidl']
    assert all(n > 100 for n in row['ops_per_step'].values())


def test_op_and_python_call_counts():
    weights, x, t = core.to_device(
        core.init_weights(core.CIRCLE), *core.make_data(core.CIRCLE, 10), torch.device('cpu')
    )
    steps = {n: b(weights)[0] for n, b in core.BUILDERS.items()}
    ops = {n: core.count_ops(s, x, t) for n, s in steps.items()}
    calls = {n: core.count_python_calls(s, x, t) for n, s in steps.items()}
    assert all(n > 0 for n in ops.values()) and ops['hand'] < ops['minidl']
    # the loop has no modules; torch.nn's call machinery is Python
    assert calls['hand'] < calls['minidl'] < calls['torch']
