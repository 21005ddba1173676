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


def test_anything_drawn_outside_its_axes_is_found_and_refused():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [1.0, 5.0])
    ax.set_ylim(0, 2)  # the second bar runs off the axis
    fig.canvas.draw()
    assert plots.artists_outside(fig)
    with pytest.raises(AssertionError, match="drawn outside its axes"):
        plots._png(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [1.0, 5.0])
    ax.text(1.5, 1.0, "a label past the edge, long enough to leave")
    fig.canvas.draw()
    assert any("Text" in x for x in plots.artists_outside(fig))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [1.0, 5.0])
    ax.plot([0, 1], [1, 4], "o-")
    fig.canvas.draw()
    assert plots.artists_outside(fig) == []
    plt.close("all")
