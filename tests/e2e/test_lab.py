"""End to end: every lesson with an explorer runs top to bottom in a real JupyterLab in a real
browser; each explorer draws in the page, moving its main slider redraws its figure, and after the
kernel is shut down the slider still moves the figure (the explorers compute in the browser).

Run with `make e2e`. Screenshots of each explorer before and after, and of the Lab window, go to
e2e-artifacts/, and so does repaint.json: per explorer, the time from a slider's input event to the
end of its redraw, and to the next animation frame (when the browser has painted it).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from labdriver import (
    cell_errors,
    expect,
    open_notebook,
    run_all,
    unrendered_widgets,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPLORER = ".bnlab-explorer"
MOVES = 30   # slider moves timed per explorer

# lesson -> the explorers it shows, in order
LESSONS = {
    "01_forward.ipynb": ["ForwardPlayground"],
    "02_backward.ipynb": ["GradientCoupling"],
    "03_train_vs_eval.ipynb": ["MomentumExplorer"],
    "04_activation_distributions.ipynb": ["ActivationExplorer"],
    "05_gradient_flow.ipynb": ["GradientFlowExplorer"],
    "06_cnn_classification.ipynb": ["SweepExplorer"],
    "07_segmentation.ipynb": ["MaskExplorer"],
    "08_small_batches.ipynb": ["SweepExplorer"],
    "09_why_bn_works.ipynb": ["LossSliceExplorer"],
    "10_regularization.ipynb": ["RegularizationExplorer"],
    "11_recurrent_and_beyond.ipynb": ["SequenceExplorer"],
    "12_many_devices.ipynb": ["ShardExplorer"],
    "13_myths_and_mistakes.ipynb": ["EvidenceExplorer"],
}

# Moves the main slider of one explorer through `moves` positions spread over its range (ending on
# one that differs from the start), one input event each, and times each: until the redraw has
# finished (it runs inside the event handler) and until the next animation frame.
MOVE_SLIDER = """async (root, moves) => {
    const input = root.querySelector('input[type=range][data-main]');
    const canvas = () => [...root.querySelectorAll('canvas')].map(c => c.toDataURL()).join();
    const before = canvas();
    const draws = Number(root.dataset.draws);
    const lo = Number(input.min), hi = Number(input.max), start = Number(input.value);
    const work = [], frame = [];
    for (let i = 1; i <= moves; i++) {
        let value = lo + (hi - lo) * ((i * 7) % (moves + 1)) / moves;
        if (i === moves) value = Math.abs(start - lo) > Math.abs(start - hi) ? lo : hi;
        const t0 = performance.now();
        input.value = String(value);
        input.dispatchEvent(new Event('input', {bubbles: true}));
        input.dispatchEvent(new Event('change', {bubbles: true}));
        work.push(performance.now() - t0);
        await new Promise(resolve => requestAnimationFrame(() => resolve()));
        frame.push(performance.now() - t0);
    }
    return {changed: canvas() !== before, redraws: Number(root.dataset.draws) - draws, work, frame,
            from: start, to: Number(input.value)};
}"""

TIMINGS: dict = {}


def summary(values: list) -> dict:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)}


def move_every_explorer(page, lesson: str, when: str, artifacts: Path) -> None:
    roots = page.locator(EXPLORER)
    expect(roots).to_have_count(len(LESSONS[lesson]))
    slug = when.replace(" ", "_")
    for i, name in enumerate(LESSONS[lesson]):
        root = roots.nth(i)
        assert root.get_attribute("data-explorer") == name
        root.scroll_into_view_if_needed()
        root.screenshot(path=artifacts / f"{Path(lesson).stem}_{i}_{slug}_before.png")
        result = root.evaluate(MOVE_SLIDER, MOVES)
        root.screenshot(path=artifacts / f"{Path(lesson).stem}_{i}_{slug}_after.png")
        assert result["redraws"] == MOVES, f"{lesson} {name} ({when}): {result['redraws']} redraws for {MOVES} moves"
        assert result["changed"], (f"{lesson} {name} ({when}): moving the main slider from {result['from']} to "
                                   f"{result['to']} left the figure as it was")
        TIMINGS.setdefault(f"{Path(lesson).stem} {name}", {})[when] = {
            "redraw": summary(result["work"]), "to_next_frame": summary(result["frame"]), "moves": MOVES}


@pytest.fixture(scope="module", autouse=True)
def write_timings(artifacts):
    yield
    (artifacts / "repaint.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.mark.parametrize("lesson", list(LESSONS), ids=[Path(n).stem for n in LESSONS])
def test_a_committed_lesson_shows_its_explorers_from_saved_state_and_they_move_with_no_kernel(page, lab, artifacts,
                                                                                               lesson):
    """Opened as committed (executed, widget state saved) and never run: the explorers come from
    the notebook's saved state, and with the kernel shut down they still compute in the page."""
    open_notebook(page, lab, NOTEBOOKS / lesson, trust=True)
    # Lab restores saved widgets after asking the kernel for its own: shut it down once they are up
    expect(page.locator(EXPLORER)).to_have_count(len(LESSONS[lesson]))
    lab.shutdown_kernels()
    wait_for_no_kernel(page)
    move_every_explorer(page, lesson, "saved state", artifacts)
    says_training_needs_a_kernel(page)


