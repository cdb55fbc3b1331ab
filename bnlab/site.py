"""The course as a static web site: every lesson, the homework's student versions and the README as HTML
pages, from the committed executed notebooks (nothing is re-executed), readable offline.

    python -m bnlab.site --out build/site          # what `make site` runs
    python -m bnlab.site --serve                   # build, then serve it on http://127.0.0.1:8000
    python -m bnlab.site --vendor                  # what `make vendor` runs: refresh bnlab/static/vendor/

Why nbconvert's HTMLExporter (lab template) and not Jupyter Book: nbconvert is installed already
(JupyterLab and nbval depend on it); it renders a notebook's saved widget state with
@jupyter-widgets/html-manager, so the explorers' sliders and figures work on a page with no kernel;
and every asset URL it writes is a trait or a template block we can point at files of the site.
Jupyter Book 2 (mystmd) downloads its theme at build time and shows widgets as "kernel connection
required"; Jupyter Book 1 would add Sphinx and dozens of packages and still load html-manager from a CDN.

Offline, at build time and when a page is viewed:
- html-manager, RequireJS and MathJax 3 are committed in bnlab/static/vendor/, pinned in PINS.json
  (version, the npm tarball's sha512 integrity, each copied file's sha256); `--vendor` fetches them
  again with `npm pack` and refuses a tarball whose integrity differs.
- anywidget's front end (the AMD module in its Python wheel, anywidget/nbextension/index.js) is copied
  from the installed anywidget, so it matches the version that saved the widget state. RequireJS is
  told where it is, and html-manager's CDN fallback points at a folder of the site, so a module that
  is missing shows as a 404 on the site instead of a request to jsdelivr.
- JupyterLab's stylesheet comes from the installed nbconvert and is linked once, not inlined per page.
- Images in outputs are data URIs (nbconvert); mermaid.js, which the lab template would load from
  cdnjs, is left out (no lesson has a diagram).

Links between pages (`notebooks/01_forward.ipynb` in the README, `01_forward.ipynb` in a lesson,
`notebooks/homework/`) are rewritten to the built pages; a relative link to anything else is
reported, since the site does not have it.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import html
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
STATIC = PACKAGE / "static"
VENDOR = STATIC / "vendor"
PINS = VENDOR / "PINS.json"
TEMPLATES = STATIC / "site"  # holds the nbconvert template bnlab_site/ and site.css
TEMPLATE_NAME = "bnlab_site"
NOTEBOOKS = REPO / "notebooks"
README = REPO / "README.md"

LESSONS_GLOB = "[0-9][0-9]_*.ipynb"
HOMEWORK_DIR = "homework"  # the student versions; homework/solutions/ is never published
COURSE_TITLE = "bnlab: batch normalization"
# a build writes this into its output folder; a folder without it is never deleted to make room
MARKER = ".bnlab-site"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# ----------------------------------------------------------------------------- vendored JavaScript
def load_pins(pins_path: Path = PINS) -> list[dict]:
    """The packages PINS.json pins: name, version, integrity, dir and files ({name: {from, sha256}})."""
    return json.loads(Path(pins_path).read_text())["packages"]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def vendored_problems(vendor_dir: Path = VENDOR, pins_path: Path = PINS) -> list[str]:
    """One line for each vendored file that is missing or whose sha256 is not the one PINS.json records."""
    problems = []
    for package in load_pins(pins_path):
        for name, spec in package["files"].items():
            path = Path(vendor_dir) / package["dir"] / name
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif sha256_file(path) != spec["sha256"]:
                problems.append(f"{path} has sha256 {sha256_file(path)}, PINS.json pins {spec['sha256']}")
    return problems


def npm_integrity(data: bytes) -> str:
    """A tarball's integrity as npm's registry states it (Subresource Integrity, sha512)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def vendor(vendor_dir: Path = VENDOR, pins_path: Path = PINS, npm: str = "npm") -> list[Path]:
    """Fetch each pinned package with `npm pack`, check its tarball against the pinned integrity, and copy
    the pinned files out of it into vendor_dir/<dir>/. A file whose sha256 is pinned must match it; an
    empty sha256 (a version just changed in PINS.json) is filled in from the verified tarball."""
    pins_path = Path(pins_path)
    document = json.loads(pins_path.read_text())
    written, repinned = [], False
    with tempfile.TemporaryDirectory(prefix="bnlab-vendor-") as tmp:
        for package in document["packages"]:
            spec = f"{package['name']}@{package['version']}"
            try:
                result = subprocess.run([npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", tmp],
                                        capture_output=True, text=True, check=False)
            except FileNotFoundError as error:
                raise RuntimeError(f"`{npm}` not found: `make vendor` fetches {spec} with npm pack") from error
            if result.returncode != 0:
                raise RuntimeError(f"npm pack {spec} failed:\n{result.stderr.strip()}")
            tarball = Path(tmp) / json.loads(result.stdout)[0]["filename"]
            integrity = npm_integrity(tarball.read_bytes())
            if integrity != package["integrity"]:
                raise ValueError(f"{spec}: the tarball npm fetched has integrity {integrity}, "
                                 f"PINS.json pins {package['integrity']}; nothing was copied")
            with tarfile.open(tarball) as tar:
                for name, file_spec in package["files"].items():
                    member = tar.extractfile(file_spec["from"])
                    if member is None:
                        raise ValueError(f"{spec} has no file {file_spec['from']}")
                    data = member.read()
                    digest = hashlib.sha256(data).hexdigest()
                    if file_spec.get("sha256") and file_spec["sha256"] != digest:
                        raise ValueError(f"{spec}: {file_spec['from']} has sha256 {digest}, "
                                         f"PINS.json pins {file_spec['sha256']}")
                    repinned |= file_spec.get("sha256") != digest
                    file_spec["sha256"] = digest
                    target = Path(vendor_dir) / package["dir"] / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                    written.append(target)
    if repinned:
        pins_path.write_text(json.dumps(document, indent=2) + "\n")
    return written


def anywidget_front_end() -> Path:
    """anywidget's front end for html-manager, from the installed anywidget (it matches the version
    whose widgets the notebooks saved): an AMD module that defines AnyModel and AnyView."""
    try:
        path = Path(str(importlib.resources.files("anywidget") / "nbextension" / "index.js"))
    except ModuleNotFoundError as error:
        raise RuntimeError("anywidget is not installed; the site copies its front end "
                           "(pip install anywidget)") from error
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: this anywidget has no nbextension/index.js for html-manager")
    return path


# ----------------------------------------------------------------------------- pages
@dataclass
class Page:
    """One page of the site: the file it is built from, its path in the site, and its title."""

    source: Path  # a notebook, the README, or (for the homework list) the folder's index.md, which need not exist
    path: str  # relative to the site root, e.g. "lessons/01_forward.html"
    title: str
    kind: str  # "index", "lesson", "homework-index" or "homework"

    @property
    def root(self) -> str:
        """The relative way from this page up to the site root: "" or "../"."""
        return "../" * (len(PurePosixPath(self.path).parts) - 1)


@dataclass
class Site:
    out: Path
    pages: list[Page]
    seconds: float = 0.0
    size_bytes: int = 0
    # relative links to files the site does not have, as "page: href"
    unresolved: list[str] = field(default_factory=list)


def notebook_title(nb, fallback: str) -> str:
    """The text of a notebook's first top-level heading, without Markdown marks."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"[`*_]", "", line[2:]).strip()
    return fallback


def plan_pages(notebooks: Path, readme: Path) -> list[Page]:
    """The site's pages in reading order: the README, the lessons, the homework list and the homework."""
    import nbformat

    notebooks, readme = Path(notebooks).resolve(), Path(readme).resolve()
    if not notebooks.is_dir():
        raise ValueError(f"notebooks folder {notebooks} does not exist")
    if not readme.is_file():
        raise ValueError(f"README {readme} does not exist")
    lessons = sorted(notebooks.glob(LESSONS_GLOB))
    if not lessons:
        raise ValueError(f"{notebooks} has no lessons ({LESSONS_GLOB})")
    pages = [Page(readme, "index.html", COURSE_TITLE, "index")]
    for path in lessons:
        nb = nbformat.read(path, as_version=4)
        pages.append(Page(path, f"lessons/{path.stem}.html", notebook_title(nb, path.stem), "lesson"))
    homework = sorted((notebooks / HOMEWORK_DIR).glob("*.ipynb"))
    if homework:
        pages.append(Page(notebooks / HOMEWORK_DIR / "index.md", "homework/index.html", "Homework", "homework-index"))
        for path in homework:
            nb = nbformat.read(path, as_version=4)
            pages.append(Page(path, f"homework/{path.stem}.html", notebook_title(nb, path.stem), "homework"))
    return pages


def link_targets(pages: list[Page], notebooks: Path) -> dict[Path, str]:
    """What a relative link may point at (a resolved file or folder) and the page it becomes."""
    targets = {page.source: page.path for page in pages}
    targets[Path(notebooks).resolve()] = "index.html"
    homework_index = [page for page in pages if page.kind == "homework-index"]
    if homework_index:
        targets[homework_index[0].source.parent] = homework_index[0].path
    return targets


def relative_url(target: str, page: Page) -> str:
    return os.path.relpath(target, start=PurePosixPath(page.path).parent.as_posix() or ".").replace(os.sep, "/")


def nav_html(page: Page, pages: list[Page], bottom: bool = False) -> str:
    """The header (or footer) of a page: course title, lessons, homework, previous and next page of its
    kind (lesson to lesson, homework to homework)."""
    def link(target: Page, text: str, **attributes) -> str:
        extra = "".join(f' {k}="{html.escape(v)}"' for k, v in attributes.items())
        return f'<a href="{html.escape(relative_url(target.path, page))}"{extra}>{html.escape(text)}</a>'

    by_kind = {kind: [p for p in pages if p.kind == kind] for kind in ("index", "lesson", "homework-index")}
    parts = [link(by_kind["index"][0], COURSE_TITLE, **{"class": "bnlab-home"})]
    parts.append(link(by_kind["lesson"][0], "Lessons"))
    if by_kind["homework-index"]:
        parts.append(link(by_kind["homework-index"][0], "Homework"))
    steps = []
    if page.kind in ("lesson", "homework"):
        same = [p for p in pages if p.kind == page.kind]
        i = same.index(page)
        if i > 0:
            steps.append(link(same[i - 1], f"← {same[i - 1].title}", rel="prev", title=same[i - 1].title))
        if i + 1 < len(same):
            steps.append(link(same[i + 1], f"{same[i + 1].title} →", rel="next", title=same[i + 1].title))
    if steps:
        parts.append(f'<span class="bnlab-steps">{" ".join(steps)}</span>')
    classes = "bnlab-nav bnlab-nav-bottom" if bottom else "bnlab-nav"
    return f'<nav class="{classes}" aria-label="course">{" ".join(parts)}</nav>'


def slug(text: str) -> str:
    """GitHub's anchor for a heading ("Teaching with bnlab" -> "teaching-with-bnlab")."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")', re.IGNORECASE)


def rewrite_links(body: str, page: Page, targets: dict[Path, str], unresolved: list[str]) -> str:
    """Point relative links at the built pages; fix GitHub-style "#section" anchors to the ids nbconvert
    gives headings ("#homework" -> "#Homework"); note relative links to files the site does not have."""
    ids = set(re.findall(r'\bid="([^"]+)"', body))
    by_slug = {}
    for anchor in ids:
        by_slug.setdefault(slug(html.unescape(anchor)), anchor)

    def rewrite(match: re.Match) -> str:
        href = html.unescape(match.group(2))
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith("/"):
            return match.group(0)
        if not parts.path:  # "#section" on this page
            fragment = parts.fragment
            if fragment and fragment not in ids and slug(unquote(fragment)) in by_slug:
                href = "#" + by_slug[slug(unquote(fragment))]
            return match.group(1) + html.escape(href) + match.group(3)
        target = (page.source.parent / unquote(parts.path)).resolve()
        if target not in targets:
            unresolved.append(f"{page.path}: {href}")
            return match.group(0)
        new = relative_url(targets[target], page) + (f"#{parts.fragment}" if parts.fragment else "")
        return match.group(1) + html.escape(new) + match.group(3)

    return HREF.sub(rewrite, body)


def markdown_notebook(text: str):
    """A notebook of one Markdown cell, so that the README and the homework list are rendered and
    styled like the lessons (the same Markdown renderer, MathJax and stylesheet)."""
    import nbformat

    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])


def homework_index_markdown(pages: list[Page]) -> str:
    lines = ["# Homework", "",
             "The student versions of the assignments, as the course ships them: each task has a stub and a check "
             "cell after it. Run them in JupyterLab (`make lab`) to do them; this page only shows them.", ""]
    for page in pages:
        if page.kind == "homework":
            lines.append(f"- [{page.title}]({page.source.name})")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the build
def prepare_out(out: Path) -> None:
    """Empty out for a new build. A folder that holds anything but an earlier build is never deleted."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(f"--out {out} is a folder that is not an earlier site build (no {MARKER} in it); "
                             "name an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by python -m bnlab.site; the next build deletes this folder\n")


