"""Time one full training step of the same MLP in three implementations, interleaved, and save the result.

    python benchmarks/bench.py            # full run (a few minutes): prints the table, writes benchmarks/results.json
    python benchmarks/bench.py --quick    # smoke run (seconds): prints the table, writes only with --out FILE

A training step is `zero_grad`, forward, BCE loss, backward, SGD update, for

* **minidl** -- `Sequential` of `Linear`/`ReLU`/`Sigmoid`, `LossBCE`, `SGD`; the backward pass is called with
  `input_grad=False` (the input is data: the first layer skips the product that would compute its gradient);
* **torch** -- `torch.nn.Sequential` + `torch.nn.BCELoss` + autograd + `torch.optim.SGD`, all with their defaults
  (what a user would pick instead of minidl);
* **hand** -- a hand-written loop on raw tensors: the same maths and the same kernels as minidl, without modules,
  without input checks, without gradient buffers (each step's gradients are fresh tensors, handed to the update):
  the floor that a layered design can approach.

All three start from the same weights and train on the same batch with the same learning rate; before timing, the
script runs a few steps of each and checks that they agree (same maths), and stops if they do not.

Timing: one thread (`torch.set_num_threads(1)`, printed), warm-up steps first, then rounds in which each
implementation runs a short sample of consecutive steps (about 10 ms), in rotating order (A B C, B C A, C A B, ...),
for up to 201 rounds or about 25 s per regime. The table shows the median over rounds of the time per step and the
ratios of those medians (the targets apply to these). Short samples and many rounds make the medians robust on a
busy machine: a sample that the scheduler interrupts lands in the tail, not in the median. The JSON also keeps every
sample, the quartiles, and the median of the per-round ratios (each round's samples ran back to back).

Peak memory: each implementation runs once more in its own fresh Python process per regime. After a tiny warm-up
model has loaded every code path, the process's peak resident set size (Linux `VmHWM`) is reset to its current size
(`/proc/self/clear_refs`); the model is then built and trained for a few steps. The figure is the growth of the peak
RSS over that baseline: parameters, gradient buffers, activations, temporaries, the autograd graph, and whatever the
allocator keeps -- what the operating system sees. The children run with glibc's `MALLOC_MMAP_THRESHOLD_=131072`, so
that every block over 128 KiB is mapped when a tensor is allocated and unmapped when it is freed: by default glibc
raises that threshold as the program runs and keeps freed blocks resident, which made the figure vary by tens of MiB
from run to run; with it, the figure follows the peak of the live tensors, to within a few MiB. It is meaningful only
when the tensors are large (the wide regime; for the circle MLP it is the few MiB of libraries' buffers). Where
`/proc/self/clear_refs` is missing it is `null`. On CUDA (`--device cuda`) it is `torch.cuda.max_memory_allocated`
over the same steps instead: the tensors only.

Ops per step: operator calls seen by `torch.profiler` during one step, counting the outermost `aten::` calls only
(an operator that calls others counts once); for torch.nn this includes the operators its autograd engine runs.
"""
from __future__ import annotations
import argparse, contextlib, datetime, gc, json, math, os, platform, statistics, subprocess, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
import minidl, minidl.files

IMPLS = ('minidl', 'torch', 'hand')
IMPL_DESCRIPTIONS = {
    'minidl': "minidl: Sequential(Linear, ReLU, ..., Sigmoid), LossBCE, SGD; backward(..., input_grad=False)",
    'torch': "torch.nn.Sequential + torch.nn.BCELoss + autograd + torch.optim.SGD (defaults)",
    'hand': "hand-written loop on raw tensors: same maths and kernels as minidl, no modules, no checks",
}
CIRCLE, WIDE = [2, 25, 25, 25, 25, 1], [256, 1024, 1024, 1]
# name, label, layer sizes, batch, targets (maximum minidl/torch and minidl/hand, from the performance issue)
REGIMES = [
    dict(name='circle-10', label='circle MLP 2-25-25-25-25-1, batch 10', sizes=CIRCLE, batch=10,
         targets={'minidl/torch': 0.60, 'minidl/hand': 1.25}),
    dict(name='circle-100', label='circle MLP 2-25-25-25-25-1, batch 100', sizes=CIRCLE, batch=100,
         targets={'minidl/torch': 0.60, 'minidl/hand': 1.25}),
    dict(name='circle-1000', label='circle MLP 2-25-25-25-25-1, batch 1000', sizes=CIRCLE, batch=1000,
         targets={'minidl/torch': 0.90, 'minidl/hand': 1.25}),
    dict(name='wide-2048', label='wide MLP 256-1024-1024-1, batch 2048', sizes=WIDE, batch=2048,
         targets={'minidl/torch': 1.05, 'minidl/hand': 1.25}),
]
LR = 0.05

