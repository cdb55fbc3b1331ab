"""What each lesson's explorer sends, how fast it first renders, and how fast a slider move repaints,
in headless Chromium, from the explorers saved in the committed notebooks (no kernel, no training).

For every anywidget model in a lesson's saved widget state, this builds a page with the model's
JavaScript and data and a stand-in for anywidget's model object, then times in the browser:
- first render: from importing the module to the end of its first draw;
- a slider move: setting the main slider's value and dispatching its input event, until the redraw
  has finished (it runs inside the handler) and until the next animation frame (once painted).
Moves are spread over the slider's range; printed: median and p95 against the targets (16 ms, one
frame at 60 Hz; first render 1 s; data 1 MB). Chromium: Debian's /usr/bin/chromium, via Playwright
(`make e2e` installs it). Run: make bench, or
    python benchmarks/bench_widgets.py [--moves 60] [--notebooks notebooks]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _report import Row, emit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
REPAINT_MS, FIRST_RENDER_MS, PAYLOAD_BYTES = 16.0, 1000.0, 1_000_000

PAGE = """<!doctype html><html><body><div id="el"></div><script type="module">
const state = %s;
const listeners = {};
const model = {get: (key) => state[key], set() {}, save_changes() {}, send() { throw new Error("no kernel"); },
               on(event, callback) { (listeners[event] ??= []).push(callback); }, off() {}};
const t0 = performance.now();
const module = await import(URL.createObjectURL(new Blob([state._esm], {type: "text/javascript"})));
module.default.render({model, el: document.getElementById("el")});
window.firstRenderMs = performance.now() - t0;
</script></body></html>"""

MOVES = """async (moves) => {
    const root = document.querySelector('.bnlab-explorer');
    const input = root.querySelector('input[type=range][data-main]');
    const lo = Number(input.min), hi = Number(input.max);
    const work = [], frame = [];
    for (let i = 1; i <= moves; i++) {
        const t0 = performance.now();
        input.value = String(lo + (hi - lo) * ((i * 7) % (moves + 1)) / moves);
        input.dispatchEvent(new Event('input', {bubbles: true}));
        work.push(performance.now() - t0);
        await new Promise(resolve => requestAnimationFrame(() => resolve()));
        frame.push(performance.now() - t0);
    }
    return {work, frame, name: root.dataset.explorer};
}"""


def saved_explorers(notebook: Path) -> list[dict]:
    """The anywidget models' states saved in a notebook, in the order their views appear."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    shown = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for cell in nb["cells"] for o in cell.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    found = []

    def visit(model_id):   # an explorer may be shown inside a box (with its progress bar)
        model = models.get(model_id)
        if model is None:
            return
        if model["model_name"] == "AnyModel":
            found.append(model["state"])
        for child in model["state"].get("children", []):
            visit(child.removeprefix("IPY_MODEL_"))

    for model_id in shown:
        visit(model_id)
    return found


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    parser.add_argument("--json", default=None, help="also write the rows here (make bench does)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        for notebook in sorted(Path(args.notebooks).glob("[0-9][0-9]_*.ipynb")):
            for i, state in enumerate(saved_explorers(notebook)):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                path = Path(tmp) / f"{notebook.stem}_{i}.html"
                path.write_text(PAGE % json.dumps(state), encoding="utf-8")
                page.goto(path.as_uri())
                page.wait_for_function("window.firstRenderMs !== undefined || false", timeout=30_000)
                first = page.evaluate("window.firstRenderMs")
                timing = page.evaluate(MOVES, args.moves)
                if errors:
                    raise SystemExit(f"{notebook.name}: the explorer raised in the browser: {errors[0]}")
                page.close()
                label = f"{notebook.stem[:2]} {timing['name']}"
                size = len(state["_payload"])
                work, frame = statistics.median(timing["work"]), statistics.median(timing["frame"])
                rows += [
                    Row(f"slider move -> redraw, {label}", work, None, "ms", target=1.0, ratio=work / REPAINT_MS,
                        note=f"p95 {p95(timing['work']):.2f} ms; to the next frame: median {frame:.1f}, "
                             f"p95 {p95(timing['frame']):.1f} ms; {args.moves} moves"),
                    Row(f"first render, {label}", first, None, "ms", target=1.0, ratio=first / FIRST_RENDER_MS),
                    Row(f"data sent, {label}", size / 1000, None, "kB", target=1.0, ratio=size / PAYLOAD_BYTES,
                        note=f"JavaScript {len(state['_esm']) / 1000:.0f} kB"),
                ]
        browser.close()
    for row in rows:
        print(f"{row.measure:45s} {row.ours:9.2f} {row.unit:3s} (of target: {row.ratio:.3f}) {row.note}")
    emit(rows, args.json)


if __name__ == "__main__":
    main()
