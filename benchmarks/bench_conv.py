"""Time one training step of a small CNN in minidl and in torch.nn, interleaved, and split minidl's time into stages.

    python benchmarks/bench_conv.py           # full run (about a minute): table, breakdown, benchmarks/results_conv.json
    python benchmarks/bench_conv.py --quick   # smoke run (seconds): writes only with --out FILE

The network (8x8 single-channel images, batch 64, float32):

    Conv2d(1, 16, 3, padding=P) -> ReLU -> Conv2d(16, 32, 3, padding=P) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(., 10)

in two regimes: 'cnn-valid' (P = 0, torch.nn.Conv2d's default: 8x8 -> 6x6 -> 4x4 -> 2x2, Linear(128, 10)), the network
of the target, and 'cnn-same' (P = 1: the images keep their 8x8 size, Linear(512, 10)), four times the convolution work.
A training step is zero_grad, forward, loss, backward, SGD update (lr 0.05). The loss is the mean squared error against
one-hot targets of random labels (minidl.LossMSE and torch.nn.MSELoss: the cross-entropy layer belongs to another part
of minidl, and the loss is a negligible part of the step either way):

* **minidl** -- minidl.Sequential of Conv2d/ReLU/MaxPool2d/Flatten/Linear, LossMSE, SGD; backward(..., input_grad=False)
  (the first convolution's input is data: it skips its input gradient);
* **torch** -- the same layers from torch.nn, torch.nn.MSELoss, autograd and torch.optim.SGD with their defaults.

Both start from the same weights (minidl loads torch's state_dict) and train on the same batch; before timing, the
script runs a few steps of each, in float32 and in float64, compares losses and parameters, and stops if they differ.

Timing: one thread (torch.set_num_threads(1), printed); warm-up; then rounds in which each implementation runs a short
sample of consecutive steps (about 20 ms), alternating which goes first, for about 20 s per regime. Reported: the
median over rounds of the time per step (wall clock, time.perf_counter) and the ratio of the medians (the target,
minidl/torch <= 1.25, applies to it), the median of the per-round ratios, and the same ratio in process CPU time
(time.process_time: on a shared machine it does not count the time the process waited for a core).

Consecutive steps: the interleaved samples are short (a few steps), so each implementation starts a sample with
caches that the other one used. A training run repeats one implementation's steps; so the script also times blocks of
40 consecutive steps of each in turn (12 blocks, CPU time) and reports that ratio too (no target is attached to it).

Breakdown: each stage of minidl's step is also timed alone on the network's own tensors (median of the process CPU
time of repeated calls; shares are of the median CPU time of minidl's step):
for each convolution, im2col (pad + unfold + the copy into U), the forward matrix product, the weight-gradient
products (dL/dW = G^T U and dL/db), the input-gradient product (dL/dU = G W) and col2im; the pooling layer forward
and backward; "other" is the step's median minus the sum of those stages (ReLU, Flatten, Linear, loss, SGD, Python).
"""
from __future__ import annotations
import argparse, datetime, gc, json, os, platform, statistics, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
import minidl
from minidl.nn.conv import _pad_nhwc, _patches, _col2im
from minidl.files import atomic_open

IMPLS = ('minidl', 'torch')
IMPL_DESCRIPTIONS = {
    'minidl': "minidl: Sequential(Conv2d, ReLU, Conv2d, ReLU, MaxPool2d, Flatten, Linear), LossMSE, SGD; backward(..., input_grad=False)",
    'torch': "torch.nn.Sequential of the same layers + torch.nn.MSELoss + autograd + torch.optim.SGD (defaults)",
}
REGIMES = [
    dict(name='cnn-valid', padding=0, label='conv 3x3 1->16, conv 3x3 16->32 (padding 0), maxpool 2, linear 128->10; batch 64, 8x8'),
    dict(name='cnn-same', padding=1, label='conv 3x3 1->16, conv 3x3 16->32 (padding 1), maxpool 2, linear 512->10; batch 64, 8x8'),
]
TARGET = 1.25  # minidl/torch, ratio of the medians of the wall-clock time per step
BATCH, SIDE, CLASSES, LR = 64, 8, 10, 0.05