# ---------------------------------------------------------------- same weights, same data

SUITES = {'conv': 'bench_conv.py', 'digits': 'bench_digits.py', 'optim': 'bench_optim.py'}  # --suites: the other benchmark scripts

def init_weights(sizes, seed=0):
    "Weights and biases drawn like torch.nn.Linear's, U[-1/sqrt(in), 1/sqrt(in)], from a seeded generator."
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / math.sqrt(n_in)
        w = torch.empty(n_out, n_in).uniform_(-bound, bound, generator=gen)
        b = torch.empty(n_out).uniform_(-bound, bound, generator=gen)
        out.append((w, b))
    return out

def make_data(sizes, batch, seed=1):
    "Circle regimes: points in the unit square, label 1 inside the disc of area 1/2; wide: Gaussian inputs, random labels."
    gen = torch.Generator().manual_seed(seed)
    if sizes[0] == 2:
        x = torch.rand(batch, 2, generator=gen)
        t = ((x - 0.5).pow(2).sum(1, keepdim=True) < 1 / (2 * math.pi)).float()
    else:
        x = torch.randn(batch, sizes[0], generator=gen)
        t = (torch.rand(batch, 1, generator=gen) > 0.5).float()
    return x, t

# ---------------------------------------------------------------- the three implementations
# Each builder returns (step, parameters): step(x, t) runs one training step and returns the loss.

def minidl_builder(Lin, Rl, Sg, Loss, input_grad=False):
    "A builder for minidl's network made of these classes (`ablation.py` passes older versions of them)."
    from minidl import Sequential, SGD
    def build(weights, lr=LR):
        layers = []
        for i, (w, b) in enumerate(weights):
            lin = Lin(w.shape[1], w.shape[0], device=w.device)  # on the weights' device (--device)
            lin.weight.value.copy_(w); lin.bias.value.copy_(b)
            layers += [lin, Rl() if i < len(weights) - 1 else Sg()]
        model, loss_fn = Sequential(*layers), Loss()
        opt = SGD(model.parameters(), lr=lr)
        def step(x, t):
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            if input_grad: model.backward(loss_fn.backward())
            else: model.backward(loss_fn.backward(), input_grad=False)  # the first layer's input is data
            opt.step()
            return loss
        return step, [p.value for p in model.parameters()]
    return build

def build_minidl(weights, lr=LR):
    return minidl_builder(minidl.Linear, minidl.ReLU, minidl.Sigmoid, minidl.LossBCE)(weights, lr)

def build_torch(weights, lr=LR):
    nn = torch.nn
    layers = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0], device=w.device)  # on the weights' device (--device)
        with torch.no_grad(): lin.weight.copy_(w); lin.bias.copy_(b)
        layers += [lin, nn.ReLU() if i < len(weights) - 1 else nn.Sigmoid()]
    model, loss_fn = nn.Sequential(*layers), nn.BCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    def step(x, t):
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss
    return step, list(model.parameters())

def build_hand(weights, lr=LR):
    eps = float(torch.tensor(1e-12, dtype=torch.float32))  # PyTorch's BCE epsilon, as minidl's LossBCE
    params = [p.clone() for wb in weights for p in wb]     # [W1, b1, W2, b2, ...]
    Ws, bs = params[0::2], params[1::2]
    n_layers = len(Ws)
    def step(x, t):
        hs = [x]                                           # inputs of each layer, then the output
        for i in range(n_layers):
            z = torch.addmm(bs[i], hs[-1], Ws[i].t())      # z = h W^T + b
            hs.append(torch.relu(z) if i < n_layers - 1 else torch.sigmoid(z))
        p = hs[-1]
        loss = torch.lerp(torch.neg(p).log1p_().clamp_(min=-100), torch.log(p).clamp_(min=-100), t).mean().neg_()
        g = torch.sub(p, t).div_((1 - p).mul_(p).clamp_(min=eps)).div_(p.numel())  # dL/dp = (p - t) / max((1 - p) p, eps) / n
        g = (1 - p).mul_(g).mul_(p)                        # dL/dz of the last layer: G (1 - p) p
        grads = [None] * (2 * n_layers)
        for i in reversed(range(n_layers)):
            gt = g.t()
            grads[2 * i] = torch.mm(gt, hs[i])             # dL/dW = G^T h
            grads[2 * i + 1] = g.sum(0)                    # dL/db = sum over the batch
            if i > 0: g = torch.sign(hs[i]).mul_(torch.mm(g, Ws[i]))  # dL/dz of the layer below: 1[h > 0] * G W
        torch._foreach_add_(params, grads, alpha=-lr)
        return loss
    return step, params

