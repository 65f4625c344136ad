"""The published book, tested as a reader sees it: in a real browser.

The book is built once per session (``built_book`` in conftest), served from 127.0.0.1 on a
free port by a server this module starts and stops, and driven through Playwright with a
Chromium-based browser found on the PATH (``course.py test`` installs Debian's ``chromium``
when it can; Playwright's own browser download is not used). Without a browser these tests
are skipped, with the reason in pytest's summary, except under CI (the ``CI`` environment
variable, set by GitHub Actions and by ``.ci/run``), where a missing browser is a failure.

Screenshots of the introduction and a chapter, at desktop and phone widths, are written to
``reports/screenshots/`` for a person to look at.

Accessibility: axe-core (the engine that ships with the ``axe-playwright-python`` package, so
it runs offline) checks every page, and no violation of impact "serious" or "critical" may
remain (:data:`AXE_EXCEPTIONS` lists the theme's, each with its reason). The keyboard reaches
the search field and the solutions, Enter and Space open a solution, and a chapter prints
without the sidebars.
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from course import find_browser

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "reports" / "screenshots"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]  # one worker builds the book once


def toc_pages() -> list[str]:
    """The book's pages in reading order (paths relative to the site, ``.html``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc["parts"])
    return [f"{page}.html" for page in pages]


PAGES = toc_pages()
# The page's prose as a reader sees it: without code, outputs and the rendered math itself.
PROSE = """() => {
    const main = document.querySelector('main').cloneNode(true);
    main.querySelectorAll('pre, code, .cell_output, script, mjx-container')
        .forEach(e => e.remove());
    return main.innerText;
}"""
NOTEBOOK_PAGES = [page for page in PAGES if page.startswith("notebooks/")]
# Code cells and printed results that scroll sideways in the text column (the start of their
# text, for the message); a hidden cell (the Colab install cell) has no width and never counts.
WIDE_CELLS = """() => Array.from(document.querySelectorAll(
        'main .cell_input pre, main .cell_output pre'))
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim().split('\\n')[0].slice(0, 60))"""
# Display equations that do not fit the text column (the start of their text, for the message).
WIDE_MATH = """() => Array.from(document.querySelectorAll('main mjx-container[display="true"]'))
    .filter(m => m.scrollWidth > m.parentElement.clientWidth + 2)
    .map(m => m.textContent.slice(0, 60))"""


# Figures: the smallest text of each as a reader sees it, at least SMALLEST_TEXT_PX[width] CSS
# px with the page that wide. bncourse.plots records each figure's smallest text, in pixels of
# its PNG, in the PNG itself (bncourse.plots.style); on the page it is that size x the width
# the image is shown at / its natural width. 12 px (9 pt) on a desktop; 8 px on a phone: held
# at about 30 cm, half a desktop screen's distance, with about 0.18 mm to a CSS px, 8 px there
# is about the same angle to the eye (0.28 degrees) as 12 px of a desktop at 60 cm (0.30).
SMALLEST_TEXT_PX = {DESKTOP["width"]: 12.0, PHONE["width"]: 8.0}
# (the PNG's tEXt chunks are read in the page, so a figure served any way at all is checked)
SMALL_FIGURE_TEXT = """async ([key, threshold]) => {
    const found = [];
    const images = Array.from(document.querySelectorAll(
        'main figure img, main .cell_output img'))
        .filter(img => img.getBoundingClientRect().width > 0);
    for (const img of images) {
        const bytes = new Uint8Array(await (await fetch(img.currentSrc)).arrayBuffer());
        const view = new DataView(bytes.buffer);
        let recorded = null;
        for (let at = 8; at + 8 <= bytes.length;) {
            const length = view.getUint32(at);
            const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
            if (type === 'IEND') break;
            if (type === 'tEXt') {
                const text = new TextDecoder('latin1').decode(
                    bytes.subarray(at + 8, at + 8 + length));
                const [name, value] = text.split('\\0');
                if (name === key) recorded = parseFloat(value);
            }
            at += 12 + length;
        }
        const name = (img.closest('figure') || {}).id || img.currentSrc.split('/').pop();
        const shown = img.getBoundingClientRect().width;
        if (recorded === null) {
            found.push(`${name}: its PNG records no smallest text`);
        } else if (recorded * shown / img.naturalWidth < threshold) {
            const px = (recorded * shown / img.naturalWidth).toFixed(1);
            found.push(`${name}: ${px} px (${recorded} px shown at ${Math.round(shown)} of `
                + `${img.naturalWidth} px)`);
        }
    }
    return found;
}"""


