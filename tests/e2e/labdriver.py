"""Drive the course's JupyterLab in headless Chromium: start and stop a private lab server, open a
lesson, run it, and look at its outputs and widgets the way a student's browser shows them.

Everything the server writes (config, runtime files, settings, workspaces, the notebook copies) goes
to a temporary directory, so a run never touches the repository's notebooks or the user's Jupyter
set-up, and nothing in it reaches out to the network.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import PIL.Image
import PIL.ImageChops

try:
    from playwright.sync_api import expect, sync_playwright  # noqa: F401  (re-exported to the e2e tests)
except ImportError as error:  # under `make e2e` a missing driver must fail loudly, never skip
    raise ImportError(f"{error}: the end-to-end tests drive Chromium with Playwright; "
                      "`make e2e` installs it into .venv (pip install -e '.[e2e]')") from error

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium otherwise phones home (QUIC, component updates, sync) through a closed network and
# stalls; Playwright's launch() already gives it a fresh, empty user-data-dir.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

RUN_ALL_TIMEOUT_S = 300  # lesson 04 trains for about a minute on a 2-core machine
# A widget whose view failed to render falls back to its text/plain repr, e.g. "VBox(children=(...".
UNRENDERED_WIDGET = r"^\s*(interactive|VBox|HBox|Box|Output|\w*Slider|\w+Widget)\("

# ipywidgets puts a widget's view straight into the output area; a failed one leaves text instead
WIDGET_VIEW = ".jp-OutputArea-output > .jupyter-widgets"
CURRENT_NOTEBOOK = "window.jupyterapp.shell.currentWidget"


class LabServer:
    """A JupyterLab server on 127.0.0.1 serving copies of lessons from a temporary root directory."""

    def __init__(self, workdir: Path, log_path: Path):
        self.workdir = workdir
        self.root = workdir / "root"
        self.log_path = log_path
        self.token = secrets.token_hex(16)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict:
        """os.environ with every Jupyter directory the server or its kernels write to moved into workdir."""
        dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_RUNTIME_DIR": "runtime", "JUPYTER_DATA_DIR": "data",
                "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
                "IPYTHONDIR": "ipython"}
        env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1")
        for var, name in dirs.items():
            env[var] = str(self.workdir / name)
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        # The news toast would cover cells and fetch a feed from the internet.
        page_config = self.workdir / "config" / "labconfig" / "page_config.json"
        page_config.parent.mkdir(parents=True, exist_ok=True)
        page_config.write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        return env

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--ServerApp.port_retries=0", f"--ServerApp.root_dir={self.root}",
                   f"--IdentityProvider.token={self.token}",
                   # window.jupyterapp gives the test Lab's own commands and models to wait on
                   "--LabApp.expose_app_in_browser=True",
                   "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
        if os.getuid() == 0:  # containers and CI machines run as root, which Jupyter refuses by default
            command.append("--allow-root")
        return command

    def start(self, attempts: int = 3, timeout_s: float = 60) -> None:
        """Start the server on a free port and wait until its API answers. Another process can take
        the port between choosing and binding it; port_retries=0 makes that an exit, so try again."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        for attempt in range(attempts):
            self.port = free_port()
            with open(self.log_path, "a") as log:
                log.write(f"--- attempt {attempt + 1}: {' '.join(self.command())}\n")
                log.flush()
                # its own session, so that stop() can end the server's whole process group
                self.process = subprocess.Popen(self.command(), cwd=self.workdir, env=env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + timeout_s
            while self.process.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    return
                time.sleep(0.25)
            self.stop()
        raise RuntimeError(f"JupyterLab did not start; its log is {self.log_path}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            self.api("GET", "status")
            return True
        except OSError:  # refused, reset or timed out while the server is still starting
            return False

    def api(self, method: str, path: str):
        """Call the server's REST API; the decoded JSON answer, or None for an empty one."""
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel: kernels run in their own sessions, outside the server's process group."""
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")

    def stop(self) -> None:
        """Shut down the kernels and the server, then kill whatever of theirs is left, by PID."""
        if self.process is None:
            return
        children = descendants(self.process.pid)
        if self.process.poll() is None:
            try:
                self.shutdown_kernels()
            except OSError:
                pass  # a server that does not answer gets the signals below
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def copy_in(self, notebook: Path, trust: bool = False) -> str:
        """Copy a lesson into the server's root (Lab saves what it opens); its path there. Trusted,
        it is signed in the server's own signature database, as `make lab` signs the course's
        notebooks: Lab renders a notebook's saved widgets only when it trusts the notebook."""
        shutil.copy(notebook, self.root / notebook.name)
        if trust:
            subprocess.run([sys.executable, "-m", "jupyter", "trust", str(self.root / notebook.name)],
                           env=self.environment(), check=True, capture_output=True)
        return notebook.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """PIDs of every process below pid (kernels included, which live in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name in parentheses may hold spaces; the parent PID is the 2nd field after it
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


# ----------------------------------------------------------------------------- in the browser
def open_notebook(page, lab: LabServer, notebook: Path, trust: bool = False) -> None:
    """Open a copy of a lesson in Lab and wait until its kernel is idle.

    Each lesson gets a workspace of its own, reset on opening: the shared default workspace would
    reopen the previous test's notebook next to it, and that one could end up the current tab.
    A Run All sent while the kernel is still starting opens a "Select Kernel" dialog instead.
    """
    path = lab.copy_in(notebook, trust=trust)
    page.goto(f"{lab.url}/lab/workspaces/{notebook.stem}/tree/{path}?reset&token={lab.token}")
    # window.jupyterapp itself appears only once Lab has started in the page
    page.wait_for_function("""path => {
        const current = window.jupyterapp?.shell.currentWidget;
        return current?.context?.path === path && current.sessionContext?.session?.kernel?.status === 'idle';
    }""", arg=path)


def run_all(page, timeout_s: float = RUN_ALL_TIMEOUT_S) -> None:
    """Run every cell of the current notebook and wait until all have finished or one failed.

    Outputs are cleared first: the lessons are committed executed, so their cells already show
    execution counts and outputs from the run that saved them.
    """
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.wait_for_function(f"""() => {CURRENT_NOTEBOOK}.content.widgets
        .every(cell => cell.model.type !== 'code' || cell.model.executionCount === null)""")
    # not awaited: the command's promise lasts as long as the whole run, which the poll below watches
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(f"""() => {{
        const notebook = {CURRENT_NOTEBOOK};
        const cells = notebook.content.widgets.filter(cell => cell.model.type === 'code');
        const failed = cells.some(cell => cell.model.outputs.toJSON().some(o => o.output_type === 'error'));
        const done = cells.every(cell => cell.model.executionCount !== null);
        return (done || failed) && notebook.sessionContext.session?.kernel?.status === 'idle';
    }}""", timeout=timeout_s * 1000, polling=500)


def cell_errors(page) -> list[str]:
    """One line per failed cell: its number and error, or a traceback it printed to stderr."""
    return page.evaluate(f"""() => {CURRENT_NOTEBOOK}.content.widgets.flatMap((cell, i) => {{
        if (cell.model.type !== 'code') return [];
        return cell.model.outputs.toJSON().flatMap(o => {{
            if (o.output_type === 'error') return [`cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`];
            const text = [].concat(o.text || []).join('');
            if (o.name === 'stderr' && text.includes('Traceback')) return [`cell ${{i}}: ${{text}}`];
            return [];
        }});
    }})""")


def unrendered_widgets(page) -> list[str]:
    """Outputs that show a widget's text fallback, or ipywidgets' "Error displaying widget", instead of
    the widget: what a student sees when the widget manager or a model is missing."""
    texts = page.locator('.jp-OutputArea-output[data-mime-type="text/plain"]').all_text_contents()
    texts += page.locator(WIDGET_VIEW).all_text_contents()
    return [t.strip()[:200] for t in texts
            if re.match(UNRENDERED_WIDGET, t) or "Error displaying widget" in t]


def image_source(image) -> str:
    return image.evaluate("img => img.src")


def wait_until_loaded(image) -> None:
    """Wait until the browser has decoded the <img>'s current picture."""
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())


def changed_fraction(png_a: bytes, png_b: bytes) -> float:
    """The fraction of pixels that differ between two pictures (1.0 when their sizes differ)."""
    a, b = (PIL.Image.open(io.BytesIO(png)).convert("RGB") for png in (png_a, png_b))
    if a.size != b.size:
        return 1.0
    diff = PIL.ImageChops.difference(a, b).convert("L")
    return sum(diff.histogram()[1:]) / (a.size[0] * a.size[1])