def make_data(batch=BATCH, seed=1, dtype=torch.float32):
    "Gaussian 8x8 images and one-hot targets of random labels."
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, SIDE, SIDE, generator=gen, dtype=dtype)
    t = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (batch,), generator=gen), CLASSES).to(dtype)
    return x, t

def torch_net(padding, seed=0, dtype=torch.float32):
    nn = torch.nn
    side = SIDE + 2 * (2 * padding - 2)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=padding), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=padding), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, CLASSES)).to(dtype)

def build_torch(padding, dtype=torch.float32):
    model = torch_net(padding, dtype=dtype)
    loss_fn, opt = torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=LR)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return step, model

def build_minidl(padding, dtype=torch.float32):
    ref = torch_net(padding, dtype=dtype)
    m = minidl
    model = m.Sequential(m.Conv2d(1, 16, 3, padding=padding), m.ReLU(), m.Conv2d(16, 32, 3, padding=padding), m.ReLU(),
                         m.MaxPool2d(2), m.Flatten(), m.Linear(ref[6].in_features, CLASSES)).to(dtype=dtype)
    model.load_state_dict(ref.state_dict())  # the same weights as torch's network
    loss_fn, opt = m.LossMSE(), m.SGD(model.parameters(), lr=LR)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        model.backward(loss_fn.backward(), input_grad=False)  # the first layer's input is data
        opt.step()
        return loss
    return step, model

BUILDERS = {'minidl': build_minidl, 'torch': build_torch}

def check_agreement(padding, nb_steps=3):
    "A few steps of both implementations from the same weights, in float32 and float64: largest relative differences."
    out = {}
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        x, t = make_data(dtype=dtype)
        res = {}
        for name, build in BUILDERS.items():
            step, model = build(padding, dtype)
            losses = [float(step(x, t).detach()) for _ in range(nb_steps)]
            res[name] = losses, [v.detach().clone() for v in model.state_dict().values()]
        (l_m, p_m), (l_t, p_t) = res['minidl'], res['torch']
        rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
        d = dict(max_param_rel_diff=max(rel(a, b) for a, b in zip(p_m, p_t)),
                 max_loss_rel_diff=max(abs(a - b) / abs(b) for a, b in zip(l_m, l_t)), tolerance=tol)
        d['ok'] = d['max_param_rel_diff'] < tol and d['max_loss_rel_diff'] < tol
        out[str(dtype).replace('torch.', '')] = d
    return dict(ok=all(d['ok'] for d in out.values()), **out)

