"""End to end: a lesson runs top to bottom in a real JupyterLab in a real browser, its explorer shows
up as live widgets, and moving one of its sliders redraws the figure.

Run with `make e2e`; screenshots of each explorer before and after the slider moved, and of the whole
Lab window, go to e2e-artifacts/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labdriver import (
    WIDGET_VIEW,
    cell_errors,
    changed_fraction,
    expect,
    image_source,
    open_notebook,
    run_all,
    unrendered_widgets,
    wait_until_loaded,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Moving the sliders below changes about 15 % of the figure's pixels (bars, ticks, titles); two
# screenshots of one unchanged picture differ in none.
MIN_CHANGED_FRACTION = 0.01


# Sliders that redraw every bar: the playground's input mean or std would only relabel the axes.
@pytest.mark.parametrize("notebook, name, slider", [
    ("01_forward.ipynb", "01_forward", "batch size"),                # ForwardPlayground
    ("04_activation_distributions.ipynb", "04_activation", "step"),  # ActivationExplorer
], ids=["01_forward", "04_activation"])
def test_lesson_runs_and_its_explorer_redraws(page, lab, artifacts, notebook, name, slider):
    open_notebook(page, lab, NOTEBOOKS / notebook)
    run_all(page)

    errors = cell_errors(page)
    assert not errors, f"{notebook}: cells failed in the browser:\n" + "\n".join(errors)
    # the explorer is the one widget that draws a figure (lesson 04's progress bars draw none)
    explorer = page.locator(f"{WIDGET_VIEW}:has(img.widget-image)")
    expect(explorer).to_have_count(1)
    # checked once the explorer is up, as "Error displaying widget" appears only after Lab tried
    unrendered = unrendered_widgets(page)
    assert not unrendered, f"{notebook}: widgets shown as text, not rendered:\n" + "\n".join(unrendered)

    image = explorer.locator("img.widget-image")
    handle = explorer.locator(".widget-slider", has_text=slider).locator(".noUi-handle")
    explorer.scroll_into_view_if_needed()
    wait_until_loaded(image)
    page.screenshot(path=artifacts / f"{name}_full.png")
    explorer.screenshot(path=artifacts / f"{name}_before.png")
    before, before_source = image.screenshot(), image_source(image)

    # One key press is one value change, hence one redraw: nothing is still in flight when compared.
    value = handle.get_attribute("aria-valuenow")
    handle.press("End")
    expect(handle).not_to_have_attribute("aria-valuenow", value)
    page.wait_for_function("([img, source]) => img.src !== source", arg=[image.element_handle(), before_source])
    wait_until_loaded(image)
    explorer.screenshot(path=artifacts / f"{name}_after.png")

    changed = changed_fraction(before, image.screenshot())
    assert changed >= MIN_CHANGED_FRACTION, (
        f"{notebook}: moving the {slider!r} slider from {value} to {handle.get_attribute('aria-valuenow')} "
        f"changed {changed:.2%} of the figure's pixels (expected at least {MIN_CHANGED_FRACTION:.0%})")
