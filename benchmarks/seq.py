"""The sequence layers and a decoder-only Transformer's training step against torch.nn + autograd (+ torch.optim.AdamW).

One forward + backward of Softmax, LogSoftmax, GELU, LayerNorm, CausalSelfAttention and a TransformerBlock against
the torch.nn module and autograd, and one training step (zero_grad, forward, cross-entropy over the B*T next-token
predictions, backward, AdamW) of a small decoder-only Transformer against the same model in torch.nn; float32,
interleaved by the harness (samples of about 20 ms, at least 11 rounds, about 2 s per case).
"""
import torch
import torch.nn.functional as F

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


def decoder_steps(V=27, T=16, B=64, E=64, H=4, L=4, FF=256):
    "One AdamW training step of each model on the same batch (cross-entropy over the B*T next-token predictions)."
    gen = torch.Generator().manual_seed(0)
    ours, ref = DecoderLM(V, T, E, H, L, FF, generator=gen), TorchDecoderLM(V, T, E, H, L, FF)
    ref.load_state_dict(ours.state_dict())
    opt, ref_opt = AdamW(ours.parameters(), lr=1e-3), torch.optim.AdamW(ref.parameters(), lr=1e-3)
    ce = LossCrossEntropy()
    idx = torch.randint(0, V, (B, T + 1), generator=gen)
    x, y = idx[:, :-1], idx[:, 1:].reshape(-1)
    def step():
        opt.zero_grad()
        ce(ours(x).reshape(-1, V), y)
        ours.backward(ce.backward().view(B, T, V))
        opt.step()
    def ref_step():
        ref_opt.zero_grad()
        F.cross_entropy(ref(x).reshape(-1, V), y).backward()
        ref_opt.step()
    return step, ref_step


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


def run(ctx):
    res = run_cases(ctx, cases())
    for row in res['cases']:
        if (t := TARGETS.get(row['module'])) is not None: row.update(target=t, met=row['ratio'] <= t)
    return res
