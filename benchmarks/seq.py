"""The sequence layers and a decoder-only Transformer's training step against torch.nn + autograd (+ torch.optim.AdamW).

One forward + backward of Softmax, LogSoftmax, GELU, LayerNorm, CausalSelfAttention and a TransformerBlock against
the torch.nn module and autograd, and one training step (zero_grad, forward, cross-entropy over the B*T next-token
predictions, backward, AdamW) of a small decoder-only Transformer against the same model in torch.nn; float32,
interleaved by the harness (samples of about 20 ms, at least 11 rounds, about 2 s per case).

The same decoder step is also timed against a hand-written loop of the same maths (`decoder_hand`: raw tensors, the
formulas of minidl's layers, fresh gradient tensors, one multi-tensor AdamW; no modules, no checks), after checking
in float64 that both give the same weights after three steps: what minidl's modules and checks cost on a step whose
kernels are larger than the circle MLP's.
"""
import math

import torch
import torch.nn.functional as F

from benchmarks import core
from benchmarks.layers import module_step, run_cases
from minidl import (
    GELU,
    AdamW,
    CausalSelfAttention,
    Embedding,
    LayerNorm,
    Linear,
    LogSoftmax,
    LossCrossEntropy,
    Module,
    Sequential,
    Softmax,
    TransformerBlock,
)
from minidl.nn.activation import _gelu, _gelu_vjp, _log_softmax
from minidl.nn.attention import _causal_mask, _softmax_rows
from minidl.nn.linear import _ones, _scalar

QUICK = dict(sample_s=0.002, warmup_s=0.0, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.02, warmup_s=0.2, budget_s=2.0, min_rounds=11, max_rounds=201)
TARGETS = {
    'Softmax': 1.3,
    'LogSoftmax': 1.3,
    'GELU': 1.5,
    'LayerNorm(512)': 1.5,
    'LayerNorm(64)': 1.5,
    'decoder step': 0.9,
}


def torch_module_step(m, x, g, owner=None):
    ("One torch forward + autograd backward (input gradient and parameter gradients, like minidl); `owner` "
     "holds m's parameters.")
    xr = x.clone().requires_grad_()
    params = list((owner or m).parameters())
    def step():
        xr.grad = None
        for p in params: p.grad = None
        m(xr).backward(g)
    return step


class DecoderLM(Module):
    "Token + position embeddings, pre-norm causal blocks, a final LayerNorm, a linear head (as nbs/22_transformer)."
    def __init__(self, V, T, E, H, L, FF, generator=None):
        self.tok, self.pos = Embedding(V, E, generator=generator), Embedding(T, E, generator=generator)
        self.blocks = Sequential(*[TransformerBlock(E, H, FF, generator=generator) for _ in range(L)])
        self.norm, self.head = LayerNorm(E), Linear(E, V, generator=generator)
    def forward(self, idx):
        self._save_for_backward()
        return self.head(self.norm(self.blocks(self.tok(idx) + self.pos(torch.arange(idx.shape[1])))))
    def backward(self, g, input_grad=True):
        self._saved_tensors()
        g = self.blocks.backward(self.norm.backward(self.head.backward(g)))
        self.tok.backward(g)
        self.pos.backward(g.sum(0))


class TorchDecoderLM(torch.nn.Module):
    "The same model in torch.nn (the same state_dict keys)."
    def __init__(self, V, T, E, H, L, FF):
        super().__init__()
        self.tok, self.pos = torch.nn.Embedding(V, E), torch.nn.Embedding(T, E)
        self.blocks = torch.nn.Sequential(*[torch.nn.TransformerEncoderLayer(E, H, FF, 0.0, 'gelu', batch_first=True,
                                                                             norm_first=True) for _ in range(L)])
        self.norm, self.head = torch.nn.LayerNorm(E), torch.nn.Linear(E, V)
        self.register_buffer('mask', torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)
    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for b in self.blocks: x = b(x, src_mask=self.mask)
        return self.head(self.norm(x))


DECODER = dict(V=27, T=16, B=64, E=64, H=4, L=4, FF=256)


