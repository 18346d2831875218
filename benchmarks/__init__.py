"""minidl's benchmarks: suites timed by one harness (`benchmarks/harness.py`), run by `python -m benchmarks`.

Each name is a module `benchmarks/<name>.py` (a suite); `all` runs them in this order, one at a time."""

SUITES = (
    'core',           # the MLP training step: minidl vs torch.nn vs a hand-written loop, op counts, peak memory
    'ablation',       # the MLP step before the performance work and after each change
    'overhead',       # the MLP step: the layers' maths alone, then each layer of checks, against the hand-written loop
    'layers',         # forward + backward of the layers against torch.nn + autograd
    'seq',            # the sequence layers and a decoder-only Transformer's training step
    'conv',           # a small CNN's training step, and where minidl's step goes
    'optim',          # optimizer.step() against torch.optim
    'digits',         # the digits experiment's MLP and CNN training steps
    'version_check',  # the cost of the saved-tensor version check
    'names',          # the names experiment's Transformer training step against its torch.nn twin
    'distributed',    # data-parallel throughput with 1 and 2 processes (starts its own processes)
)
