"""Label Studio 1.23's labeling page, driven the way an annotator drives it.

A small page object over Playwright (sync API) and Debian's ``chromium``: the browser tests and
``benchmarks/ui_latency.py`` share it. Every step is a mouse click or hotkey an annotator would
use; the page's own store (``window.Htx``, Label Studio's editor) is only *read*, to know where the
image is drawn and when an answer has been rendered.

What the steps are, and why (measured on Label Studio 1.23.2):

- Smart tools exist only with **Auto-Annotation** on (toggle in the bottom bar). The
  **Auto-Detect** tool (magic wand, hotkey M) then cycles through the smart tools: its first pick
  is a smart brush, the next the smart keypoint (or smart rectangle) tool.
- A keypoint is placed only while its label is selected, and Label Studio unselects the label
  after every point: the label is picked again before every click.
- After a task opens, the image may be drawn slightly zoomed (the panels settle after the first
  layout); *Zoom to fit* (Shift+1) shows all of it, and clicks are mapped through the image's
  displayed rectangle, so the image pixel (x, y) is clicked whatever the zoom.
- Each smart click sends ``POST /api/ml/<id>/interactive-annotating`` with all points of that
  label; the answer becomes a suggestion ("1 suggestions  x  v" in the bottom bar) unless
  **Auto-Accept Suggestions** is on, in which case it is accepted at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}
PARK = (700, 20)  # the pointer rests here between actions: the breadcrumb bar, no tooltips

# Where Label Studio shows errors: its toasts (error kinds), and its error modal.
ERROR_SELECTORS = ("[class*=messageToast_error]", "[class*=messageToast_alertError]", "[class*=error-message]")


def find_chromium() -> str | None:
    """``$DEXTR_CHROMIUM`` when set (and only it), else Debian's ``/usr/bin/chromium``, else
    ``chromium`` on PATH."""
    wanted = os.environ.get("DEXTR_CHROMIUM")
    candidates = [wanted] if wanted else ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_unavailable() -> str | None:
    """Why a browser cannot be driven here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]', or pip install playwright)"
    if find_chromium() is None:
        where = os.environ.get("DEXTR_CHROMIUM") or "/usr/bin/chromium"
        return f"no chromium executable at {where} (apt-get install -y chromium, or set DEXTR_CHROMIUM)"
    return None


def launch(playwright, executable: str | None = None):
    """A headless Chromium from the system; Playwright gives it a fresh profile of its own."""
    return playwright.chromium.launch(executable_path=executable or find_chromium(), headless=True, args=CHROMIUM_ARGS)


# --------------------------------------------------------------------------- Label Studio via its API
def create_project(ls, title: str, config: str, images: list[tuple[str, object]]) -> tuple[int, list[dict]]:
    """A project with one task per ``(file name, BGR image)``; returns its id and tasks (by id)."""
    import cv2

    pid = ls.api("POST", "/api/projects", {"title": title, "label_config": config})["id"]
    for name, image in images:
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        ls.api("POST", f"/api/projects/{pid}/import", files={"file": (name, jpg.tobytes())})
    return pid, project_tasks(ls, pid)


def project_tasks(ls, pid: int) -> list[dict]:
    return sorted(ls.api("GET", f"/api/tasks?project={pid}&fields=all&page_size=100")["tasks"], key=lambda t: t["id"])


def connect_backend(ls, pid: int, url: str, title: str = "dextr") -> dict:
    """*Settings → Model → Connect Model* with *Interactive preannotations* on."""
    return ls.api("POST", "/api/ml", {"project": pid, "url": url, "is_interactive": True, "title": title})


def backend_env(label_studio, root: Path, **extra) -> dict:
    """The backend's environment: images from this Label Studio with its token, a private weights
    store (the shipped default version), CPU."""
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "DEXTR_WEIGHTS_DIR": str(root / "store"),
        "DEXTR_DATA_DIR": str(root / "data"),
        "DEXTR_DEVICE": "cpu",
        "LOG_LEVEL": "INFO",
        "REDIS_URL": "",
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- the page
@dataclass
class Interaction:
    """One ``interactive-annotating`` round trip as the page saw it."""

    points: list[tuple[float, float]]  # percent, in the order sent
    kinds: list[str]  # context item types
    status: int
    body: object  # Label Studio's JSON answer to the page
    seconds: float  # request sent -> response finished (Playwright timing)
    positive: list[bool] = field(default_factory=list)  # per point: False for an Alt-click (negative)

    @property
    def result(self):
        data = self.body.get("data") if isinstance(self.body, dict) else None
        return data.get("result") if isinstance(data, dict) else None

    @property
    def errors(self):
        return self.body.get("errors") if isinstance(self.body, dict) else None


