"""The names experiment's models in torch.nn (the twins of `minidl.experiments.names`), trained by autograd and
torch.optim on the same batches, and the training step of each Transformer as a callable for the benchmark harness.

The package itself holds no torch.nn code (a test scans it), so the twins live here, beside the other benchmarks:

    from names_twins import torch_twin, train_torch, benchmark_step      # with benchmarks/ on sys.path

* `torch_twin(model)` -- the torch.nn copy of a minidl names model: the same architecture, the same `state_dict` keys,
  the same initial weights (copied with `load_state_dict`).
* `train_torch(name, seed, ...)` -- the twin of `run_names`: the same initial weights (the minidl model is built with
  the seed, then copied), the same batches (`batch_indices` with the same generator), torch's AdamW (with the same
  parameter groups, `adamw_groups`), torch's Muon where the recipe has it (`StackedMuon`: torch's Muon with minidl's
  `stacked` setting, built from torch's own iteration), and OneCycleLR with the same settings (`names_optimizers` with
  `optim=TORCH_OPTIM`), `nn.CrossEntropyLoss(ignore_index=-100)`, the mean of the last
  iterates kept at the end where the recipe asks for it (`IterateAverage`); dropout masks come from torch's global
  generator, seeded with the run's seed for the run and given back as it was after it, so that a twin's run repeats.
  torch's Muon runs its Newton-Schulz iteration in bfloat16; the twins run it in the
  parameters' dtype, as minidl's (`full_precision_muon`): the same computation, and on a processor without
  bfloat16 arithmetic ten times faster.
* `benchmark_step(batch_size=64, dtype=torch.float32, seed=0)` -- `(minidl_step, torch_step)`: two callables that each
  run one training step of the recipe's Transformer (forward, loss, backward, AdamW and Muon, one-cycle) on the next
  batch of training names; the same start, the same batches.

    python benchmarks/names_twins.py --model all --runs 3 --out names-results/torch   # the twins' rows of the table
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clean clone without installing
from minidl import LossCrossEntropy  # noqa: E402
from minidl.experiments.names import (  # noqa: E402
    MODELS,
    SPLIT_SEED,
    IterateAverage,
    _batches,
    _curve_set,
    _logits_2d,
    _pieces,
    batch_indices,
    evaluate_nll,
    names_data,
    names_optimizers,
)
from minidl.experiments.names_data import IGNORE, VOCAB, load_names_split  # noqa: E402
from minidl.testing import full_precision_muon  # noqa: E402

V = len(VOCAB)  # 27 characters


class StackedMuon(torch.optim.Muon):
    """`torch.optim.Muon` with minidl's `stacked` setting (per parameter group, default 1): a matrix that stacks k
    matrices along its rows (the attention's W_q, W_k, W_v: 3) is updated as those k matrices, each orthogonalised by
    torch's own Newton-Schulz iteration and scaled by torch's own rate for its shape. With `stacked=1` it is torch's
    update, operation for operation."""
    def __init__(self, params, *args, stacked=1, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.defaults['stacked'] = stacked
        for g in self.param_groups: g.setdefault('stacked', stacked)

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            lr, mu, k = g['lr'], g['momentum'], g['stacked']
            for p in g['params']:
                if p.grad is None: continue
                buf = self.state[p].setdefault('momentum_buffer', torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if g['nesterov'] else buf
                p.mul_(1 - lr * g['weight_decay'])
                for pi, ui in zip(p.chunk(k), update.chunk(k)):
                    o = _zeropower_via_newtonschulz(ui, g['ns_coefficients'], g['ns_steps'], g['eps'])
                    pi.add_(o, alpha=-_adjust_lr(lr, g['adjust_lr_fn'], pi.shape))


# `names_optimizers(..., optim=TORCH_OPTIM)`: torch's optimizers and schedules under minidl's names
TORCH_OPTIM = SimpleNamespace(AdamW=torch.optim.AdamW, Muon=StackedMuon, lr_scheduler=torch.optim.lr_scheduler)



class TorchBigram(nn.Module):
    def __init__(self, vocab=V):
        super().__init__(); self.vocab = vocab; self.linear = nn.Linear(vocab, vocab)
    def forward(self, x):
        return self.linear(nn.functional.one_hot(x.reshape(-1), self.vocab).to(self.linear.weight.dtype))


class TorchMLP(nn.Module):
    def __init__(self, context, embed, hidden, dropout, vocab=V):
        super().__init__()
        self.context, self.embed = context, embed
        self.emb, self.linear1, self.norm = (
            nn.Embedding(vocab, embed),
            nn.Linear(context * embed, hidden),
            nn.LayerNorm(hidden),
        )
        self.act, self.dropout, self.linear2 = nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, vocab)
    def forward(self, x):
        h = self.emb(x).reshape(x.shape[0], self.context * self.embed)
        return self.linear2(self.dropout(self.act(self.norm(self.linear1(h)))))


def geglu(x):
    "GEGLU: the halves (a, b) of the last dimension give a * gelu(b), as minidl's `GEGLU`"
    a, b = x.chunk(2, -1)
    return a * nn.functional.gelu(b)


class TorchTransformer(nn.Module):
    def __init__(self, block_size, d_model, nhead, layers, dim_feedforward, dropout, vocab=V, ff_dropout=None,
                 attn_dropout=None, activation='gelu'):
        super().__init__()
        self.tok, self.pos, self.drop = (
            nn.Embedding(vocab, d_model),
            nn.Embedding(block_size, d_model),
            nn.Dropout(dropout),
        )
        gated = activation == 'geglu'  # GEGLU: linear1 is 2F wide, its halves a and b give a * gelu(b)
        self.blocks = nn.Sequential(
            *[
                nn.TransformerEncoderLayer(
                    d_model, nhead, 2 * dim_feedforward if gated else dim_feedforward, dropout,
                    geglu if gated else 'gelu', batch_first=True, norm_first=True
                )
                for _ in range(layers)
            ]
        )
        if gated:
            for b in self.blocks: b.linear2 = nn.Linear(dim_feedforward, d_model)  # from the F-wide product
        if ff_dropout is not None:
            for b in self.blocks: b.dropout.p = ff_dropout  # the feed-forward hidden activations'
        if attn_dropout is not None:
            for b in self.blocks: b.self_attn.dropout = attn_dropout  # the attention weights'
        self.norm, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab)
        self.register_buffer(
            'mask', torch.triu(torch.ones(block_size, block_size, dtype=torch.bool), 1), persistent=False
        )
    def forward(self, x):
        T = x.shape[1]
        h = self.drop(self.tok(x) + self.pos(torch.arange(T, device=x.device)))
        for b in self.blocks: h = b(h, src_mask=self.mask[:T, :T])
        return self.head(self.norm(h))


def torch_twin(model):
    "The torch.nn copy of a minidl names model: same architecture, same state_dict keys, same values, same dtype"
    kind = type(model).__name__  # by name: the names notebook defines the classes in its own namespace
    if kind == 'OneHotBigram': t = TorchBigram(model.vocab)
    elif kind == 'NamesMLP':
        t = TorchMLP(model.context, model.embed, model.linear1.out_features, model.dropout.p, model.emb.num_embeddings)
    elif kind == 'NamesTransformer':
        b = model.blocks[0]
        t = TorchTransformer(
            model.block_size,
            model.d_model,
            b.self_attn.num_heads,
            len(model.blocks),
            b.linear2.in_features,
            model.drop.p,
            model.tok.num_embeddings,
            b.dropout.p,
            b.self_attn.dropout,
            model.activation,
        )
    else: raise TypeError(f"torch_twin expects a names model, got {kind}")
    dtype = model.parameters()[0].value.dtype
    t = t.to(dtype)
    t.load_state_dict(model.state_dict())
    return t


def _seeded_masks(train):
    "Run `train` with torch's global generator (the twins' dropout masks) seeded with the run's seed, then restored"
    @functools.wraps(train)
    def run(name, seed=0, *args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return train(name, seed, *args, **kwargs)
    return run


@_seeded_masks
def train_torch(
    name,
    seed=0,
    steps=None,
    lr=None,
    weight_decay=None,
    batch_size=None,
    build=None,
    points=20,
    dtype=torch.float32,
    data=None,
    final=True,
    model=None,
    train_names=None,
    pieces=None,
    average=None,
):
    ("The twin of `run_names` in torch.nn + autograd + torch.optim: the same start, the same batches (run as the "
     "same pieces); returns a dict of results")
    spec = MODELS[name]
    steps, lr = steps or spec.steps, spec.lr if lr is None else lr
    wd = spec.weight_decay if weight_decay is None else weight_decay
    data = data or names_data(spec.kind, spec.context, load_names_split(SPLIT_SEED))
    (x, y), (xv, yv) = data.train, data.val
    xc, yc = _curve_set(spec.kind, xv, yv)
    if model is None: model = (build or spec.build)(torch.Generator().manual_seed(seed)).to(dtype=dtype)
    t = torch_twin(model)
    t.train()
    dtype = next(t.parameters()).dtype
    opts, scheds = names_optimizers(t, spec, lr, wd, steps, optim=TORCH_OPTIM)
    avg = IterateAverage([p.detach() for p in t.parameters()], steps, spec.average if average is None else average)
    counts = spec.kind == 'counts'
    lossf = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction='none' if counts else 'mean')
    if counts: w, y = data.weight.to(dtype), y.to(dtype)  # the smoothed table: sum_a w_a CE(P_a, p(. | a))
    marks = sorted({max(1, round(steps * (i + 1) / points)) for i in range(points)}) if points else []
    curve, losses, last = dict(step=[], train_loss=[], val_nll=[]), torch.zeros(steps, dtype=torch.float64), 0
    gb = torch.Generator().manual_seed(seed + 1)
    seconds, cpu, t0, c0 = 0.0, 0.0, time.perf_counter(), time.process_time()
    lengths = y.ne(IGNORE).sum(1) if spec.kind == 'sequence' else None
    for i, ix in enumerate(_batches(spec.kind, y, batch_size or spec.batch_size, steps, gb)):
        for o in opts: o.zero_grad()
        loss = 0.0
        for piece, share in _pieces(ix, lengths, pieces or spec.pieces):  # the pieces of `run_names`
            out = t(x[piece])
            part = lossf(out, y[piece]) @ w if counts else lossf(_logits_2d(out), y[piece].reshape(-1))
            (part * share).backward()
            loss = loss + part.detach() * share
        with full_precision_muon():
            for o, s in zip(opts, scheds): o.step(); s.step()
        avg.update(i + 1)  # as `run_names`: the mean of the last iterates is scored
        losses[i] = loss
        if i + 1 in marks and points:
            seconds += time.perf_counter() - t0; cpu += time.process_time() - c0
            curve['step'].append(i + 1); curve['train_loss'].append(float(losses[last:i + 1].mean())); last = i + 1
            with torch.no_grad(): curve['val_nll'].append(evaluate_nll(t, xc, yc))
            t0, c0 = time.perf_counter(), time.process_time()
    if not points: seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    avg.apply()
    scored = [data.train_pairs or data.train, data.val, data.test]
    if train_names is not None:
        scored[0] = _curve_set('sequence' if spec.kind == 'sequence' else 'context', *scored[0], train_names)
    with torch.no_grad():
        nll = [evaluate_nll(t, *xy) if final else math.nan for xy in scored]
    return dict(
        name=name,
        seed=seed,
        model=t,
        steps=steps,
        curve=curve,
        train_nll=nll[0],
        val_nll=nll[1],
        test_nll=nll[2],
        seconds=seconds,
        cpu_seconds=cpu,
        ms_per_step=1000 * seconds / steps,
        parameters=sum(p.numel() for p in t.parameters()),
    )


def benchmark_step(batch_size=None, dtype=torch.float32, seed=0, dropout=None):
    """`(minidl_step, torch_step)`: one training step of the recipe's names Transformer each (forward,
    cross-entropy with
    ignore_index, backward, AdamW and Muon, one-cycle), on the next batch of training names run as the recipe's pieces;
    the same start and the same batches"""
    spec = MODELS['transformer']
    B = batch_size or spec.batch_size
    x, y = names_data('sequence', spec.context, load_names_split(SPLIT_SEED)).train
    m = spec.build(torch.Generator().manual_seed(seed)).to(dtype=dtype)
    if dropout is not None:
        for mod in m.modules():
            if hasattr(mod, 'p') and type(mod).__name__ == 'Dropout': mod.p = dropout
            if type(mod).__name__ == 'CausalSelfAttention' and dropout is not None: mod.dropout = dropout
    t = torch_twin(m)
    m.train(); t.train()
    total = 10**7  # a schedule long enough for any benchmark
    mopts = names_optimizers(m, spec, spec.lr, spec.weight_decay, total)
    topts = names_optimizers(t, spec, spec.lr, spec.weight_decay, total, optim=TORCH_OPTIM)
    mloss, tloss = LossCrossEntropy(ignore_index=IGNORE), nn.CrossEntropyLoss(ignore_index=IGNORE)
    mb = batch_indices(x.shape[0], B, total, torch.Generator().manual_seed(seed + 1))
    tb = batch_indices(x.shape[0], B, total, torch.Generator().manual_seed(seed + 1))

    lengths = y.ne(IGNORE).sum(1)

    def minidl_step():
        ix = next(mb)
        for o in mopts[0]: o.zero_grad()
        for piece, share in _pieces(ix, lengths, spec.pieces):  # as `run_names`
            out = m(x[piece])
            mloss(_logits_2d(out), y[piece].reshape(-1))
            m.backward(mloss.backward().view(out.shape) * share)
        for o, s in zip(*mopts): o.step(); s.step()

    def torch_step():
        ix = next(tb)
        for o in topts[0]: o.zero_grad()
        for piece, share in _pieces(ix, lengths, spec.pieces):
            (tloss(_logits_2d(t(x[piece])), y[piece].reshape(-1)) * share).backward()
        with full_precision_muon():
            for o, s in zip(*topts): o.step(); s.step()

    minidl_step.model, torch_step.model = m, t
    return minidl_step, torch_step


def main(argv=None):
    p = argparse.ArgumentParser(prog='names_twins', description="Train the torch.nn twins of the names "
                                                                "models (the table's torch rows)")
    p.add_argument('--model', choices=('bigram', 'mlp', 'transformer', 'all'), default='all')
    p.add_argument('--runs', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--steps', type=int, default=None)
    p.add_argument('--out', type=Path, default=Path('names-results/torch'))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = ('bigram', 'mlp', 'transformer') if args.model == 'all' else (args.model,)
    split = load_names_split(SPLIT_SEED)
    res = {'settings': dict(runs=args.runs, seeds=list(range(args.seed, args.seed + args.runs)), steps=args.steps,
                            threads=1, torch=torch.__version__, split_seed=SPLIT_SEED)}
    wall = time.perf_counter()
    for n in names:
        data = names_data(MODELS[n].kind, MODELS[n].context, split)
        rs = []
        for s in range(args.seed, args.seed + args.runs):
            r = train_torch(n, s, steps=args.steps, data=data)
            print(f"torch {n} seed {s}: train {r['train_nll']:.4f} val {r['val_nll']:.4f} test {r['test_nll']:.4f} "
                  f"({r['seconds']:.1f} s, {r['cpu_seconds']:.1f} s CPU, {r['ms_per_step']:.1f} ms/step)", flush=True)
            rs.append(r)
        res[n] = {
            k: [r[k] for r in rs]
            for k in (
                'train_nll',
                'val_nll',
                'test_nll',
                'seconds',
                'cpu_seconds',
                'ms_per_step',
                'seed',
                'curve',
            )
        }
        res[n]['parameters'], res[n]['steps'] = rs[0]['parameters'], rs[0]['steps']
    res['settings']['wall_seconds'] = time.perf_counter() - wall
    args.out.mkdir(parents=True, exist_ok=True)
    from minidl.experiments.common import write_json
    write_json(args.out/'results.json', res)
    print(f"wrote {args.out/'results.json'}")
    return 0


if __name__ == '__main__': raise SystemExit(main())