def time_regime(padding, sample_s, warmup_s, budget_s, min_rounds):
    "Interleaved rounds: each implementation runs k steps, the first one alternating; seconds per step (wall and CPU)."
    x, t = make_data()
    steps = {name: build(padding)[0] for name, build in BUILDERS.items()}
    per_step = 0.0  # CPU time of one step (a busy machine inflates the wall-clock time of a single step)
    for step in steps.values():
        for _ in range(3): step(x, t)
        t0 = time.process_time()
        for _ in range(5): step(x, t)
        per_step = max(per_step, (time.process_time() - t0) / 5)
    k = max(1, round(sample_s / per_step))
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        for step in steps.values():
            for _ in range(k): step(x, t)
    gc.collect()
    wall, cpu = {n: [] for n in steps}, {n: [] for n in steps}
    start, r = time.perf_counter(), 0
    while r < min_rounds or time.perf_counter() - start < budget_s:
        for name in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
            step = steps[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(k): step(x, t)
            wall[name].append((time.perf_counter() - t0) / k); cpu[name].append((time.process_time() - c0) / k)
        r += 1
    return wall, cpu, k

def time_blocks(padding, block, rounds):
    "Blocks of `block` consecutive steps of each implementation in turn (as a training run would): CPU seconds per step."
    x, t = make_data()
    steps = {name: build(padding)[0] for name, build in BUILDERS.items()}
    for step in steps.values():
        for _ in range(block): step(x, t)
    cpu = {n: [] for n in steps}
    for r in range(rounds):
        for name in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
            c0 = time.process_time()
            for _ in range(block): steps[name](x, t)
            cpu[name].append((time.process_time() - c0) / block)
    return cpu

def median_time(f, min_time=0.3, reps=None):
    "Median over samples of the process CPU time of one call of f (each sample about 2 ms)."
    f(); f()
    t0 = time.process_time(); f(); one = max(time.process_time() - t0, 1e-6)
    n = max(1, round(0.002 / one))
    samples, end = [], time.perf_counter() + min_time
    while time.perf_counter() < end or len(samples) < (reps or 5):
        t0 = time.process_time()
        for _ in range(n): f()
        samples.append((time.process_time() - t0) / n)
    return statistics.median(samples)

def breakdown(padding, step_median, min_time):
    "Time each stage of minidl's step alone, on the network's tensors (see the module docstring)."
    step, model = build_minidl(padding)
    x, t = make_data()
    for _ in range(3): step(x, t)
    acts = [x]
    for layer in model.layers: acts.append(layer(acts[-1]))
    grads = [torch.randn_like(acts[-1])]
    for layer in reversed(model.layers[1:]): grads.append(layer.backward(grads[-1]))
    grads = grads[::-1]  # grads[i]: dL/d(output of layer i)
    stages = {}
    for i, layer in enumerate(model.layers):
        if isinstance(layer, minidl.Conv2d):
            a, g = acts[i], grads[i]
            (kh, kw), (ph, pw), s = layer.kernel_size, layer.padding, layer.stride
            N, C, H, W = a.shape
            im2col = lambda: _patches(_pad_nhwc(a, ph, pw), (kh, kw), s).reshape(-1, kh * kw * C)
            u = im2col()
            wm = layer.weight.value.permute(0, 2, 3, 1).reshape(layer.out_channels, -1)
            g2 = g.permute(0, 2, 3, 1).reshape(-1, layer.out_channels)
            ones = torch.ones(g2.shape[0])
            Ho, Wo = g.shape[2:]
            name = f"conv{i // 2 + 1}"
            stages[f"{name} im2col"] = median_time(im2col, min_time)
            stages[f"{name} forward matmul"] = median_time(lambda: torch.addmm(layer.bias.value, u, wm.t()), min_time)
            stages[f"{name} dW, db matmuls"] = median_time(lambda: (torch.mm(u.t(), g2), torch.mv(g2.t(), ones)), min_time)
            if i > 0:  # the first layer is called with input_grad=False
                du = torch.mm(g2, wm).view(N, Ho, Wo, kh, kw, C)
                stages[f"{name} dU matmul"] = median_time(lambda: torch.mm(g2, wm), min_time)
                stages[f"{name} col2im"] = median_time(lambda: _col2im(du, H + 2 * ph, W + 2 * pw, s), min_time)
        elif isinstance(layer, minidl.MaxPool2d):
            stages["maxpool forward"] = median_time(lambda: layer(acts[i]), min_time)
            stages["maxpool backward"] = median_time(lambda: layer.backward(grads[i]), min_time)
    stages["other (ReLU, Flatten, Linear, loss, SGD, Python)"] = step_median - sum(stages.values())
    return {k: dict(time_s=v, share=v / step_median) for k, v in stages.items()}

def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f: cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration): pass
    return dict(cpu=cpu, logical_cpus=os.cpu_count(), os=platform.platform(), python=platform.python_version(),
                torch=torch.__version__, minidl=minidl.__version__, torch_threads=torch.get_num_threads(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(), mkl=torch.backends.mkl.is_available(),
                mkldnn=torch.backends.mkldnn.is_available(),
                load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None)

def us(s): return f"{s * 1e6:,.0f}"

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run: a few short rounds (the numbers are not meaningful)')
    ap.add_argument('--out', type=Path, default=None, help='JSON output (default: benchmarks/results_conv.json; --quick: none)')
    ap.add_argument('--budget', type=float, default=None, help='seconds of timed rounds per regime (default 20; --quick: 0)')
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sample_s, warmup_s, budget_s, min_rounds, stage_s = ((0.005, 0.05, 0.0, 3, 0.01) if args.quick else
                                                        (0.02, 1.0, 20.0 if args.budget is None else args.budget, 15, 0.3))
    out = args.out if args.out is not None else (None if args.quick else ROOT / 'benchmarks' / 'results_conv.json')
    print(f"minidl {minidl.__version__}, torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}"
          f"{' (quick run: the numbers mean nothing)' if args.quick else ''}")
    result = dict(schema=1, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  command=' '.join(['python', 'benchmarks/bench_conv.py'] + (sys.argv[1:] if argv is None else list(argv))),
                  quick=args.quick, machine=machine_info(),
                  settings=dict(sample_s=sample_s, warmup_s=warmup_s, budget_s=budget_s, min_rounds=min_rounds, lr=LR,
                                dtype='float32', batch=BATCH, image=[1, SIDE, SIDE], loss='MSE against one-hot targets',
                                threads=torch.get_num_threads()),
                  implementations=IMPL_DESCRIPTIONS, target={'minidl/torch': TARGET}, regimes=[])
    for reg in REGIMES:
        agree = check_agreement(reg['padding'])
        if not agree['ok']:
            sys.exit(f"{reg['name']}: minidl and torch disagree, not timing them: {agree}")
        wall, cpu, k = time_regime(reg['padding'], sample_s, warmup_s, budget_s, min_rounds)
        blocks = time_blocks(reg['padding'], *((2, 2) if args.quick else (40, 12)))
        bmed = {n: statistics.median(v) for n, v in blocks.items()}
        med = {n: statistics.median(v) for n, v in wall.items()}
        cmed = {n: statistics.median(v) for n, v in cpu.items()}
        ratio = med['minidl'] / med['torch']
        entry = dict(name=reg['name'], label=reg['label'], padding=reg['padding'], steps_per_sample=k, rounds=len(wall['minidl']),
                     time_s={n: dict(median=med[n], q1=statistics.quantiles(v, n=4)[0], q3=statistics.quantiles(v, n=4)[2],
                                     min=min(v), samples=v) for n, v in wall.items()},
                     cpu_time_s={n: dict(median=cmed[n], samples=v) for n, v in cpu.items()},
                     ratio=ratio, paired_ratio=statistics.median(a / b for a, b in zip(wall['minidl'], wall['torch'])),
                     cpu_ratio=cmed['minidl'] / cmed['torch'], met=ratio <= TARGET, agreement=agree,
                     blocks=dict(steps_per_block=2 if args.quick else 40,
                                 cpu_time_s={n: dict(median=bmed[n], samples=v) for n, v in blocks.items()},
                                 cpu_ratio=bmed['minidl'] / bmed['torch']),
                     breakdown=breakdown(reg['padding'], cmed['minidl'], stage_s))
        result['regimes'].append(entry)
        print(f"\n{reg['name']}: {reg['label']}")
        print(f"  agreement with torch: float32 max rel diff {agree['float32']['max_param_rel_diff']:.1e}, "
              f"float64 {agree['float64']['max_param_rel_diff']:.1e}")
        print(f"  minidl {us(med['minidl'])} us, torch {us(med['torch'])} us per step ({entry['rounds']} rounds of {k} steps)")
        print(f"  minidl/torch = {ratio:.3f} (target <= {TARGET}: {'met' if entry['met'] else 'MISSED'}); "
              f"per-round median {entry['paired_ratio']:.3f}; CPU time {entry['cpu_ratio']:.3f}")
        print(f"  in blocks of {entry['blocks']['steps_per_block']} consecutive steps (CPU time): minidl/torch = "
              f"{entry['blocks']['cpu_ratio']:.3f}")
        print("  where minidl's step goes (stages timed alone):")
        for name, v in entry['breakdown'].items():
            print(f"    {name:<48} {us(v['time_s']):>7} us  {100 * v['share']:5.1f} %")
    result['all_targets_met'] = all(r['met'] for r in result['regimes'])
    result['machine']['load_average_end'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    print(f"\nall targets met: {'yes' if result['all_targets_met'] else 'NO'}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out, 'w') as f: f.write(json.dumps(result, indent=1) + '\n')
        print(f"wrote {out}")

if __name__ == '__main__':
    main()