def copy_static(out: Path, exporter) -> None:
    """The site's own copies of everything its pages load: vendored JavaScript, anywidget's front end,
    JupyterLab's stylesheet (from the installed nbconvert) and the site's stylesheet."""
    static = out / "static"
    for package in load_pins():
        source = VENDOR / package["dir"]
        shutil.copytree(source, static / "vendor" / package["dir"])
    (static / "anywidget").mkdir(parents=True)
    shutil.copy(anywidget_front_end(), static / "anywidget" / "index.js")
    (static / "lab").mkdir()
    for name in ("index.css", "theme-light.css"):
        found = [Path(d) / "static" / name for d in exporter.template_paths if (Path(d) / "static" / name).is_file()]
        if not found:
            raise RuntimeError(f"nbconvert's lab template has no static/{name} "
                               f"(template paths: {exporter.template_paths})")
        shutil.copy(found[0], static / "lab" / name)
    shutil.copy(TEMPLATES / "site.css", static / "site.css")


def make_exporter():
    from nbconvert import HTMLExporter

    # The template replaces the blocks that load scripts; these traits are set too, so that nothing the
    # lab template still reads could name a CDN.
    return HTMLExporter(template_name=TEMPLATE_NAME, extra_template_basedirs=[str(TEMPLATES)],
                        theme="light", mathjax_url="", require_js_url="", jupyter_widgets_base_url="",
                        mermaid_js_url="", mermaid_layout_elk_js_url="")


