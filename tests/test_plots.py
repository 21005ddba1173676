"""Plots a person reads: legends never cover the data (checked on every figure the project draws)."""
import pytest

from ck_plugins import plots


def test_a_legend_over_the_data_is_found_and_refused():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(10), range(10), label="a line")
    ax.legend(loc="center")
    fig.canvas.draw()
    assert plots.legend_overlaps(fig)
    with pytest.raises(AssertionError, match="a legend covers the data"):
        plots._png(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(10), range(10), label="a line")
    plots._legend_outside(ax, ["a line"])
    fig.canvas.draw()
    assert plots.legend_overlaps(fig) == []
    plt.close("all")
