"""The circle experiment's Python API refuses bad arguments with one clear message, before any training or drawing."""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minidl.experiments.circle import circle_mlp, run_circle, run_experiment  # noqa: E402
from minidl.experiments.circle_data import circle_dataset, circle_label  # noqa: E402
from minidl.experiments.circle_plots import plot_output, plot_outputs  # noqa: E402
from minidl.nn.activation import Sigmoid  # noqa: E402
from minidl.testing import assert_clear_error  # noqa: E402


def test_run_experiment_checks_every_name_and_seed_before_the_first_run():
    # an unknown name after a good one: refused before the good one trains (10**9 epochs would not finish)
    assert_clear_error(ValueError, "unknown model 'bad'", run_experiment, [0], names=('tanh_mse', 'bad'), epochs=10**9)
    assert_clear_error(TypeError, "names to be a list, got str 'tanh_mse'", run_experiment, [0], names='tanh_mse')
    assert_clear_error(TypeError, 'seeds to be a list, got int 0', run_experiment, 0)


def test_run_circle_and_its_helpers_give_clear_errors():
    assert_clear_error(ValueError, "unknown model ['tanh_mse']", run_circle, ['tanh_mse'])
    assert_clear_error(ValueError, 'expects a device this torch can use', run_circle, 'tanh_mse', device='bogus')
    if not torch.cuda.is_available():
        assert_clear_error(ValueError, 'expects a device this torch can use', run_circle, 'tanh_mse', device='cuda')
    assert_clear_error(TypeError, 'torch.Generator (or None), got int', circle_mlp, Sigmoid(), 3, generator=5)
    assert_clear_error(TypeError, 'floating-point points, got dtype torch.bool', circle_label,
                       torch.tensor([[True, False]]))


def test_plot_output_checks_before_it_draws():
    m = circle_mlp(Sigmoid(), 4, generator=torch.Generator().manual_seed(0))
    x, y = circle_dataset(20, seed=0)
    fig, ax = plt.subplots()
    try:
        n_artists, n_figs = len(ax.get_children()), len(plt.get_fignums())
        assert_clear_error(ValueError, 'y_test of shape (m, 1), got (20,)', plot_output, m, x, y.squeeze(1), ax=ax)
        assert_clear_error(ValueError, 'as many labels as points', plot_output, m, x, y[:5])
        assert (len(ax.get_children()), len(plt.get_fignums())) == (n_artists, n_figs)
        assert_clear_error(ValueError, "(model, threshold, (low, high)), got 'a'", plot_outputs, {'a': m}, x, y)
        assert len(plt.get_fignums()) == n_figs
    finally: plt.close(fig)