def decoder_minidl(V=27, T=16, B=64, E=64, H=4, L=4, FF=256, dtype=torch.float32):
    ("minidl's decoder, its AdamW, and one batch: `(model, step, x, y)`; `step()` is one training step (cross-entropy "
     "over the B*T next-token predictions).")
    gen = torch.Generator().manual_seed(0)
    ours = DecoderLM(V, T, E, H, L, FF, generator=gen).to(dtype)
    opt, ce = AdamW(ours.parameters(), lr=1e-3), LossCrossEntropy()
    idx = torch.randint(0, V, (B, T + 1), generator=gen)
    x, y = idx[:, :-1], idx[:, 1:].reshape(-1)
    def step():
        opt.zero_grad()
        loss = ce(ours(x).reshape(-1, V), y)
        ours.backward(ce.backward().view(B, T, V))
        opt.step()
        return loss
    return ours, step, x, y


def decoder_steps(V=27, T=16, B=64, E=64, H=4, L=4, FF=256):
    "One AdamW training step of each model on the same batch (cross-entropy over the B*T next-token predictions)."
    ours, step, x, y = decoder_minidl(V, T, B, E, H, L, FF)
    ref = TorchDecoderLM(V, T, E, H, L, FF)
    ref.load_state_dict(ours.state_dict())
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    def ref_step():
        ref_opt.zero_grad()
        F.cross_entropy(ref(x).reshape(-1, V), y).backward()
        ref_opt.step()
    return step, ref_step


# ---------------------------------------------------------------- the decoder's step by hand

