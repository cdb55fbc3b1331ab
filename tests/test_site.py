"""The course's web site (bnlab.site): pages for the README, every lesson and the homework's student
versions, links between them that resolve, saved widget state embedded, and nothing loaded from
outside the site. The browser side (widgets render, sliders redraw) is tests/e2e/test_site.py."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anywidget
import ipywidgets
import nbformat
import pytest
import traitlets
from ipywidgets.embed import embed_data

from bnlab import site

ROOT = Path(__file__).resolve().parents[1]
# a 1x1 PNG, as matplotlib's outputs are stored
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a6f58b3f0000000049454e44ae426082")).decode()
CDN = re.compile(r"cdn\.jsdelivr|unpkg\.com|cdnjs|esm\.sh|googleapis", re.IGNORECASE)
SOURCES = re.compile(r"<(script|link|img|iframe)\b[^>]*?\b(src|href)=\"([^\"]*)\"", re.IGNORECASE)
LINKS = re.compile(r"<a\b[^>]*?\bhref=\"([^\"]*)\"", re.IGNORECASE)


class Probe(anywidget.AnyWidget):
    """An anywidget like the explorers: its JavaScript is saved in the widget state."""

    _esm = "export default { render({ model, el }) { el.textContent = 'bnlab-explorer ' + model.get('value'); } };"
    value = traitlets.Int(4).tag(sync=True)


def widget_notebook(widgets: list, markdown: str, with_image: bool = True):
    """A notebook with a Markdown cell, a cell whose output is a PNG, and one cell per widget whose output
    is its view, with the widget state saved as `nbconvert --ExecutePreprocessor.store_widget_state` does."""
    cells = [nbformat.v4.new_markdown_cell(markdown)]
    if with_image:
        cells.append(nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
            "display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]))
    nb = nbformat.v4.new_notebook(cells=cells)
    if widgets:
        data = embed_data(views=widgets, drop_defaults=False)
        for widget, view in zip(widgets, data["view_specs"]):
            cells.append(nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output(
                "execute_result", execution_count=1,
                data={"application/vnd.jupyter.widget-view+json": view, "text/plain": repr(widget)})]))
        nb.metadata["widgets"] = {site.WIDGET_STATE: data["manager_state"]}
    return nb


def write_course(root: Path) -> tuple[Path, Path, dict]:
    """A tiny course: README, two lessons (math, an image, an IntSlider and an anywidget, links), one
    homework and its solution. Its notebooks folder, its README, and the widgets' model ids."""
    notebooks = root / "notebooks"
    (notebooks / "homework" / "solutions").mkdir(parents=True)
    slider, probe = ipywidgets.IntSlider(value=7, description="batch size"), Probe()
    first = widget_notebook([slider, probe], "# 01 · First\n\n## Math\n\nInline $\\gamma x^2$ and display\n\n"
                            "$$\\hat x = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}$$\n\n"
                            "Next: [the second lesson](02_second.ipynb); homework: [H1](homework/h1_task.ipynb).")
    nbformat.write(first, notebooks / "01_first.ipynb")
    second = widget_notebook([], "# 02 · Second\n\nBack to [the first](01_first.ipynb#Math), "
                             "the [README](../README.md), a [module](../bnlab/layers.py) and "
                             "[elsewhere](https://example.org/x.ipynb).", with_image=False)
    nbformat.write(second, notebooks / "02_second.ipynb")
    nbformat.write(widget_notebook([], "# H1 · A task\n\nBack to [lesson 01](../01_first.ipynb)."),
                   notebooks / "homework" / "h1_task.ipynb")
    nbformat.write(widget_notebook([], "# H1 · A task (solution)"),
                   notebooks / "homework" / "solutions" / "h1_task.ipynb")
    (notebooks / "notes.ipynb").write_text("not a lesson: no two-digit number")
    readme = root / "README.md"
    readme.write_text("# Tiny course\n\n- [first](notebooks/01_first.ipynb)\n- [homework](notebooks/homework/)\n"
                      "- [jump](#some-section)\n\n## Some section\n\nText with $\\beta$.\n")
    return notebooks, readme, {"slider": slider.model_id, "probe": probe.model_id}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    notebooks, readme, ids = write_course(root)
    built = site.build_site(root / "out", notebooks, readme)
    return built, ids