@dataclass
class Annotator:
    """One annotator in a fresh browser context (so Label Studio's remembered toggles start off)."""

    browser: object
    ls: object
    shots: Path
    page: object = None
    interactions: list[Interaction] = field(default_factory=list)
    api_errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    lost_clicks: int = 0
    lost_click_notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.shots = Path(self.shots)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("response", self._on_response)
        self.page.on("console", lambda m: self.console_errors.append(m.text[:300]) if m.type == "error" else None)

    def close(self):
        try:
            self.context.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass

    # ------------------------------------------------------------------ bookkeeping
    def _on_response(self, response):
        url = response.url
        if "/api/" in url and response.status >= 400:
            self.api_errors.append(f"{response.status} {response.request.method} {url}")
        if "interactive-annotating" not in url:
            return
        try:
            sent = response.request.post_data_json or {}
        except Exception:  # noqa: BLE001
            sent = {}
        items = (sent.get("context") or {}).get("result") or []
        try:
            body = response.json()
        except Exception:  # noqa: BLE001
            body = None
        timing = response.request.timing
        seconds = (timing["responseEnd"] - timing["requestStart"]) / 1000 if timing.get("responseEnd", -1) > 0 else -1
        self.interactions.append(
            Interaction(
                points=[(i["value"].get("x"), i["value"].get("y")) for i in items if isinstance(i.get("value"), dict)],
                kinds=[i.get("type") for i in items],
                status=response.status,
                body=body,
                seconds=seconds,
                positive=[i.get("is_positive", True) is not False for i in items if isinstance(i.get("value"), dict)],
            )
        )

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{len(self.screenshots):02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.screenshots.append(path)
        return path

    def store(self, expression: str):
        """Evaluate ``expression`` against Label Studio's editor store (``s``) and its selected
        annotation (``a``); read-only use."""
        return self.page.evaluate(
            f"() => {{ const s = window.Htx; const a = s && s.annotationStore.selected; return ({expression}); }}"
        )

    # ------------------------------------------------------------------ navigation
    def login(self, user: str, password: str):
        page = self.page
        page.goto(self.ls.url + "/user/login")
        page.fill("input[name=email]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)

    def open_task(self, pid: int, task_id: int):
        """The task in the Data Manager's labeling view, image loaded and zoomed to fit."""
        page = self.page
        page.goto(f"{self.ls.url}/projects/{pid}/data?task={task_id}", wait_until="domcontentloaded")
        page.wait_for_selector("[data-testid=bottombar-submit-button]", timeout=60_000)
        try:
            page.wait_for_function(
                f"""() => {{ const s = window.Htx; const a = s && s.annotationStore.selected;
                      const img = document.querySelector('img[alt=image]');
                      return a && s.task && s.task.id === {int(task_id)} && img && img.complete && img.naturalWidth > 0
                             && document.querySelector('.konvajs-content'); }}""",
                timeout=60_000,
            )
        except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError
            raise AssertionError(f"task {task_id} did not open with its image within 60 s") from exc
        self.settle()
        self.zoom_to_fit()

    def settle(self, ms: int = 600):
        """Let the layout finish (side panels, canvas size) before acting."""
        self.page.wait_for_timeout(ms)

    def zoom_to_fit(self):
        """*Zoom to fit* (Shift+1), until the image is shown whole at scale 1."""
        for _ in range(5):
            self.focus_canvas_area()
            self.page.keyboard.press("Shift+1")
            try:
                self.page.wait_for_function(
                    "() => { const i = window.Htx.annotationStore.selected.objects.find(o => o.type === 'image');"
                    " return i && Math.abs(i.zoomScale - 1) < 1e-6 && i.zoomingPositionX === 0"
                    " && i.zoomingPositionY === 0; }",
                    timeout=2_000,
                )
                return
            except Exception:  # noqa: BLE001 - Playwright's TimeoutError: press again
                pass
        state = self.store(
            "(() => { const i = a.objects.find(o => o.type === 'image');"
            " return [i.zoomScale, i.zoomingPositionX, i.zoomingPositionY]; })()"
        )
        raise AssertionError(f"Zoom to fit (Shift+1) left the image zoomed (scale, x, y) = {state}")

    def focus_canvas_area(self):
        """Hotkeys go to the page only when no checkbox or input has the focus."""
        self.page.evaluate(
            "() => document.activeElement && document.activeElement.blur && document.activeElement.blur()"
        )

    # ------------------------------------------------------------------ bottom bar toggles
    def _toggle(self, testid: str, on: bool):
        """Bottom-bar toggles are checkboxes carrying the data-testid."""
        box = self.page.locator(f"input[data-testid={testid}]")
        box.wait_for(state="attached")
        if box.is_checked() != on:
            box.click()
            self.page.wait_for_function(
                f"() => document.querySelector('input[data-testid={testid}]').checked === {str(on).lower()}"
            )
        self.focus_canvas_area()

    def set_auto_annotation(self, on: bool = True):
        self._toggle("bottombar-auto-annotation-toggle", on)

    def set_auto_accept(self, on: bool = True):
        """Shown next to Auto-Annotation while no suggestion is pending."""
        self._toggle("bottombar-auto-accept-toggle", on)

    # ------------------------------------------------------------------ tools and labels
    def selected_tool(self) -> str | None:
        """The image's selected tool as Label Studio names it (``KeyPointTool-dynamic`` is the smart one)."""
        return self.store(
            "(() => { const t = a.objects.find(o => o.type === 'image').getToolsManager()"
            ".findSelectedTool(); return t ? t.fullName : null; })()"
        )

    def pick_smart_tool(self, tool: str = "KeyPointTool"):
        """Click Auto-Detect (the magic wand; hotkey M) until its smart ``tool`` is the selected one
        (``KeyPointTool``, ``RectangleTool``, ``BrushTool``): each click moves to the next smart tool."""
        page = self.page
        auto_detect = page.locator("button.lsf-tool_smart:not([aria-label])")
        auto_detect.wait_for(state="visible")
        wanted = f"{tool}-dynamic"
        seen = []
        for _ in range(6):
            current = self.selected_tool()
            if current == wanted:
                self.settle(300)  # the tool change unselects labels a moment later
                return
            seen.append(current)
            auto_detect.click()
            page.wait_for_timeout(150)
        raise AssertionError(f"Auto-Detect never selected {wanted}; it went through {seen}")

    def pick_tool(self, tool: str):
        """A plain (not smart) tool of the toolbar, e.g. ``key-point-tool``."""
        self.page.locator(f"button.lsf-tool:not(.lsf-tool_smart)[aria-label={tool}]").click()

    def label(self, hotkey: str):
        return self.page.locator(
            ".lsf-labels .lsf-label",
            has=self.page.locator(".lsf-label__hotkey", has_text=re.compile(f"^{re.escape(hotkey)}$")),
        )

    def select_label(self, hotkey: str):
        """Pick the label whose hotkey is ``hotkey`` (Label Studio unselects it after each point):
        its hotkey, as annotators do (it works wherever the page is scrolled), else a click on it."""
        label = self.label(hotkey)
        if self._selected(label):
            return
        self.focus_canvas_area()
        self.page.keyboard.press(hotkey)
        if not self._selected(label, wait=True):
            label.click()
            assert self._selected(label, wait=True), f"label {hotkey} cannot be selected"

    def _selected(self, label, wait: bool = False) -> bool:
        if not wait:
            return "lsf-label_selected" in (label.get_attribute("class") or "")
        try:
            self.page.wait_for_function(
                "(e) => e.classList.contains('lsf-label_selected')", arg=label.element_handle(), timeout=2_000
            )
            return True
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError
            return False

    # ------------------------------------------------------------------ the image
    def image_rect(self) -> tuple[float, float, float, float]:
        """Where the image is drawn on screen (x, y, width, height), zoom included."""
        return self._read(
            "img[alt=image]", "e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"
        )

    def natural_size(self) -> tuple[int, int]:
        return tuple(self._read("img[alt=image]", "e => [e.naturalWidth, e.naturalHeight]"))

    def _read(self, selector: str, script: str):
        """``script`` on ``selector``, riding out a re-render of the editor (it happens once a
        task's data has settled, e.g. when a prediction tab is added)."""
        for attempt in range(5):
            try:
                self.page.wait_for_selector(selector, state="attached", timeout=10_000)
                return self.page.eval_on_selector(selector, script)
            except Exception:  # noqa: BLE001 - element replaced between the two calls
                if attempt == 4:
                    raise
                self.page.wait_for_timeout(300)

    def screen_point(self, x: float, y: float) -> tuple[float, float]:
        """Screen position of image pixel (x, y) (pixel units of the original image).

        The pointer is parked first (a tool's tooltip or flyout shown on hover would cover the
        image); if the image got zoomed by a late layout change it is zoomed to fit again; a spot
        below the fold (tall images do not fit the pane) is scrolled into view."""
        self.page.mouse.move(*PARK)
        covered = None
        for _ in range(12):
            rx, ry, rw, rh = self.image_rect()
            w, h = self.natural_size()
            sx = min(rx + x * rw / w, rx + rw - 0.5)  # LS reads a click at sx as pixel x exactly
            sy = min(ry + y * rh / h, ry + rh - 0.5)
            covered = self.page.evaluate(_AT_POINT, [sx, sy])
            if covered is None:
                return sx, sy
            if not self._zoomed_to_fit():
                self.zoom_to_fit()
            elif not self.page.evaluate(_SCROLL_TO, sy):
                self.page.wait_for_timeout(250)  # something transient on top (layout settling)
        raise AssertionError(
            f"image pixel ({x:g}, {y:g}) is not clickable: at ({sx:.0f}, {sy:.0f}) the page shows {covered}"
        )

    def _zoomed_to_fit(self) -> bool:
        return bool(
            self.store(
                "(() => { const i = a.objects.find(o => o.type === 'image'); return i && "
                "Math.abs(i.zoomScale - 1) < 1e-6 && i.zoomingPositionX === 0 && i.zoomingPositionY === 0; })()"
            )
        )

    def click_image(self, x: float, y: float, *, label: str | None = None, alt: bool = False):
        """Select ``label`` (if given), then click image pixel (x, y); ``alt`` holds the Alt key, which
        makes a smart keypoint negative."""
        if label is not None:
            self.select_label(label)
        point = self.screen_point(x, y)
        if label is not None and not self._selected(self.label(label)):
            self.select_label(label)  # a tool change settling late unselects labels
        if not alt:
            self.page.mouse.click(*point)
            return
        self.page.keyboard.down("Alt")
        try:
            self.page.mouse.click(*point)
        finally:
            self.page.keyboard.up("Alt")

    def place_point(self, x: float, y: float, label: str):
        """A plain (not smart) keypoint at image pixel (x, y); a click that places nothing is made
        again (see :meth:`smart_click`)."""
        for _ in range(3):
            points = self._count_regions()
            self.click_image(x, y, label=label)
            if self._poll(lambda points=points: self._count_regions() > points, 3.0):
                return
            self.lost_clicks += 1
            self.lost_click_notes.append(self._why_no_point(label))
        raise AssertionError(
            f"three clicks at image pixel ({x:g}, {y:g}) placed no point "
            f"(selected tool {self.selected_tool()}, regions {self.regions()})"
        )

    def smart_click(self, x: float, y: float, label: str, timeout: float = 60.0, alt: bool = False) -> Interaction:
        """Click a smart keypoint and wait for Label Studio's answer to be applied on the page.

        A click that neither places a point nor sends a request (it happens now and then while the
        editor re-renders right after a task opened) is made again, as an annotator would; such
        retries are counted in ``lost_clicks``."""
        sent = len(self.interactions)
        for _ in range(3):
            points = self._count_regions()
            self.click_image(x, y, label=label, alt=alt)
            if self._poll(lambda points=points: len(self.interactions) > sent or self._count_regions() > points, 3.0):
                break
            self.lost_clicks += 1
            self.lost_click_notes.append(self._why_no_point(label))
        else:
            raise AssertionError(
                f"three clicks at image pixel ({x:g}, {y:g}) placed no point and sent nothing "
                f"(selected tool {self.selected_tool()}, regions {self.regions()})"
            )
        if not self._poll(lambda: len(self.interactions) > sent, timeout):
            raise AssertionError(f"no answer to the click at ({x:g}, {y:g}) within {timeout:g} s")
        self.wait_idle()
        return self.interactions[-1]

    def _why_no_point(self, label: str) -> str:
        try:
            state = self.store(
                "(() => { const i = a.objects.find(o => o.type === 'image');"
                " const t = i.getToolsManager().findSelectedTool();"
                " return {tool: t && t.fullName, drawing: a.isDrawing, readOnly: a.isReadOnly(),"
                " toolDrawing: t && t.isDrawing, regions: a.regions.length,"
                " selectedControls: Array.from(a.names.values()).filter(n => n.isSelected).map(n => n.name)};"
                " })()"
            )
        except Exception as exc:  # noqa: BLE001
            state = f"(state unreadable: {exc})"
        return f"label {label} {'selected' if self._selected(self.label(label)) else 'not selected'}; {state}"

    def _count_regions(self) -> int:
        return int(self.store("a ? a.regions.length : 0") or 0)

    def _poll(self, condition, seconds: float) -> bool:
        """Wait for ``condition()`` while the page's events keep arriving."""
        deadline = time.monotonic() + seconds
        while True:
            if condition():
                return True
            if time.monotonic() > deadline:
                return False
            self.page.wait_for_timeout(40)

    def drag_box(
        self, x0: float, y0: float, x1: float, y1: float, *, label: str | None = None, timeout: float = 60.0
    ) -> Interaction:
        """Draw a (smart) rectangle from image pixel (x0, y0) to (x1, y1) and wait for the answer."""
        if label is not None:
            self.select_label(label)
        mouse = self.page.mouse
        with self.page.expect_response(lambda r: "interactive-annotating" in r.url, timeout=timeout * 1000):
            mouse.move(*self.screen_point(x0, y0))
            mouse.down()
            steps = 8
            for i in range(1, steps + 1):
                mouse.move(*self.screen_point(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps))
            mouse.up()
        self.wait_idle()
        return self.interactions[-1]

    def wait_idle(self, timeout: float = 30.0):
        """No suggestion request pending, and the page has painted since."""
        try:
            self.page.wait_for_function("() => window.Htx && !window.Htx.awaitingSuggestions", timeout=timeout * 1000)
        except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError
            raise AssertionError(f"the page still awaits suggestions {timeout:g} s after the answer") from exc
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    # ------------------------------------------------------------------ suggestions, regions, submit
    def suggestions_shown(self) -> int:
        """The number the bottom bar shows ("N suggestions"), 0 when the bar shows none."""
        info = self.page.locator(".lsf-auto-accept__info")
        if not info.count():
            return 0
        m = re.match(r"\s*(\d+)", info.inner_text())
        return int(m.group(1)) if m else 0

    def accept_suggestions(self):
        button = self.page.locator("[data-testid=bottombar-accept-suggestions-button]")
        button.click()
        button.wait_for(state="detached", timeout=10_000)

    def region_list(self) -> list[str]:
        """The region list's entries as shown (index, label, score)."""
        items = self.page.locator(".lsf-outliner-item")
        return [" ".join(t.split()) for t in items.all_inner_texts()]

    def regions(self) -> list[dict]:
        """What the region list is drawn from: each region's type and label names."""
        return self.store(
            "a.regions.map(r => ({type: r.type, labels: r.labeling ? r.labeling.selectedLabels.map(l => l.value) : [], "
            "dynamic: !!r.dynamic, id: r.cleanId || r.id}))"
        )

    def select_region_in_list(self, index: int = 0) -> bool:
        """Click a region list entry; True when the region became selected."""
        self.page.locator(".lsf-outliner-item").nth(index).click()
        self.page.wait_for_timeout(200)
        return bool(self.store("a.regions.some(r => r.selected) || !!a.highlightedNode"))

    def submit(self, timeout: float = 60.0) -> dict:
        """Submit; returns the annotation Label Studio saved (its JSON answer)."""
        with self.page.expect_response(
            lambda r: re.search(r"/api/tasks/\d+/annotations", r.url) and r.request.method == "POST",
            timeout=timeout * 1000,
        ) as info:
            self.page.click("[data-testid=bottombar-submit-button]")
        response = info.value
        assert response.status in (200, 201), f"submit answered {response.status}: {response.text()[:300]}"
        return response.json()

    def visible_errors(self) -> list[str]:
        """Error toasts or error dialogs on screen right now."""
        found = []
        for selector in ERROR_SELECTORS:
            loc = self.page.locator(selector)
            for i in range(loc.count()):
                el = loc.nth(i)
                if el.is_visible():
                    found.append(f"{selector}: {' '.join(el.inner_text().split())[:200]}")
        return found

    # ------------------------------------------------------------------ Data Manager
    def open_data_manager(self, pid: int):
        self.page.goto(f"{self.ls.url}/projects/{pid}/data", wait_until="domcontentloaded")
        self.page.wait_for_selector("[aria-label='Select all rows']", timeout=60_000)
        self.page.wait_for_selector("[data-testid=table-row]", timeout=60_000)

    def retrieve_predictions(self, timeout: float = 300.0) -> dict:
        """Select all tasks, *Actions → Retrieve Predictions → OK*; returns Label Studio's answer."""
        page = self.page
        page.click("[aria-label='Select all rows']")
        page.click("[aria-label='Tasks Actions']")
        page.get_by_text("Retrieve Predictions", exact=True).click()
        with page.expect_response(
            lambda r: (
                "/api/dm/actions" in r.url and "retrieve_tasks_predictions" in r.url and r.request.method == "POST"
            ),
            timeout=timeout * 1000,
        ) as info:
            page.click("[data-testid=dialog-ok-button]")
        response = info.value
        assert response.status == 200, f"Retrieve Predictions answered {response.status}: {response.text()[:300]}"
        return response.json()


_AT_POINT = """([x, y]) => { const c = document.querySelector('.konvajs-content');
  const e = document.elementFromPoint(x, y);
  if (c && e && c.contains(e)) return null;
  return e ? `${e.tagName.toLowerCase()}.${String(e.className).split(' ').join('.')} `
           + `"${(e.innerText || '').slice(0, 60)}"` : 'nothing'; }"""
_SCROLL_TO = """(y) => { let el = document.querySelector('.konvajs-content');
  while (el && !(el.scrollHeight > el.clientHeight + 1 && /(auto|scroll)/.test(getComputedStyle(el).overflowY))) {
    el = el.parentElement; }
  if (!el) return false;
  const r = el.getBoundingClientRect(); const before = el.scrollTop;
  el.scrollTop += y - (r.top + r.height / 2);
  return el.scrollTop !== before; }"""


# --------------------------------------------------------------------------- masks
def brush_mask(result: dict, height: int, width: int):
    """A brushlabels result's mask (bool HxW)."""
    from dextr_backend.labelstudio.regions import brush_to_mask

    return brush_to_mask(result["value"], height, width).astype(bool)


def polygon_mask(results: list[dict], height: int, width: int):
    """Polygons (percent points) filled into one mask; ``meta.hole`` polygons are cut out."""
    import cv2
    import numpy as np

    mask = np.zeros((height, width), np.uint8)
    holes = np.zeros_like(mask)
    for r in results:
        pts = np.array([[x * width / 100.0, y * height / 100.0] for x, y in r["value"]["points"]], np.float64)
        target = holes if (r.get("meta") or {}).get("hole") else mask
        cv2.fillPoly(target, [np.round(pts - 0.5).astype(np.int32)], 1)
    return (mask > 0) & ~(holes > 0)


def iou(a, b) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def dump(obj) -> str:
    return json.dumps(obj, default=str)[:2000]
