"""Shared helper for the explorers' snapshot tests: everything drawn lies inside the figure.

A plain module (not conftest.py) so tests can import it by name: `from figure_testing import ...`.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg


def assert_inside(fig, context=None) -> None:
    """Every label, tick label, title and legend of fig lies inside it (within one pixel): a label
    that sticks out is clipped on the page. context names the case in the failure message."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer())   # inches
    width, height = fig.get_size_inches()
    slack = 1.0 / fig.dpi
    assert box.x0 >= -slack and box.y0 >= -slack and box.x1 <= width + slack and box.y1 <= height + slack, \
        (context, box.bounds, (width, height))