def pages_of(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*.html"))}


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith("/"))


def anchors(text: str) -> set[str]:
    return {html.unescape(a) for a in re.findall(r'\bid="([^"]*)"', text)}


def broken_links(out: Path) -> list[str]:
    """Every relative href or src of every page that names no file of the site (fragments checked too)."""
    broken = []
    for name, text in pages_of(out).items():
        page = out / name
        urls = [m.group(3) for m in SOURCES.finditer(text)] + LINKS.findall(text)
        for url in urls:
            parts = urlsplit(url)
            if not is_local(url) or not parts.path:
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                broken.append(f"{name}: {url}")
            elif parts.fragment and html.unescape(parts.fragment) not in anchors(target.read_text()):
                broken.append(f"{name}: {url} (no such anchor)")
        for fragment in re.findall(r'<a\b[^>]*?\bhref="#([^"]*)"', text):
            if fragment and html.unescape(fragment) not in anchors(text):
                broken.append(f"{name}: #{fragment} (no such anchor)")
    return broken


# ----------------------------------------------------------------------------- a tiny course
def test_every_lesson_homework_and_the_readme_get_a_page_and_solutions_none(tiny):
    built, _ = tiny
    assert sorted(pages_of(built.out)) == ["homework/h1_task.html", "homework/index.html", "index.html",
                                           "lessons/01_first.html", "lessons/02_second.html"]
    assert [p.kind for p in built.pages] == ["index", "lesson", "lesson", "homework-index", "homework"]
    assert "solution" not in "".join(pages_of(built.out).values()).lower()


def test_every_link_and_asset_resolves_to_a_file_of_the_site(tiny):
    built, _ = tiny
    # the only relative link to something the site does not have is reported, and left as it was
    assert broken_links(built.out) == ["lessons/02_second.html: ../bnlab/layers.py"]
    assert built.unresolved == ["lessons/02_second.html: ../bnlab/layers.py"]


def test_navigation_links_course_lessons_homework_and_neighbours(tiny):
    built, _ = tiny
    pages = pages_of(built.out)
    nav = re.findall(r'<nav class="bnlab-nav"[^>]*>(.*?)</nav>', pages["lessons/02_second.html"], re.S)[0]
    hrefs = LINKS.findall(nav)
    assert hrefs == ["../index.html", "01_first.html", "../homework/index.html", "01_first.html"]
    assert 'rel="prev"' in nav and 'rel="next"' not in nav
    first = pages["lessons/01_first.html"]
    assert 'rel="next"' in first and "02 · Second →" in first
    assert first.count('class="bnlab-nav') == 2  # header and footer
    assert "<title>01 · First</title>" in first


def test_notebook_links_point_at_the_built_pages(tiny):
    built, _ = tiny
    pages = pages_of(built.out)
    every_href = [href for text in pages.values() for href in LINKS.findall(text)]
    assert [h for h in every_href if ".ipynb" in h] == ["https://example.org/x.ipynb"]
    assert 'href="lessons/01_first.html"' in pages["index.html"]
    assert 'href="homework/index.html"' in pages["index.html"]
    assert 'href="02_second.html"' in pages["lessons/01_first.html"]
    assert 'href="../homework/h1_task.html"' in pages["lessons/01_first.html"]
    assert 'href="01_first.html#Math"' in pages["lessons/02_second.html"]
    assert 'href="../index.html">README' in pages["lessons/02_second.html"]
    assert 'href="../lessons/01_first.html"' in pages["homework/h1_task.html"]
    assert 'href="h1_task.html"' in pages["homework/index.html"]
    # GitHub's anchor for a heading, fixed to the id nbconvert gives it
    assert 'href="#Some-section"' in pages["index.html"] and 'id="Some-section"' in pages["index.html"]