def decoder_hand(ours: DecoderLM, B: int, T: int, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    ("The decoder's AdamW training step written by hand on raw tensors from `ours`'s weights (copies): the same "
     "formulas as minidl's layers (its own tensor helpers: the causal mask, the row softmax, GELU and its "
     "derivative, the log-softmax), without modules, checks or containers, with fresh gradient tensors and "
     "one multi-tensor AdamW; returns `(step, parameters)`, the parameters in `ours.parameters()`'s order.")
    names = [n for n, _ in ours.named_parameters()]
    P = {n: p.value.clone() for n, p in ours.named_parameters()}
    params = [P[n] for n in names]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    blocks = [{k: P[f'blocks.{i}.{k}'] for k in ('self_attn.in_proj_weight', 'self_attn.in_proj_bias',
                                                 'self_attn.out_proj.weight', 'self_attn.out_proj.bias',
                                                 'linear1.weight', 'linear1.bias', 'linear2.weight', 'linear2.bias',
                                                 'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias')}
              for i in range(len(ours.blocks))]
    attn = ours.blocks[0].self_attn
    E, H, D = attn.embed_dim, attn.num_heads, attn.head_dim
    ln_eps = ours.norm.eps
    (b1, b2), t_step = betas, [0]
    dt = params[0].dtype
    mask, eps_t = _causal_mask(T, dt, params[0].device), _scalar(ln_eps, dt, params[0].device)
    ones = _ones(B * T, dt, params[0].device)
    pos_idx = torch.arange(T)

    def ln(x2, w, b):  # LayerNorm of the rows of x2: (x - mu) s gamma + beta, s = 1 / sqrt(|x - mu|^2 / E + eps)
        xc = torch.sub(x2, x2.sum(1, keepdim=True), alpha=1 / E)
        n = torch.linalg.vector_norm(xc, dim=1, keepdim=True)
        s = torch.addcmul(eps_t, n, n, value=1 / E).rsqrt_()
        s.add_(n, alpha=0)
        xhat = xc.mul_(s)
        return torch.addcmul(b, xhat, w), (xhat, s, w)

    def ln_back(g, saved):  # (dL/dx, dL/dgamma, dL/dbeta)
        xhat, s, w = saved
        gx = g * xhat
        dw, db = torch.mv(gx.t(), ones), torch.mv(g.t(), ones)
        neg_mean_g = torch.addmv(ones, g, w, beta=0, alpha=-1 / E).unsqueeze_(1)
        neg_mean_gx = torch.addmv(ones, gx, w, beta=0, alpha=-1 / E).unsqueeze_(1)
        dx = torch.addcmul(neg_mean_g, g, w, out=gx)
        return dx.addcmul_(xhat, neg_mean_gx).mul_(s), dw, db

    def step(idx, y):
        # ---- forward
        x = torch.index_select(P['tok.weight'], 0, idx.reshape(-1)).view(B, T, E).add_(
            torch.index_select(P['pos.weight'], 0, pos_idx)).view(B * T, E)   # token + position rows (B T, E)
        saved = []
        for p in blocks:
            h, s1 = ln(x, p['norm1.weight'], p['norm1.bias'])
            qkv = torch.addmm(p['self_attn.in_proj_bias'], h, p['self_attn.in_proj_weight'].t())
            q, k, vv = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, D).unbind(0)
            sc = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=1 / math.sqrt(D))
            pr = _softmax_rows(sc)
            o = torch.bmm(pr, vv).view(B, H, T, D).transpose(1, 2).reshape(B * T, E)
            x1 = torch.addmm(p['self_attn.out_proj.bias'], o, p['self_attn.out_proj.weight'].t()).add_(x)
            h2, s2 = ln(x1, p['norm2.weight'], p['norm2.bias'])
            f = torch.addmm(p['linear1.bias'], h2, p['linear1.weight'].t())
            a, cdf2 = _gelu(f, 'none')
            x = torch.addmm(p['linear2.bias'], a, p['linear2.weight'].t()).add_(x1)
            saved.append((s1, h, q, k, vv, pr, o, s2, h2, f, a, cdf2))
        hn, sn = ln(x, P['norm.weight'], P['norm.bias'])
        logits = torch.addmm(P['head.bias'], hn, P['head.weight'].t())
        logp = _log_softmax(logits, 1)
        ts = y.unsqueeze(1)
        loss = logp.gather(1, ts).squeeze(1).sum().neg_().div_(B * T)
        # ---- backward
        G = {}
        g = logp.exp()
        g.scatter_add_(1, ts, _scalar(-1, dt, g.device).expand(ts.shape)).div_(B * T)   # (softmax - onehot) / N
        G['head.weight'], G['head.bias'] = torch.mm(g.t(), hn), torch.mv(g.t(), ones)
        g, G['norm.weight'], G['norm.bias'] = ln_back(torch.mm(g, P['head.weight']), sn)
        for i in reversed(range(len(blocks))):
            p, (s1, h, q, k, vv, pr, o, s2, h2, f, a, cdf2) = blocks[i], saved[i]
            n = f'blocks.{i}.'
            G[n + 'linear2.weight'], G[n + 'linear2.bias'] = torch.mm(g.t(), a), torch.mv(g.t(), ones)
            ga = _gelu_vjp(torch.mm(g, p['linear2.weight']), f, cdf2, 'none')
            G[n + 'linear1.weight'], G[n + 'linear1.bias'] = torch.mm(ga.t(), h2), torch.mv(ga.t(), ones)
            g1, G[n + 'norm2.weight'], G[n + 'norm2.bias'] = ln_back(torch.mm(ga, p['linear1.weight']), s2)
            g1.add_(g)                                                            # the residual: both paths
            G[n + 'self_attn.out_proj.weight'] = torch.mm(g1.t(), o)
            G[n + 'self_attn.out_proj.bias'] = torch.mv(g1.t(), ones)
            go = torch.mm(g1, p['self_attn.out_proj.weight']).view(B, T, H, D).transpose(1, 2).reshape(B * H, T, D)
            gv = torch.bmm(pr.transpose(1, 2), go)
            gp = torch.bmm(go, vv.transpose(1, 2)).mul_(pr)
            gs = gp.addcmul_(pr, gp.sum(-1, keepdim=True), value=-1).mul_(1 / math.sqrt(D))
            gq, gk = torch.bmm(gs, k), torch.bmm(gs.transpose(1, 2), q)
            gqkv = torch.stack([t.view(B, H, T, D).transpose(1, 2) for t in (gq, gk, gv)], 2).view(B * T, 3 * E)
            G[n + 'self_attn.in_proj_weight'] = torch.mm(gqkv.t(), h)
            G[n + 'self_attn.in_proj_bias'] = torch.mv(gqkv.t(), ones)
            gx, G[n + 'norm1.weight'], G[n + 'norm1.bias'] = ln_back(torch.mm(gqkv, p['self_attn.in_proj_weight']), s1)
            g = gx.add_(g1)
        G['tok.weight'] = torch.zeros_like(P['tok.weight']).index_add_(0, idx.reshape(-1), g)
        G['pos.weight'] = g.view(B, T, E).sum(0)
        grads = [G[k] for k in names]
        # ---- AdamW, as minidl's: decoupled decay, then the moments and the bias-corrected step
        t_step[0] += 1
        t = t_step[0]
        torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, (1 - b2 ** t) ** 0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, -lr / (1 - b1 ** t))
        return loss
    return step, params