def small_figure_text(page, width: int) -> list[str]:
    """The figures on ``page`` (``width`` px wide) whose smallest text is under
    ``SMALLEST_TEXT_PX[width]`` CSS px as shown, or that do not record their smallest text."""
    from bncourse.plots import SMALLEST_FONT_KEY

    return page.evaluate(SMALL_FIGURE_TEXT, [SMALLEST_FONT_KEY, SMALLEST_TEXT_PX[width]])


# axe-core's violations that come from the theme (sphinx-book-theme / pydata-sphinx-theme) and
# cannot be fixed from the book: {rule id: why}. Empty since the book's own were fixed
# (book/static/course.css: link contrast in admonitions; book/_ext: the bibliography's roles).
AXE_EXCEPTIONS: dict[str, str] = {}
AXE_IMPACTS = ("serious", "critical")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The browser leaves a page before every file of it arrived (the next/previous
        # walk does so on purpose): the server's write then fails. That is no test failure.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def site(built_book):
    """Base URL of the built book, served from 127.0.0.1 for the duration of the module."""
    assert built_book.returncode == 0, "the book did not build:\n" + built_book.log[-3000:]
    handler = functools.partial(_QuietHandler, directory=str(built_book.html))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    path = find_browser()
    if path is None and os.environ.get("CI"):
        pytest.fail(
            "CI must run the browser tests, and no Chromium-based browser is on the PATH "
            "(course.py installs Debian's 'chromium' when run as root)",
            pytrace=False,
        )
    if path is None:
        pytest.skip(
            "no Chromium-based browser on the PATH (install Debian's 'chromium'; "
            "`python3 course.py test` does so when run as root)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """A page opened in a fresh browser context, with everything that went wrong recorded:
    console errors, uncaught exceptions, failed requests and HTTP errors for local URLs."""

    def __init__(self, browser, base: str, viewport=DESKTOP):
        self.base = base
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)

    def _console(self, message) -> None:
        if message.type == "error":
            where = message.location.get("url") or self.page.url
            self.problems.append(f"console: {message.text} (at {where})")

    def _local(self, url: str) -> bool:
        return url.startswith(self.base)

    def _failed(self, request) -> None:
        if self._local(request.url):
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response) -> None:
        if self._local(response.url) and response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def open(self, path: str) -> None:
        self.page.goto(self.base + path, wait_until="networkidle")

    def wait_for_math(self) -> None:
        """Wait until MathJax has typeset the page (if the page loads MathJax)."""
        # (the page's configuration defines window.MathJax before the deferred MathJax script
        # has loaded and added ``startup``: on a loaded machine that is a while, so wait for it)
        if self.page.evaluate("() => typeof window.MathJax === 'object'"):
            self.page.wait_for_function("() => !!window.MathJax.startup", timeout=60_000)
            self.page.evaluate("() => window.MathJax.startup.promise")

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def visit(browser, site):
    visits = []

    def open_visit(path: str, viewport=DESKTOP) -> Visit:
        v = Visit(browser, site, viewport)
        visits.append(v)
        v.open(path)
        return v

    yield open_visit
    for v in visits:
        v.close()


# --------------------------------------------------------------------------------------------
# Every page
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PAGES)
def test_page_loads_renders_math_and_every_figure_and_passes_axe(visit, built_book, path):
    """Each page once (axe-core is the slow part: the checks share the visit), with a chapter's
    downloads and, for the pages a person looks at after a layout change, a screenshot."""
    v = visit(path)
    v.wait_for_math()
    page = v.page
    if path in SCREENSHOT_PAGES:
        screenshot(v, path, "desktop")
    if path in NOTEBOOK_PAGES:
        check_the_ipynb_downloads(v, path)
    assert page.title().strip(), "every page has a title"
    prose = page.evaluate(PROSE)
    assert "$$" not in prose, "display math left raw"
    source = (built_book.html / path).read_text()
    if 'class="math' in source:
        assert page.locator("main mjx-container").count() > 0, "math not rendered by MathJax"
        for tex in ("\\frac", "\\sqrt", "\\hat", "\\sum"):
            assert tex not in prose, f"TeX left raw: {tex}"
        cut = page.evaluate(WIDE_MATH)
        assert not cut, f"display math wider than the text column at {DESKTOP['width']}px: {cut}"
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= DESKTOP["width"] + 1, f"the page scrolls sideways: {width}px"
    wide = page.evaluate(WIDE_CELLS)
    assert not wide, (
        f"{len(wide)} code cells or outputs scroll sideways at {DESKTOP['width']}px "
        f"(code is written to 79 characters a line, printed results to 83): {wide}"
    )
    images = page.evaluate(
        """() => Array.from(document.querySelectorAll('main img')).map(
               img => ({src: img.currentSrc, ok: img.complete && img.naturalWidth > 0}))"""
    )
    broken = [image["src"] for image in images if not image["ok"]]
    assert not broken, f"images that did not load: {broken}"
    if path in NOTEBOOK_PAGES:
        assert images, "every chapter has figures"
    small = small_figure_text(page, DESKTOP["width"])
    assert not small, f"figure text under 12 px at {DESKTOP['width']} px: {small}"
    assert not v.problems, "\n".join(v.problems)
    # pydata-sphinx-theme makes scrollable code blocks focusable from a script at load time
    v.page.wait_for_load_state("load")
    violations = axe_violations(v.page)
    assert not violations, "axe-core:\n" + "\n".join(violations)


def test_the_site_root_has_a_favicon(visit):
    """Browsers ask for /favicon.ico on a page without an icon link, such as the root
    index.html (a redirect to the first page); Playwright does not report that request, only
    the console's 404, so it is checked here directly."""
    v = visit("index.html")
    response = v.page.request.get(v.base + "favicon.ico")
    assert response.ok and response.body()[:4] == b"\x00\x00\x01\x00", "not an .ico file"


def test_small_figure_text_is_caught(visit):
    """The check can fail: a figure with 10 pt text (13.9 px of its PNG) 14 inches wide (1147
    px once cropped), so shown at 672 px with its text at 8.1 px, and one whose PNG does not
    record its smallest text."""
    import matplotlib

    matplotlib.use("Agg")
    import base64

    import matplotlib.pyplot as plt

    from bncourse.plots import figure_png

    fig, ax = plt.subplots(figsize=(14, 3), dpi=100)
    ax.set_title("a planted figure, too wide for its text", fontsize=10)
    wide = base64.b64decode(figure_png(fig))
    plain = io.BytesIO()
    fig.savefig(plain, format="png")
    plt.close(fig)
    v = visit(NOTEBOOK_PAGES[0])

    def serve(body: bytes):
        return lambda route: route.fulfill(body=body, content_type="image/png")

    v.page.route("**/planted-wide.png", serve(wide))
    v.page.route("**/planted-plain.png", serve(plain.getvalue()))
    v.page.evaluate(
        """() => Promise.all(['planted-wide', 'planted-plain'].map(name => {
            const figure = document.createElement('figure');
            figure.id = name;
            const img = document.createElement('img');
            img.alt = 'a planted figure';
            figure.append(img);
            document.querySelector('main figure').after(figure);  // where figures go
            return new Promise(done => {
                img.onload = img.onerror = done;
                img.src = name + '.png';
            });
        }))"""
    )
    found = sorted(small_figure_text(v.page, DESKTOP["width"]))
    assert len(found) == 2, found
    assert found[0] == "planted-plain: its PNG records no smallest text", found
    assert found[1].startswith("planted-wide: 8.1 px (13.89 px shown at 672 of "), found


def test_a_click_on_a_figure_opens_the_full_size_image(visit):
    v = visit("notebooks/03_backward_by_hand.html")
    figure = v.page.locator("main figure img").first
    src = figure.evaluate("img => img.currentSrc")
    with v.page.expect_navigation(wait_until="load") as navigation:
        figure.click()
    assert navigation.value.ok and v.page.url == src and src.endswith(".png"), (v.page.url, src)


def test_one_search_field_on_a_desktop_page(visit):
    v = visit(NOTEBOOK_PAGES[0])
    fields = v.page.locator("button.search-button-field")
    visible = [i for i in range(fields.count()) if fields.nth(i).is_visible()]
    assert len(visible) == 1, f"{len(visible)} search fields visible"


def test_mathjax_is_served_by_the_site_itself(visit):
    """The site works offline: MathJax comes with it, not from a CDN."""
    v = visit(NOTEBOOK_PAGES[0])
    sources = v.page.evaluate("() => Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    mathjax = [src for src in sources if "mathjax" in src.lower()]
    assert mathjax and all(src.startswith(v.base) for src in mathjax), mathjax


# --------------------------------------------------------------------------------------------
# Reading a chapter
# --------------------------------------------------------------------------------------------
def test_solution_dropdown_opens_on_click(visit):
    v = visit("notebooks/02_numpy_forward.html")
    solution = v.page.locator("div.solution.dropdown").first
    content = solution.locator("section").first
    assert not content.is_visible(), "a solution starts folded"
    solution.locator(".admonition-title").first.click()
    content.wait_for(state="visible", timeout=5000)
    assert "predicted_m = " in content.inner_text()  # (chapter 2's first solution)


def test_search_finds_running_var(visit):
    v = visit("search.html?q=running_var")
    results = v.page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=20000)
    links = [
        urlparse(href).path
        for href in results.locator("a").evaluate_all("as => as.map(a => a.href)")
    ]
    assert any(link.endswith("notebooks/04_running_stats.html") for link in links), links
    assert not v.problems, "\n".join(v.problems)


def check_the_ipynb_downloads(v, path: str) -> None:
    """A chapter page's download menu: its first notebook is the learner's (no solution in
    it), then the worked chapter."""
    base = v.page.url.rsplit("/", 1)[0] + "/"
    exercise = v.page.locator("a.btn-download-exercises-button")
    assert exercise.count() == 1
    href = exercise.get_attribute("href")
    assert href.endswith("exercises/" + Path(path).stem + ".ipynb"), href
    response = v.page.request.get(base + href)
    assert response.ok and response.json()["nbformat"] == 4
    assert "BEGIN SOLUTION" not in response.text() and "```{" not in response.text()
    link = v.page.locator("a.btn-download-source-button")
    assert link.count() == 1
    href = link.get_attribute("href")
    assert href.endswith(Path(path).stem + ".ipynb"), href
    response = v.page.request.get(base + href)
    assert response.ok and response.json()["nbformat"] == 4
    items = v.page.locator(".dropdown-download-buttons .dropdown-item").all_text_contents()
    assert [i.strip() for i in items][:2] == [".ipynb (exercises)", ".ipynb (worked chapter)"]


def test_launch_buttons_open_the_exercises_first(visit):
    """Colab and Binder open the learner notebook (exercises/) by default, and the worked
    chapter (notebooks/) as the second, named entry."""
    v = visit("notebooks/02_numpy_forward.html")
    links = v.page.locator(".dropdown-launch-buttons a").evaluate_all(
        "as => as.map(a => [a.href, a.textContent.trim()])"
    )
    for host in ("colab.research.google.com", "mybinder.org"):
        mine = [(href, text) for href, text in links if host in href]
        assert len(mine) == 2, links
        (first, first_text), (second, second_text) = mine
        assert "exercises/02_numpy_forward.ipynb" in first and "exercises" in first_text, mine
        assert "notebooks/02_numpy_forward.ipynb" in second, mine
        assert "worked chapter" in second_text, mine


def test_next_and_previous_walk_the_whole_book(visit):
    v = visit("index.html")
    v.page.wait_for_url("**/" + PAGES[0])
    v.page.wait_for_load_state("networkidle")

    def follow(selector: str) -> str:
        # Wait for the navigation the click starts, or the old page's URL would be read; its
        # load event is enough (each page's requests are checked to the end in
        # test_page_loads_renders_math_and_every_figure_and_passes_axe).
        with v.page.expect_navigation(wait_until="load"):
            v.page.locator(selector).first.click()
        return v.page.url.split(v.base, 1)[1].split("#")[0]

    forward = [PAGES[0]]
    while v.page.locator("a.right-next").count() and len(forward) <= len(PAGES):
        forward.append(follow("a.right-next"))
    assert forward == PAGES
    backward = [forward[-1]]
    while v.page.locator("a.left-prev").count() and len(backward) <= len(PAGES):
        backward.append(follow("a.left-prev"))
    assert backward == PAGES[::-1]
    # (a request the next click cut short is aborted by the walk, not failed by the site)
    problems = [p for p in v.problems if "net::ERR_ABORTED" not in p]
    assert not problems, "\n".join(problems)


# Pages a person looks at in reports/screenshots/ after a change to the layout: the
# introduction, a short chapter, and the chapters with the widest tables.
SCREENSHOT_CHAPTERS = (
    "02_numpy_forward",
    "05_pytorch_module",
    "07_bn_in_training",
    "08_gpu_triton",
)
SCREENSHOT_PAGES = [PAGES[0], *(f"notebooks/{name}.html" for name in SCREENSHOT_CHAPTERS)]


@pytest.mark.parametrize("path", PAGES)
def test_no_page_is_wider_than_a_phone(visit, path):
    """At 390 px the page as a whole never scrolls sideways (a long inline code span in the
    prose did). Code cells and wide tables scroll inside their own box there: code is
    written for the 80 columns of a desktop, and the tables put their key column first."""
    v = visit(path, PHONE)
    v.wait_for_math()
    width = v.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page scrolls sideways: {width}px > 390px"
    small = small_figure_text(v.page, PHONE["width"])
    assert not small, f"figure text under 8 px at {PHONE['width']} px: {small}"
    if path in SCREENSHOT_PAGES:
        screenshot(v, path, "phone")


def screenshot(v, path: str, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{Path(path).stem}-{name}.png"
    v.page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# Accessibility, keyboard and print
# --------------------------------------------------------------------------------------------
def axe_violations(page) -> list[str]:
    """axe-core's serious and critical violations on ``page``, one line per rule."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements, e.g. "
        f"{v['nodes'][0]['target']}): {v['help']}"
        for v in results.response["violations"]
        if v["impact"] in AXE_IMPACTS and v["id"] not in AXE_EXCEPTIONS
    ]


def test_axe_reports_a_real_violation(visit):
    """The check can fail: a page given an image without alt text and a link without a name."""
    v = visit(PAGES[0])
    v.page.evaluate(
        """() => {
        const img = document.createElement('img');
        img.src = document.querySelector('link[rel=icon]').href;
        const link = document.createElement('a');
        link.href = '#nowhere';
        document.querySelector('main').append(img, link);
    }"""
    )
    found = " ".join(axe_violations(v.page))
    assert "image-alt" in found and "link-name" in found, found


def _tab_to(page, predicate: str, limit: int = 400) -> bool:
    """Press Tab until the focused element satisfies the JavaScript ``predicate`` (given the
    element), at most ``limit`` times."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(
            f"() => {{ const e = document.activeElement; return !!e && ({predicate}); }}"
        ):
            return True
    return False


def test_keyboard_reaches_the_search_field(visit):
    v = visit(NOTEBOOK_PAGES[1])
    assert _tab_to(v.page, "e.matches('button.search-button-field')"), "Tab never reaches it"
    v.page.keyboard.press("Enter")
    v.page.locator("input[name=q]:visible").first.wait_for(timeout=5000)
    assert v.page.evaluate("() => document.activeElement.name") == "q", "Enter opens the search"


@pytest.mark.parametrize("key", ["Enter", " "])
def test_keyboard_opens_a_solution(visit, key):
    v = visit("notebooks/02_numpy_forward.html")
    solution = v.page.locator("div.solution.dropdown").first
    content = solution.locator("section").first
    assert not content.is_visible()
    # (sphinx-togglebutton's button; the title's link to the exercise comes before it)
    reached = _tab_to(v.page, "e.matches('div.solution.dropdown button.toggle-button')")
    assert reached, "Tab never reaches a solution's toggle"
    v.page.keyboard.press(key)
    content.wait_for(state="visible", timeout=5000)
    assert v.page.evaluate("() => document.activeElement.getAttribute('aria-expanded')") == "true"
    assert "predicted_m = " in content.inner_text()  # (chapter 2's first solution)


def test_a_chapter_prints_without_the_sidebars(visit):
    v = visit("notebooks/02_numpy_forward.html")
    sidebars = "#pst-primary-sidebar, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article"
    displayed = "els => els.filter(e => getComputedStyle(e).display !== 'none').length"
    assert v.page.locator(sidebars).evaluate_all(displayed) > 0, "the screen shows them"
    v.page.emulate_media(media="print")
    assert v.page.locator(sidebars).evaluate_all(displayed) == 0, "printed sidebars"
    assert v.page.locator("main h1").first.is_visible(), "the chapter itself prints"


def test_the_site_links_to_the_pdf(visit, built_book):
    """Where the PDF was built before the site (the publish workflow), Setting up links to it;
    elsewhere it says how to make one instead of linking to a missing file."""
    v = visit("book/setup.html")
    link = v.page.get_by_role("link", name="Download the book as PDF")
    if (built_book.html / "book.pdf").exists():
        assert link.count() == 1
        response = v.page.request.get(link.evaluate("a => a.href"))
        assert response.ok and response.body()[:5] == b"%PDF-"
    else:
        assert link.count() == 0, "a link to a PDF this build does not have"
        assert "python3 course.py pdf" in v.page.locator("main").inner_text()