def render_page(exporter, nb, page: Page, pages: list[Page]) -> str:
    exporter.widget_renderer_url = f"{page.root}static/vendor/html-manager/embed-amd.js"
    exporter.require_js_url = f"{page.root}static/vendor/requirejs/require.js"
    # the navigation goes in after the page's links are rewritten: its own links are the site's already
    resources = {"metadata": {"name": page.title}, "bnlab_root": page.root,
                 "bnlab_nav": NAV_TOP, "bnlab_nav_bottom": NAV_BOTTOM}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


NAV_TOP, NAV_BOTTOM = "<!-- bnlab-nav -->", "<!-- bnlab-nav-bottom -->"


def add_nav(body: str, page: Page, pages: list[Page]) -> str:
    return (body.replace(NAV_TOP, nav_html(page, pages), 1)
            .replace(NAV_BOTTOM, nav_html(page, pages, bottom=True), 1))


def build_site(out: Path, notebooks: Path = NOTEBOOKS, readme: Path = README) -> Site:
    """Build the site into out (emptied first; see prepare_out) and say what it holds."""
    import nbformat

    start = time.perf_counter()
    problems = vendored_problems()
    if problems:
        raise RuntimeError("the vendored JavaScript does not match PINS.json (run `make vendor`):\n"
                           + "\n".join(problems))
    out = Path(out).resolve()
    pages = plan_pages(notebooks, readme)
    targets = link_targets(pages, notebooks)
    prepare_out(out)
    exporter = make_exporter()
    copy_static(out, exporter)
    site = Site(out, pages)
    for page in pages:
        if page.kind == "index":
            nb = markdown_notebook(page.source.read_text())
        elif page.kind == "homework-index":
            nb = markdown_notebook(homework_index_markdown(pages))
        else:
            nb = nbformat.read(page.source, as_version=4)
        body = rewrite_links(render_page(exporter, nb, page, pages), page, targets, site.unresolved)
        body = add_nav(body, page, pages)
        target = out / page.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    site.seconds = time.perf_counter() - start
    site.size_bytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return site