def test_nothing_is_loaded_from_outside_the_site(tiny):
    built, _ = tiny
    for name, text in pages_of(built.out).items():
        sources = [m.group(3) for m in SOURCES.finditer(text)]
        assert sources and all(is_local(s) or s.startswith("data:") for s in sources), (name, sources)
        assert not CDN.search(text), (name, CDN.search(text).group(0))
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text.split("</nav>", 1)[0]), name
        # html-manager's fallback for a widget module it cannot find is a folder of the site, not a CDN
        for cdn in re.findall(r'data-jupyter-widgets-cdn="([^"]*)"', text):
            assert is_local(cdn), (name, cdn)
    # anywidget's front end names no CDN (the vendored html-manager names the one it is told not to use)
    assert not CDN.search((built.out / "static" / "anywidget" / "index.js").read_text())


def test_math_is_left_for_the_local_mathjax(tiny):
    built, _ = tiny
    page = pages_of(built.out)["lessons/01_first.html"]
    assert "$\\gamma x^2$" in page and "$$\\hat x = \\frac{x - \\mu}" in page
    assert 'src="../static/vendor/mathjax/tex-svg-full.js"' in page
    assert "inlineMath: [['$', '$']" in page and "processEscapes: true" in page
    assert "MathJax.Hub = {" in page  # html-manager's widgets call MathJax 2's API
    assert page.index("tex-svg-full.js") < page.index("require.js")


def test_images_are_embedded_as_data_uris(tiny):
    built, _ = tiny
    assert f'src="data:image/png;base64,{PNG}' in pages_of(built.out)["lessons/01_first.html"]


def test_saved_widget_state_and_views_are_embedded(tiny):
    built, ids = tiny
    page = pages_of(built.out)["lessons/01_first.html"]
    state = re.search(rf'<script type="{re.escape(site.WIDGET_STATE)}">\s*(.*?)\s*</script>', page, re.S)
    assert state, "no saved widget state in the page"
    models = json.loads(state.group(1))["state"]
    assert models[ids["slider"]]["model_name"] == "IntSliderModel"
    assert models[ids["slider"]]["state"]["value"] == 7
    assert models[ids["probe"]]["model_module"] == "anywidget"
    assert "bnlab-explorer" in models[ids["probe"]]["state"]["_esm"]
    views = re.findall(r'<script type="application/vnd.jupyter.widget-view\+json">\s*(.*?)\s*</script>', page, re.S)
    assert {json.loads(v)["model_id"] for v in views} == set(ids.values())
    assert 'src="../static/vendor/html-manager/embed-amd.js"' not in page  # added by a script, at load
    assert "'../static/vendor/html-manager/embed-amd.js'" in page
    assert 'anywidget: "../static/anywidget/index"' in page
    assert (built.out / "static" / "anywidget" / "index.js").read_text().rstrip().endswith(
        'define(["@jupyter-widgets/base"], widget_default);')
    # a page without widgets does not load html-manager
    assert "html-manager/embed-amd.js'" not in pages_of(built.out)["lessons/02_second.html"]


def test_a_rebuild_replaces_the_previous_site(tiny, tmp_path):
    built, _ = tiny
    notebooks, readme, _ = write_course(tmp_path)
    out = tmp_path / "out"
    site.build_site(out, notebooks, readme)
    (out / "stale.html").write_text("from an old build")
    again = site.build_site(out, notebooks, readme)
    assert not (out / "stale.html").exists() and (out / site.MARKER).is_file()
    assert again.size_bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_value_errors_that_say_what_is_wrong(tmp_path):
    notebooks, readme, _ = write_course(tmp_path)
    with pytest.raises(ValueError, match="notebooks folder .*missing.* does not exist"):
        site.build_site(tmp_path / "out", tmp_path / "missing", readme)
    with pytest.raises(ValueError, match="README .* does not exist"):
        site.build_site(tmp_path / "out", notebooks, tmp_path / "NOPE.md")
    with pytest.raises(ValueError, match="has no lessons"):
        site.build_site(tmp_path / "out", notebooks / "homework", readme)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not an earlier site build"):
        site.build_site(precious, notebooks, readme)
    assert (precious / "thesis.tex").read_text() == "years of work"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        site.build_site(tmp_path / "a_file", notebooks, readme)