BUILDERS = {'minidl': build_minidl, 'torch': build_torch, 'hand': build_hand}

def to_device(weights, x, t, device):
    return [(w.to(device), b.to(device)) for w, b in weights], x.to(device), t.to(device)

# ---------------------------------------------------------------- checks, timing, op counts

def check_agreement(sizes, batch, device, nb_steps=3):
    "Run a few steps of each implementation from the same weights; return the largest parameter and loss differences."
    weights, x, t = to_device(init_weights(sizes), *make_data(sizes, batch), device)
    results = {}
    for name in IMPLS:
        step, params = BUILDERS[name](weights)
        losses = [step(x, t).item() for _ in range(nb_steps)]
        results[name] = (losses, [p.detach().clone() for p in params])
    ref_losses, ref_params = results['torch']
    out = {}
    for name in ('minidl', 'hand'):
        losses, params = results[name]
        out[name] = dict(max_param_diff=max(float((p - q).abs().max()) for p, q in zip(params, ref_params)),
                         max_loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)))
    ok = all(v['max_param_diff'] < 1e-5 and v['max_loss_diff'] < 1e-5 * max(1.0, abs(ref_losses[0])) for v in out.values())
    return dict(ok=ok, vs_torch=out)

@contextlib.contextmanager
def quiet_stderr():
    "Silence file descriptor 2 for the block: the profiler's C++ logging writes there directly, bypassing sys.stderr."
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2); os.close(saved)