def has_widget_state(nb) -> bool:
    return bool(nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state"))


# ----------------------------------------------------------------------------- serving
class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site's folder; logs nothing (tests and `--serve` print their own lines)."""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class SiteServer(ThreadingHTTPServer):
    # a browser opens many connections at once for a page's scripts, styles and fonts; socketserver's
    # default backlog of 5 would leave some waiting for a SYN retransmit
    request_queue_size = 64


def make_server(directory: Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server for the built site on host:port (0: any free port); call serve_forever() on it."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    return SiteServer((host, port), handler)


def serve_in_thread(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    """Serve directory on 127.0.0.1 at a free port from a daemon thread; the server and its base URL."""
    server = make_server(directory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/site"), help="output folder (default build/site)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="the lessons' folder")
    parser.add_argument("--readme", type=Path, default=README, help="the README that becomes index.html")
    parser.add_argument("--serve", action="store_true", help="after building, serve the site on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000)")
    parser.add_argument("--vendor", action="store_true",
                        help="instead of building, fetch the pinned JavaScript with npm pack into bnlab/static/vendor")
    args = parser.parse_args(argv)
    if args.vendor:
        for path in vendor():
            print(f"bnlab.site: {path.relative_to(REPO)} ({path.stat().st_size / 1e3:,.0f} kB)")
        print("bnlab.site: vendored files match PINS.json")
        return 0
    try:
        site = build_site(args.out, args.notebooks, args.readme)
    except ValueError as error:
        print(f"bnlab.site: {error}", file=sys.stderr)
        return 2
    for line in site.unresolved:
        print(f"bnlab.site: warning: link to a file the site does not have: {line}", file=sys.stderr)
    print(f"bnlab.site: {len(site.pages)} pages in {site.out} ({site.size_bytes / 1e6:.1f} MB), "
          f"built in {site.seconds:.1f} s")
    if args.serve:
        server = make_server(site.out, args.port)
        print(f"bnlab.site: serving on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