def wait_for_no_kernel(page) -> None:
    page.wait_for_function("""() => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;
        return !kernel || ['dead', 'unknown'].includes(kernel.status) || kernel.connectionStatus !== 'connected';
    }""")


@pytest.mark.parametrize("lesson", list(LESSONS), ids=[Path(n).stem for n in LESSONS])
def test_explorers_redraw_in_the_browser_with_and_without_a_kernel(page, lab, artifacts, lesson):
    open_notebook(page, lab, NOTEBOOKS / lesson)
    run_all(page)

    errors = cell_errors(page)
    assert not errors, f"{lesson}: cells failed in the browser:\n" + "\n".join(errors)
    expect(page.locator(EXPLORER)).to_have_count(len(LESSONS[lesson]))
    # checked once the explorers are up, as "Error displaying widget" appears only after Lab tried
    unrendered = unrendered_widgets(page)
    assert not unrendered, f"{lesson}: widgets shown as text, not rendered:\n" + "\n".join(unrendered)
    page.screenshot(path=artifacts / f"{Path(lesson).stem}_full.png")
    move_every_explorer(page, lesson, "kernel", artifacts)
    trains_in_the_kernel(page, lesson, artifacts)

    lab.shutdown_kernels()
    wait_for_no_kernel(page)
    move_every_explorer(page, lesson, "no kernel", artifacts)

    says_training_needs_a_kernel(page)


# Moves the main slider to its first position (the cheapest configuration) and presses train.
PRESS_TRAIN = """(root) => {
    const input = root.querySelector('input[type=range][data-main]');
    input.value = input.min;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    const before = [...root.querySelectorAll('canvas')].map(c => c.toDataURL()).join();
    root.querySelector('button.bnlab-train').click();
    return before;
}"""


def trains_in_the_kernel(page, lesson: str, artifacts: Path) -> None:
    """A train button, with a kernel, trains in Python and the view redraws with the new run."""
    roots = page.locator(f"{EXPLORER}:has(button.bnlab-train)")
    for i in range(roots.count()):
        root = roots.nth(i)
        before = root.evaluate(PRESS_TRAIN)
        page.wait_for_function("""([root, before]) => [...root.querySelectorAll('canvas')].map(c => c.toDataURL())
            .join() !== before && !root.querySelector('.bnlab-status').textContent""",
                               arg=[root.element_handle(), before], timeout=240_000, polling=500)
        root.screenshot(path=artifacts / f"{Path(lesson).stem}_{i}_trained.png")
        assert "not been trained" not in root.locator(".bnlab-readout").inner_text()


def says_training_needs_a_kernel(page) -> None:
    train = page.locator(f"{EXPLORER} button.bnlab-train")
    if train.count():
        # with no kernel to train, the button says so instead of waiting for ever
        train.first.click()
        expect(page.locator(f"{EXPLORER} .bnlab-status").first).to_contain_text("needs a running kernel",
                                                                                 timeout=15_000)

