"""The names experiment's Transformer step, as in its recipe (AdamW and Muon), against its torch.nn twin.

4 blocks x 64 wide, 4 heads, context 14; the recipe's batch and its pieces, dropout, AdamW and Muon, one-cycle: one
training step of minidl against its torch.nn twin (the same initial weights, the same batches), float32, interleaved by
the harness. Needs the `names` extra (`pip install -e ".[names]"`)."""
from benchmarks.layers import run_cases
from benchmarks.names_twins import benchmark_step
from minidl.experiments.names import MODELS

QUICK = dict(sample_s=0.002, warmup_s=0.0, budget_s=0.0, min_rounds=3, max_rounds=3)
FULL = dict(sample_s=0.05, warmup_s=0.5, budget_s=20.0, min_rounds=15, max_rounds=201)


def run(ctx):
    ours, ref = benchmark_step()
    spec = MODELS['transformer']
    label = f'4 x 64, 4 heads, batch {spec.batch_size} in {spec.pieces} pieces, AdamW + Muon, one-cycle'
    return run_cases(ctx, {('names Transformer step', label): (ours, ref)})
