"""Fixtures for the end-to-end tests: one JupyterLab server and one headless Chromium per session, a
fresh browser page per test, and a directory of screenshots that outlives the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from labdriver import CHROMIUM, CHROMIUM_ARGS, LabServer, expect, sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "e2e-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}  # wide enough for the explorers' rows of controls
TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """e2e-artifacts/, emptied first so that every screenshot in it comes from this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir()
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory, artifacts):
    server = LabServer(tmp_path_factory.mktemp("lab"), log_path=artifacts / "jupyterlab.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with "
                    "`apt-get install -y --no-install-recommends chromium fonts-dejavu-core`", pytrace=False)
    # expect() keeps its own timeout, which page.set_default_timeout does not change
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        # Playwright's own browser downloads are not reachable; Debian's Chromium is driven instead.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, lab, artifacts, request):
    """A page in a fresh browser context; its console goes to e2e-artifacts/<test id>_console.log, and
    the kernels it started are shut down afterwards so that the next lesson has the CPU to itself."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    test_id = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
    console = open(artifacts / f"{test_id}_console.log", "w")
    page.on("console", lambda message: console.write(f"{message.type}: {message.text}\n"))
    page.on("pageerror", lambda error: console.write(f"pageerror: {error}\n"))
    try:
        yield page
    finally:
        context.close()
        console.close()
        lab.shutdown_kernels()


def pytest_terminal_summary(terminalreporter):
    timings = ARTIFACTS / "repaint.json"
    if timings.is_file():
        terminalreporter.write_line("slider move -> redraw done / next frame, median and p95 (ms):")
        for name, runs in json.loads(timings.read_text()).items():
            for when, t in runs.items():
                terminalreporter.write_line(
                    f"  {name:45s} {when:9s} {t['redraw']['median_ms']:7.2f} {t['redraw']['p95_ms']:7.2f}"
                    f"   {t['to_next_frame']['median_ms']:7.2f} {t['to_next_frame']['p95_ms']:7.2f}")
    if ARTIFACTS.is_dir():
        terminalreporter.write_line(f"end-to-end screenshots and logs: {ARTIFACTS}")
