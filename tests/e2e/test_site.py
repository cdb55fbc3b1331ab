"""End to end: the course's web site (bnlab.site) in headless Chromium, served from 127.0.0.1 with no
kernel and no way out: every page loads without an error, a failed request or a request to another
host; its math is typeset, its images decode and its widgets render from the saved state; and moving
an explorer's slider redraws its figure in the page.

Built from the real notebooks by the fixture (a few seconds); run with `make e2e`. Screenshots of the
explorers before and after, and each page's console, go to e2e-artifacts/site_*.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
from labdriver import UNRENDERED_WIDGET

from bnlab import site

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PAGES = [page.path for page in site.plan_pages(site.NOTEBOOKS, site.README)]

# An anywidget with the explorers' DOM contract, executed and saved the way `make execute` saves a lesson
PROBE_CODE = r'''
import anywidget
import traitlets


class Probe(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        const root = document.createElement("div");
        root.className = "bnlab-explorer";
        root.dataset.explorer = "Probe";
        root.dataset.draws = "0";
        const input = Object.assign(document.createElement("input"), {type: "range", min: 0, max: 10, step: 1});
        input.value = String(model.get("value"));
        input.dataset.main = "";
        const canvas = Object.assign(document.createElement("canvas"), {width: 200, height: 40});
        function draw() {
          const ctx = canvas.getContext("2d");
          ctx.clearRect(0, 0, canvas.width, canvas.height);
          ctx.fillStyle = "#1f77b4";
          ctx.fillRect(0, 0, 20 * Number(input.value), canvas.height);
          root.dataset.draws = String(Number(root.dataset.draws) + 1);
        }
        input.addEventListener("input", () => { model.set("value", Number(input.value)); draw(); });
        root.append(input, canvas);
        el.append(root);
        draw();
      }
    };
    """
    value = traitlets.Int(3).tag(sync=True)