def test_the_command_line_says_what_is_wrong(tmp_path, capsys):
    assert site.main(["--out", str(tmp_path / "out"), "--notebooks", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- vendored JavaScript
def test_vendored_files_match_their_pins():
    packages = site.load_pins()
    assert {p["name"]: p["version"] for p in packages} == {
        "@jupyter-widgets/html-manager": "1.0.15", "requirejs": "2.3.7", "mathjax": "3.2.2"}
    for package in packages:
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", package["integrity"]), package["name"]
        for spec in package["files"].values():
            assert re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]), package["name"]
    assert site.vendored_problems() == []
    for package in packages:  # each package's license travels with it
        assert (site.VENDOR / package["dir"] / "LICENSE").is_file(), package["name"]


def test_the_site_copies_exactly_the_pinned_files(tiny):
    built, _ = tiny
    assert site.vendored_problems(built.out / "static" / "vendor") == []


def fake_npm(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """An `npm` that packs a tarball of files (no registry): its path, and the tarball's integrity."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tarball = tmp_path / "pkg-1.0.0.tgz"
    tarball.write_bytes(buffer.getvalue())
    npm = tmp_path / "npm"
    npm.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                   f"shutil.copy({str(tarball)!r}, sys.argv[sys.argv.index('--pack-destination') + 1])\n"
                   "print('[{\"filename\": \"pkg-1.0.0.tgz\"}]')\n")
    npm.chmod(0o755)
    return npm, site.npm_integrity(buffer.getvalue())


def test_vendor_checks_the_tarball_then_copies_and_pins_the_files(tmp_path):
    npm, integrity = fake_npm(tmp_path, {"package/dist/a.js": b"define([], 1);", "package/LICENSE": b"MIT"})
    pins = tmp_path / "PINS.json"
    files = {"a.js": {"from": "package/dist/a.js", "sha256": ""}, "LICENSE": {"from": "package/LICENSE", "sha256": ""}}
    pins.write_text(json.dumps({"packages": [
        {"name": "pkg", "version": "1.0.0", "integrity": integrity, "dir": "pkg", "files": files}]}))
    written = site.vendor(tmp_path / "vendor", pins, npm=str(npm))
    assert sorted(p.name for p in written) == ["LICENSE", "a.js"]
    assert (tmp_path / "vendor" / "pkg" / "a.js").read_bytes() == b"define([], 1);"
    pinned = json.loads(pins.read_text())["packages"][0]["files"]["a.js"]["sha256"]
    assert pinned == hashlib.sha256(b"define([], 1);").hexdigest()  # an empty pin is filled in
    assert site.vendored_problems(tmp_path / "vendor", pins) == []

    (tmp_path / "vendor" / "pkg" / "a.js").write_bytes(b"tampered")
    assert site.vendored_problems(tmp_path / "vendor", pins) == [
        f"{tmp_path / 'vendor' / 'pkg' / 'a.js'} has sha256 {hashlib.sha256(b'tampered').hexdigest()}, "
        f"PINS.json pins {pinned}"]


def test_vendor_refuses_a_tarball_with_another_integrity(tmp_path):
    npm, _ = fake_npm(tmp_path, {"package/dist/a.js": b"evil"})
    pins = tmp_path / "PINS.json"
    good = site.npm_integrity(b"the real tarball")
    pins.write_text(json.dumps({"packages": [{"name": "pkg", "version": "1.0.0", "integrity": good, "dir": "pkg",
                                              "files": {"a.js": {"from": "package/dist/a.js", "sha256": ""}}}]}))
    with pytest.raises(ValueError, match="integrity .* PINS.json pins sha512-.*nothing was copied"):
        site.vendor(tmp_path / "vendor", pins, npm=str(npm))
    assert not (tmp_path / "vendor").exists()


# ----------------------------------------------------------------------------- the real course
@pytest.fixture(scope="module")
def course(tmp_path_factory):
    start = time.perf_counter()
    built = site.build_site(tmp_path_factory.mktemp("site") / "site")
    return built, time.perf_counter() - start


def test_the_course_builds_in_seconds_with_every_page(course):
    built, seconds = course
    lessons = sorted(p.stem for p in site.NOTEBOOKS.glob(site.LESSONS_GLOB))
    homework = sorted(p.stem for p in (site.NOTEBOOKS / "homework").glob("*.ipynb"))
    assert "00_index" in lessons and homework
    names = set(pages_of(built.out))
    assert names == ({"index.html", "homework/index.html"} | {f"lessons/{s}.html" for s in lessons}
                     | {f"homework/{s}.html" for s in homework})
    assert seconds < 60, f"the site took {seconds:.0f} s to build"  # about 3 s on a 2-core machine


def test_the_course_links_resolve_and_nothing_comes_from_outside(course):
    built, _ = course
    assert built.unresolved == []
    assert broken_links(built.out) == []
    for name, text in pages_of(built.out).items():
        assert not CDN.search(text), (name, CDN.search(text).group(0))
        assert all(is_local(m.group(3)) or m.group(3).startswith("data:") for m in SOURCES.finditer(text)), name
        assert not [h for h in LINKS.findall(text) if h.endswith(".ipynb") and is_local(h)], name


def test_the_lessons_carry_their_saved_widget_state(course):
    built, _ = course
    for path in sorted(site.NOTEBOOKS.glob(site.LESSONS_GLOB)):
        nb = nbformat.read(path, as_version=4)
        page = (built.out / "lessons" / f"{path.stem}.html").read_text()
        if site.has_widget_state(nb):
            saved = nb.metadata["widgets"][site.WIDGET_STATE]["state"]
            assert f'<script type="{site.WIDGET_STATE}">' in page, path.name
            assert all(model_id in page for model_id in saved), path.name


def test_the_site_is_served_over_http(tiny):
    built, _ = tiny
    server, url = site.serve_in_thread(built.out)
    try:
        with urllib.request.urlopen(url + "lessons/01_first.html", timeout=10) as response:
            assert response.status == 200 and b"01 \xc2\xb7 First" in response.read()
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- make site, CI
def test_make_site_builds_into_build_site_and_ci_runs_it_before_e2e():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^site: setup\n\t\$\(PY\) -m bnlab\.site --out build/site$", makefile, re.M)
    assert re.search(r"^vendor: setup\n\t\$\(PY\) -m bnlab\.site --vendor$", makefile, re.M)
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    assert {"site", "vendor"} <= set(phony)
    commands = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    makes = [c.split()[1] for c in commands if re.match(r"^make\s+\w+", c)]
    assert makes.index("site") < makes.index("e2e"), makes
    assert "build/" in (ROOT / ".gitignore").read_text().split()


def test_the_module_runs_as_a_script_and_prints_what_it_built(tmp_path):
    notebooks, readme, _ = write_course(tmp_path)
    result = subprocess.run([sys.executable, "-m", "bnlab.site", "--out", str(tmp_path / "out"),
                             "--notebooks", str(notebooks), "--readme", str(readme)],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"5 pages in .* \(\d+\.\d MB\), built in \d+\.\d s", result.stdout), result.stdout
    assert "link to a file the site does not have: lessons/02_second.html: ../bnlab/layers.py" in result.stderr