def cases(dtype=torch.float32):
    "{(module, input shape): (minidl step, torch step)}: functions of no arguments."
    gen = torch.Generator().manual_seed(0)
    rn = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    x2, g2 = rn(256, 512), rn(256, 512)
    x3, g3 = rn(64, 16, 64), rn(64, 16, 64)
    out = {}
    for name, ours, ref in [('Softmax', Softmax(), torch.nn.Softmax(-1)),
                            ('LogSoftmax', LogSoftmax(), torch.nn.LogSoftmax(-1)),
                            ('GELU', GELU(), torch.nn.GELU()),
                            ("GELU('tanh')", GELU('tanh'), torch.nn.GELU('tanh')),
                            ('LayerNorm(512)', LayerNorm(512), torch.nn.LayerNorm(512))]:
        out[name, '256, 512'] = (module_step(ours, x2, g2), torch_module_step(ref, x2, g2))
    out['LayerNorm(64)', '64, 16, 64'] = (
        module_step(LayerNorm(64), x3, g3),
        torch_module_step(torch.nn.LayerNorm(64), x3, g3),
    )
    mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), 1)
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    out['CausalSelfAttention(64, 4)', '64, 16, 64'] = (
        module_step(CausalSelfAttention(64, 4), x3, g3),
        torch_module_step(lambda t: mha(t, t, t, attn_mask=mask, need_weights=False)[0], x3, g3, mha),
    )
    layer = torch.nn.TransformerEncoderLayer(64, 4, 256, 0.0, 'gelu', batch_first=True, norm_first=True)
    out['TransformerBlock(64, 4, 256)', '64, 16, 64'] = (
        module_step(TransformerBlock(64, 4, 256), x3, g3),
        torch_module_step(lambda t: layer(t, src_mask=mask), x3, g3, layer),
    )
    out['decoder step', '4 layers, E=64, 4 heads, T=16, B=64, V=27, FF=256, AdamW'] = decoder_steps()
    return out


def decoder_agreement(nb_steps=3) -> dict:
    "minidl's decoder and the hand-written step in float64, from the same weights: the largest differences."
    ours, step, x, y = decoder_minidl(**DECODER, dtype=torch.float64)
    hand, params = decoder_hand(ours, DECODER['B'], DECODER['T'])
    losses = [(float(step()), float(hand(x, y))) for _ in range(nb_steps)]
    diff = max(float((p.value - q).abs().max()) for p, q in zip(ours.parameters(), params))
    scale = max(float(p.value.abs().max()) for p in ours.parameters())
    loss_diff = max(abs(a - b) for a, b in losses)
    return dict(steps=nb_steps, dtype='float64', max_param_diff=diff, max_param=scale, max_loss_diff=loss_diff,
                ok=diff <= 1e-12 * scale and loss_diff <= 1e-12 * abs(losses[0][0]))


def decoder_vs_hand(ctx) -> dict:
    "The decoder's training step, minidl against the hand-written loop: times, ratio, operator and Python calls."
    agree = decoder_agreement()
    if not agree['ok']:
        raise SystemExit(f"seq: the decoder and its hand-written step disagree, not timing them: {agree}")
    ours, step, x, y = decoder_minidl(**DECODER)
    hand = decoder_hand(ours, DECODER['B'], DECODER['T'])[0]
    steps = {'minidl': lambda: step(), 'hand': lambda: hand(x, y)}
    t = ctx.compare(steps)
    counts = {n: dict(ops=core.count_ops(lambda a, b, s=s: s(), None, None),
                      python_calls=core.count_python_calls(lambda a, b, s=s: s(), None, None))
              for n, s in steps.items()}
    row = dict(what='decoder step, ' + ', '.join(f"{k}={v}" for k, v in DECODER.items()) + ', AdamW',
               minidl_s=t['time_s']['minidl']['median'], hand_s=t['time_s']['hand']['median'],
               ratio=t['ratios']['minidl/hand'], paired_ratio=t['paired_ratios']['minidl/hand'],
               ops_per_step={n: c['ops'] for n, c in counts.items()},
               python_calls_per_step={n: c['python_calls'] for n, c in counts.items()},
               agreement=agree, rounds=t['rounds'], timing=t)
    ctx.log(f"   decoder step vs the hand-written loop: minidl {row['minidl_s'] * 1e6:,.0f} us, hand "
            f"{row['hand_s'] * 1e6:,.0f} us, minidl/hand {row['ratio']:.3f}; ops {row['ops_per_step']}, Python calls "
            f"{row['python_calls_per_step']}; float64 agreement {agree['max_param_diff']:.1e}")
    return row


def run(ctx):
    res = run_cases(ctx, cases())
    for row in res['cases']:
        if (t := TARGETS.get(row['module'])) is not None: row.update(target=t, met=row['ratio'] <= t)
    res['decoder_vs_hand'] = decoder_vs_hand(ctx)
    return res