Probe()
'''


@contextlib.contextmanager
def served(out: Path):
    """A built site served on 127.0.0.1 for the duration: its base URL."""
    server, url = site.serve_in_thread(out)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def course_site(tmp_path_factory):
    """The real course, built and served on 127.0.0.1: its base URL."""
    with served(site.build_site(tmp_path_factory.mktemp("site") / "site").out) as url:
        yield url


@pytest.fixture(scope="session")
def probe_site(tmp_path_factory):
    """A one-lesson course whose lesson was executed by nbconvert with store_widget_state=True, built
    and served: its base URL. It checks the site's anywidget path apart from the lessons' own explorers."""
    from nbconvert.preprocessors import ExecutePreprocessor

    root = tmp_path_factory.mktemp("probe")
    (root / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Probe\n\n$y = \\gamma \\hat x$"),
                                         nbformat.v4.new_code_cell(PROBE_CODE)])
    ExecutePreprocessor(timeout=120, store_widget_state=True).preprocess(nb, {"metadata": {"path": str(root)}})
    assert site.has_widget_state(nb), "executing the probe saved no widget state"
    nbformat.write(nb, root / "notebooks" / "01_probe.ipynb")
    (root / "README.md").write_text("# Probe course\n\n[the lesson](notebooks/01_probe.ipynb)\n")
    with served(site.build_site(root / "site", root / "notebooks", root / "README.md").out) as url:
        yield url


class Watch:
    """Everything a page did wrong: console errors, uncaught exceptions, failed requests, responses of
    400 and above, and requests to any host but 127.0.0.1 (aborted, so that nothing leaves)."""

    def __init__(self, context, page, log_path: Path):
        self.problems: list[str] = []
        self.pending: dict = {}  # requests sent and not yet answered, to their URLs
        self.log = open(log_path, "w")
        page.on("request", lambda request: self.pending.__setitem__(request, request.url))
        page.on("requestfinished", lambda request: self.pending.pop(request, None))
        page.on("requestfailed", lambda request: self.pending.pop(request, None))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._add(f"pageerror: {error}"))
        page.on("requestfailed", lambda request: self._add(f"request failed: {request.url} ({request.failure})"))
        page.on("response", lambda response: response.status >= 400
                and self._add(f"HTTP {response.status}: {response.url}"))
        context.route("**/*", self._route)

    def _add(self, problem: str) -> None:
        self.problems.append(problem)
        self.log.write(problem + "\n")

    def _console(self, message) -> None:
        self.log.write(f"{message.type}: {message.text}\n")
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def _route(self, route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self._add(f"request to another host: {route.request.url}")
            route.abort()


@pytest.fixture
def site_page(browser, artifacts, request):
    """A fresh browser page, watched (see Watch); its console goes to e2e-artifacts/site_<test>_console.log."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    test_id = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
    name = re.sub(r"[^\w.-]+", "_", test_id)
    page.watch = Watch(context, page, artifacts / f"site_{name}_console.log")
    try:
        yield page
    finally:
        context.close()
        page.watch.log.close()


def open_page(page, url: str) -> None:
    """Open a page and wait until MathJax has typeset it, every saved widget view is rendered, its
    fonts and images are loaded and the network is quiet."""
    page.goto(url, wait_until="load")
    page.wait_for_function("() => window.MathJax?.startup?.promise")
    page.evaluate("() => MathJax.startup.promise")
    views = page.locator(f'script[type="{WIDGET_VIEW}"]').count()
    if views:
        # html-manager puts each view into a .widget-subarea next to the script that names its model
        page.wait_for_function(f"""() => Array.from(document.querySelectorAll('script[type="{WIDGET_VIEW}"]'))
            .every(s => s.parentElement.querySelector(':scope > .widget-subarea > *'))""", timeout=30_000)
    page.evaluate("() => document.fonts.ready.then(() => true)")
    page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
    settle(page)


def settle(page, quiet_s: float = 0.5, timeout_s: float = 20) -> None:
    """Wait until no request has been in flight for quiet_s; a request still unanswered after timeout_s
    is a problem of the page, named by its URL (Playwright's "networkidle" would only time out)."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if page.watch.pending:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        page.wait_for_timeout(100)
    page.watch.problems.append(f"requests unanswered after {timeout_s:.0f} s: {sorted(page.watch.pending.values())}")


# ----------------------------------------------------------------------------- every page
@pytest.mark.parametrize("path", PAGES, ids=PAGES)
def test_every_page_loads_offline_without_errors(site_page, course_site, path):
    page = site_page
    open_page(page, course_site + path)
    broken = page.evaluate("() => Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                           ".map(i => i.src.slice(0, 80))")
    assert not broken, f"{path}: images that did not load: {broken}"
    texts = page.locator(".jp-OutputArea-output").all_text_contents()
    unrendered = [t.strip()[:200] for t in texts
                  if re.match(UNRENDERED_WIDGET, t) or "Error displaying widget" in t or "Error rendering" in t]
    assert not unrendered, f"{path}: widgets shown as text, not rendered:\n" + "\n".join(unrendered)
    assert not page.locator("mjx-merror").count(), f"{path}: MathJax could not typeset some math"
    assert not page.watch.problems, f"{path}:\n" + "\n".join(page.watch.problems)


# ----------------------------------------------------------------------------- explorers redraw
def move_every_explorer(page, artifacts: Path, name: str) -> list[str]:
    """Move the main slider of every explorer on the page to another value and wait for its redraw; one
    line for each explorer whose figure did not change."""
    roots = page.locator(".bnlab-explorer")
    assert roots.count(), f"{name}: no .bnlab-explorer on the page"
    unchanged = []
    for i in range(roots.count()):
        root = roots.nth(i)
        explorer = root.get_attribute("data-explorer")
        root.scroll_into_view_if_needed()
        page.wait_for_function("root => Number(root.dataset.draws) > 0", arg=root.element_handle())
        root.screenshot(path=artifacts / f"site_{name}_{i}_{explorer}_before.png")
        before = root.evaluate("root => ({draws: Number(root.dataset.draws),"
                               " figure: Array.from(root.querySelectorAll('canvas')).map(c => c.toDataURL())})")
        assert before["figure"], f"{name}: {explorer} has no <canvas>"
        moved = root.evaluate("""root => {
            const input = root.querySelector('input[type="range"][data-main]');
            if (!input) return null;
            const min = Number(input.min || 0), max = Number(input.max || 100), from = input.value;
            input.value = String(Number(from) === max ? min : max);
            input.dispatchEvent(new Event('input', {bubbles: true}));
            input.dispatchEvent(new Event('change', {bubbles: true}));
            return [from, input.value];
        }""")
        assert moved, f"{name}: {explorer} has no <input type=range data-main>"
        assert moved[0] != moved[1], f"{name}: {explorer}'s main slider did not move from {moved[0]}"
        page.wait_for_function("([root, draws]) => Number(root.dataset.draws) > draws",
                               arg=[root.element_handle(), before["draws"]])
        after = root.evaluate("root => Array.from(root.querySelectorAll('canvas')).map(c => c.toDataURL())")
        root.screenshot(path=artifacts / f"site_{name}_{i}_{explorer}_after.png")
        if after == before["figure"]:
            unchanged.append(f"{explorer}: moving its main slider from {moved[0]} to {moved[1]} "
                             "left the figure as it was")
    return unchanged


def test_an_anywidget_saved_by_nbconvert_redraws_in_the_page(site_page, probe_site, artifacts):
    page = site_page
    open_page(page, probe_site + "lessons/01_probe.html")
    assert page.locator('.bnlab-explorer[data-explorer="Probe"]').count() == 1
    assert move_every_explorer(page, artifacts, "probe") == []
    assert not page.watch.problems, "\n".join(page.watch.problems)


@pytest.mark.parametrize("notebook", ["01_forward.ipynb", "04_activation_distributions.ipynb"],
                         ids=["01_forward", "04_activation_distributions"])
def test_a_lessons_explorer_redraws_without_a_kernel(site_page, course_site, artifacts, notebook):
    page = site_page
    open_page(page, course_site + f"lessons/{Path(notebook).stem}.html")
    unchanged = move_every_explorer(page, artifacts, Path(notebook).stem)
    assert not unchanged, f"{notebook}:\n" + "\n".join(unchanged)
    assert not page.watch.problems, f"{notebook}:\n" + "\n".join(page.watch.problems)


def test_the_site_pages_are_the_courses(course_site):
    """The pages this file opens are every lesson, every homework and the README (nothing left out)."""
    lessons = sorted(p.stem for p in NOTEBOOKS.glob(site.LESSONS_GLOB))
    assert [p for p in PAGES if p.startswith("lessons/")] == [f"lessons/{s}.html" for s in lessons]
    assert "index.html" in PAGES and "homework/index.html" in PAGES
    assert json.dumps(PAGES).count("solutions") == 0
