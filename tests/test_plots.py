"""Plots: the arguments they refuse."""
import torch

from minidl import Linear, Sequential, Sigmoid
from minidl.testing import assert_clear_error

F64 = torch.float64


def test_plots_refuse_bad_arguments_clearly(tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from minidl.experiments.circle_plots import output_grid, plot_output, plot_outputs
    from minidl.plots import plot_history, save_figure
    m1 = Sequential(Linear(2, 1), Sigmoid())
    assert_clear_error(TypeError, 'resolution', output_grid, m1, 2.5)
    assert_clear_error(TypeError, 'resolution', output_grid, m1, '10')
    assert_clear_error(ValueError, 'one output', output_grid, Sequential(Linear(2, 3)), 5)
    assert_clear_error(TypeError, 'Module', output_grid, lambda x: x, 5)
    assert_clear_error(ValueError, 'nothing to plot', plot_history, {})
    assert_clear_error(TypeError, 'History', plot_history, {'a': 5})
    assert_clear_error(ValueError, 'nothing to plot', plot_outputs, {}, torch.rand(5, 2), torch.ones(5, 1))
    fig = plt.figure()
    assert_clear_error(TypeError, 'path', save_figure, fig, 3)
    assert_clear_error(TypeError, 'figure', save_figure, None, tmp_path/'a.png')
    assert list(tmp_path.iterdir()) == []
    plt.close(fig)
    # points cast to the model's dtype
    ax = plot_output(Sequential(Linear(2, 1)).to(F64), torch.rand(5, 2), torch.ones(5, 1))
    plt.close(ax.figure)


def test_save_figure_refuses_a_path_that_ends_with_a_separator(tmp_path):
    "'fig.png/' names a folder: nothing is written, not even a file 'fig.png'."
    import matplotlib.pyplot as plt

    from minidl.plots import save_figure
    fig = plt.figure()
    try: assert_clear_error(IsADirectoryError, 'names a folder', save_figure, fig, str(tmp_path / 'x.png') + '/')
    finally: plt.close(fig)
    assert list(tmp_path.iterdir()) == []