def count_ops(step, x, t):
    "Outermost aten:: operator calls during one step (see the module docstring)."
    from torch.profiler import profile, ProfilerActivity
    step(x, t)
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof: step(x, t)
    n = 0
    for e in prof.events():
        if not e.name.startswith('aten::'): continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith('aten::'): parent = parent.cpu_parent
        n += parent is None
    return n

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def time_regime(sizes, batch, device, rounds, sample_s, warmup_s, budget_s, builders=None):
    "Interleaved timing: per round, each implementation runs `k` steps, in rotating order; returns seconds per step."
    builders = builders or {name: BUILDERS[name] for name in IMPLS}
    names = tuple(builders)
    weights, x, t = to_device(init_weights(sizes), *make_data(sizes, batch), device)
    steps = {name: build(weights)[0] for name, build in builders.items()}
    # calibrate the number of steps per sample so that one sample lasts about sample_s
    per_step = 0.0
    for step in steps.values():
        step(x, t); sync(device)
        t0 = time.perf_counter(); step(x, t); sync(device)
        per_step = max(per_step, time.perf_counter() - t0)
    k = max(1, round(sample_s / per_step))
    if rounds is None: rounds = max(15, min(201, int(budget_s / (len(names) * k * per_step))))
    # warm-up, interleaved too
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        for step in steps.values():
            for _ in range(k): step(x, t)
    sync(device)
    gc.collect()  # start from a clean heap; during the rounds the collector runs as it would in a training loop
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # A B C, B C A, C A B, ...
        for name in order:
            step = steps[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(k): step(x, t)
            sync(device)
            samples[name].append((time.perf_counter() - t0) / k)
    ops = {name: count_ops(step, x, t) for name, step in steps.items()} if device.type == 'cpu' else None
    return samples, k, ops

# ---------------------------------------------------------------- peak memory, one fresh process per measurement

def _status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'): return int(line.split()[1])
    return None

def memory_child(impl, regime_names, device_name, threads, nb_steps=3):
    "Runs in a fresh process: print {regime: peak memory growth in MiB} of training `impl`, as JSON."
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    tiny = [2, 3, 1]                                       # load every code path on a tiny model first
    w, x, t = to_device(init_weights(tiny), *make_data(tiny, 4), device)
    step, _ = BUILDERS[impl](w)
    for _ in range(2): step(x, t)
    del step, w, x, t
    out = {}
    for name in regime_names.split(','):                   # one regime per process, except in --quick runs
        regime = next(r for r in REGIMES if r['name'] == name)
        gc.collect()
        x, t = make_data(regime['sizes'], regime['batch'])
        x, t = x.to(device), t.to(device)
        if device.type == 'cuda':
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            try:
                with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # reset the peak RSS to the current RSS
            except OSError:
                out[name] = None; continue
            base = _status_kib('VmRSS') * 1024
        step, _ = BUILDERS[impl](to_device(init_weights(regime['sizes']), x, t, device)[0])
        for _ in range(nb_steps): step(x, t)
        if device.type == 'cuda':
            torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = _status_kib('VmHWM') * 1024
        out[name] = (peak - base) / 2**20
        del step, x, t
    print(json.dumps(out))

def measure_memory(regimes, device, threads, parallel, one_process_per_regime=True):
    "Launch child processes (one per implementation and regime); returns {regime name: {impl: MiB or None}}."
    names = [r['name'] for r in regimes]
    groups = [[n] for n in names] if one_process_per_regime else [names]
    jobs = [(impl, ','.join(g)) for g in groups for impl in IMPLS]
    out = {n: {impl: None for impl in IMPLS} for n in names}
    running = []
    def finish(job, proc):
        stdout, stderr = proc.communicate()
        try:
            for name, mib in json.loads(stdout.strip().splitlines()[-1]).items(): out[name][job[0]] = mib
        except (ValueError, IndexError, AttributeError):
            print(f"memory measurement failed for {job}: {stderr[-500:]}", file=sys.stderr)
    for job in jobs:
        cmd = [sys.executable, __file__, '--memory-child', *job, '--device', str(device), '--threads', str(threads)]
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')  # glibc: see the module docstring
        running.append((job, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
        if len(running) >= parallel: finish(*running.pop(0))
    for job, proc in running: finish(job, proc)
    return out

# ---------------------------------------------------------------- report

def machine_info(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration): pass
    mem_gib = None
    try:
        with open('/proc/meminfo') as f: mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError): pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(), memory_gib=mem_gib, os=platform.platform(),
                python=platform.python_version(), torch=torch.__version__, minidl=minidl.__version__,
                torch_threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                mkl=torch.backends.mkl.is_available(), device=str(device),
                load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None)
    if device.type == 'cuda': info['gpu'] = torch.cuda.get_device_name(device)
    return info

def quantiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return dict(median=statistics.median(v), q1=q[0], q3=q[2], min=min(v))

def fmt_us(s): return f"{s * 1e6:,.0f}" if s * 1e6 >= 100 else f"{s * 1e6:.1f}"

def print_table(result):
    head = (f"{'regime':<12} {'batch':>5} | {'minidl us':>10} {'torch us':>10} {'hand us':>10} | "
            f"{'m/torch':>7} {'target':>6} {'m/hand':>7} {'target':>6} | {'ops m/t/h':>11} | {'peak MiB m/t/h':>18}")
    print(head); print('-' * len(head))
    for r in result['regimes']:
        med = {k: v['median'] for k, v in r['time_s'].items()}
        rt, tg, met = r['ratios'], r['targets'], r['met']
        ops = '/'.join(str(r['ops_per_step'][k]) for k in IMPLS) if r['ops_per_step'] else '-'
        mem = r['peak_memory_mib']
        mem = '/'.join('-' if mem is None or mem.get(k) is None else f"{mem[k]:.1f}" for k in IMPLS)
        mark = lambda key: ' ' if met[key] else '!'
        print(f"{r['name']:<12} {r['batch']:>5} | {fmt_us(med['minidl']):>10} {fmt_us(med['torch']):>10} {fmt_us(med['hand']):>10} | "
              f"{rt['minidl/torch']:>6.3f}{mark('minidl/torch')} {tg['minidl/torch']:>6.2f} "
              f"{rt['minidl/hand']:>6.3f}{mark('minidl/hand')} {tg['minidl/hand']:>6.2f} | {ops:>11} | {mem:>18}")
    print(f"\nper-step medians over interleaved rounds; m = minidl; '!' marks a missed target. "
          f"All targets met: {'yes' if result['all_targets_met'] else 'NO'}")

def resolve_device(name, parser):
    "The device of --device ('auto': cuda if available); a clear one-line error if CUDA is asked for and absent."
    if name == 'auto': name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch %s%s); use --device cpu"
                     % (torch.__version__, ', built without CUDA' if torch.version.cuda is None else ''))
    return torch.device(name)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smoke run: few rounds, short samples (numbers are not meaningful)')
    ap.add_argument('--out', type=Path, default=None, help='JSON output (default: benchmarks/results.json; --quick: none)')
    ap.add_argument('--rounds', type=int, default=None, help='timed rounds per regime (default: up to 201 within about 25 s; --quick: 3)')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda', 'auto'),
                    help="where every implementation runs: models, data and loss (default: cpu; auto: cuda if available)")
    ap.add_argument('--regimes', default=None, help='comma-separated regime names (default: all)')
    ap.add_argument('--no-memory', action='store_true', help='skip the peak-memory child processes')
    ap.add_argument('--suites', default='', help=f"also run these benchmark scripts afterwards, one at a time, each writing its own "
                    f"results_*.json: comma-separated names from {', '.join(SUITES)}, or 'all' (default: none)")
    ap.add_argument('--memory-child', nargs=2, metavar=('IMPL', 'REGIMES'), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    suites = list(SUITES) if args.suites == 'all' else [x for x in args.suites.split(',') if x]
    if bad := [x for x in suites if x not in SUITES]: ap.error(f"--suites: unknown {', '.join(bad)} (expected {', '.join(SUITES)} or all)")
    if args.memory_child:
        return memory_child(*args.memory_child, args.device, args.threads)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, ap)
    rounds = args.rounds or (3 if args.quick else None)
    sample_s, warmup_s, budget_s = (0.003, 0.02, 0) if args.quick else (0.01, 1.0, 25.0)
    regimes = REGIMES if not args.regimes else [r for r in REGIMES if r['name'] in args.regimes.split(',')]
    out = args.out if args.out is not None else (None if args.quick else ROOT / 'benchmarks' / 'results.json')
    print(f"minidl {minidl.__version__}, torch {torch.__version__}, device {device}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}{' (quick run: the numbers mean nothing)' if args.quick else ''}")

    result = dict(schema=1, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  command=' '.join(['python', 'benchmarks/bench.py'] + (sys.argv[1:] if argv is None else list(argv))),
                  quick=args.quick, machine=machine_info(device),
                  settings=dict(rounds=rounds or 'auto', sample_s=sample_s, warmup_s=warmup_s, budget_s=budget_s, lr=LR, dtype='float32',
                                threads=torch.get_num_threads()),
                  implementations=IMPL_DESCRIPTIONS, regimes=[])
    for reg in regimes:
        agree = check_agreement(reg['sizes'], reg['batch'], device)
        if not agree['ok']:
            sys.exit(f"{reg['name']}: the implementations disagree, not timing them: {agree}")
        samples, k, ops = time_regime(reg['sizes'], reg['batch'], device, rounds, sample_s, warmup_s, budget_s)
        med = {name: statistics.median(v) for name, v in samples.items()}
        ratios = {'minidl/torch': med['minidl'] / med['torch'], 'minidl/hand': med['minidl'] / med['hand']}
        paired = {f'minidl/{b}': statistics.median(m / o for m, o in zip(samples['minidl'], samples[b])) for b in ('torch', 'hand')}
        result['regimes'].append(dict(
            name=reg['name'], label=reg['label'], sizes=reg['sizes'], batch=reg['batch'], steps_per_sample=k,
            rounds=len(samples['minidl']), time_s={name: dict(quantiles(v), samples=v) for name, v in samples.items()},
            ratios=ratios, paired_ratios=paired, targets=reg['targets'], met={key: ratios[key] <= reg['targets'][key] for key in ratios},
            ops_per_step=ops, agreement=agree, peak_memory_mib=None))
        print(f"  {reg['name']}: minidl {fmt_us(med['minidl'])} us, torch {fmt_us(med['torch'])} us, "
              f"hand {fmt_us(med['hand'])} us per step ({len(samples['minidl'])} rounds of {k} steps)", flush=True)
    if not args.no_memory:
        mem = measure_memory(regimes, device, args.threads, parallel=1 if device.type == 'cuda' else max(1, min(4, os.cpu_count() or 1)),
                             one_process_per_regime=not args.quick)
        for r in result['regimes']: r['peak_memory_mib'] = mem[r['name']]
    result['all_targets_met'] = all(all(r['met'].values()) for r in result['regimes'])
    result['machine']['load_average_end'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    print()
    print_table(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with minidl.files.atomic_open(out, 'w') as f: f.write(json.dumps(result, indent=1) + '\n')  # whole or not at all
        print(f"wrote {out}")
    for name in suites:  # the other benchmarks (CNN, digits, optimizers) are scripts of their own: run each in a fresh process
        cmd = [sys.executable, str(ROOT / 'benchmarks' / SUITES[name])] + (['--quick'] if args.quick else [])
        print(f"\n== {' '.join(['python', 'benchmarks/' + SUITES[name]] + cmd[2:])}", flush=True)
        if subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads))).returncode != 0:
            sys.exit(f"benchmarks/{SUITES[name]} failed")
    return result

if __name__ == '__main__':
    main()
