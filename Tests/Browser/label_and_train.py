#!/usr/bin/env python3
"""The Label & Train page in a real browser (Debian's chromium and
chromium-driver, driven by Selenium) against a running `loupe agent` with a
camera. BrowserTests.swift starts the agent and runs this; by hand:

    python3 Tests/Browser/label_and_train.py --url http://127.0.0.1:8080 \
        --password PASSWORD --artifacts /tmp/loupe-browser

After each step it checks through the agent's API (with its own bearer token)
that the store holds exactly what was done on the page: the recipe, the
captures, the mask's pixels (recomputed here from the strokes the page sent),
the include flags, the model version and the threshold. Screenshots before
and after labelling (and at other steps) go to --artifacts.
"""

import argparse
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


class AgentAPI:
    """The agent's HTTP API with a bearer token of its own."""

    def __init__(self, url, user, password):
        self.url = url.rstrip("/")
        self.token = None
        self.token = self.call("POST", "/api/v1/login", {"user": user, "password": password})["token"]

    def call(self, method, path, body=None, raw=False, content_type="application/json", headers=None):
        """One request: a JSON body, or bytes as they are with `content_type`."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise CheckFailed(f"{method} {path} answered {error.code}: {error.read().decode(errors='replace')}")
        return payload if raw else json.loads(payload)

    def get(self, path):
        return self.call("GET", path)

    def mask(self, capture, roi):
        png = self.call("GET", f"/api/v1/captures/{capture}/rois/{roi}/mask", raw=True)
        image = Image.open(io.BytesIO(png))
        check(image.mode == "L", f"the stored mask is {image.mode}, not 8-bit grey")
        return np.array(image)

    def label(self, capture, roi):
        labels = {l["roi"]: l for l in self.get(f"/api/v1/captures/{capture}")["labels"]}
        return labels.get(roi)


def paint(mask, stroke, value):
    """The agent's MaskPainter, in numpy: pixels whose centre lies within the
    radius of the stroke's path (a chain of capsules) take `value`."""
    points = [(float(x), float(y)) for x, y in stroke["points"]]
    segments = [(points[0], points[0])] if len(points) == 1 else list(zip(points, points[1:]))
    r = float(stroke["radius"])
    h, w = mask.shape
    for (ax, ay), (bx, by) in segments:
        x0 = max(0, int(np.floor(min(ax, bx) - r))); x1 = min(w - 1, int(np.ceil(max(ax, bx) + r)))
        y0 = max(0, int(np.floor(min(ay, by) - r))); y1 = min(h - 1, int(np.ceil(max(ay, by) + r)))
        if x0 > x1 or y0 > y1:
            continue
        px, py = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = ((px - ax) * dx + (py - ay) * dy) / length2 if length2 > 0 else np.zeros_like(px)
        t = np.clip(t, 0, 1)
        ex = px - (ax + t * dx); ey = py - (ay + t * dy)
        inside = ex * ex + ey * ey <= r * r
        region = mask[y0:y1 + 1, x0:x1 + 1]
        region[inside] = value


class Page:
    def __init__(self, driver, artifacts):
        self.d = driver
        self.artifacts = artifacts

    def wait(self, condition, message, timeout=30):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(lambda _: condition())
        except TimeoutException:
            self.shot("failure")
            raise CheckFailed(f"timed out after {timeout} s: {message}")

    def el(self, id_):
        return self.d.find_element(By.ID, id_)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def click(self, id_):
        element = self.el(id_)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def shot(self, name):
        path = os.path.join(self.artifacts, f"{name}.png")
        self.d.save_screenshot(path)
        print(f"  screenshot {path}")

    def keys(self, *keys):
        ActionChains(self.d).send_keys(*keys).perform()

    def chord(self, modifier, key):
        ActionChains(self.d).key_down(modifier).send_keys(key).key_up(modifier).perform()

    def drag(self, canvas_id, points, to_screen):
        """Presses at the first image point, moves through the rest, releases."""
        canvas = self.el(canvas_id)
        # WebDriver offsets count from the element's in-view centre: the
        # middle of the part of it inside the viewport.
        box = self.js("""const r = arguments[0].getBoundingClientRect();
            const left = Math.max(0, r.left), top = Math.max(0, r.top);
            const right = Math.min(window.innerWidth, r.right), bottom = Math.min(window.innerHeight, r.bottom);
            return {left: r.left, top: r.top, cx: Math.floor((left + right) / 2), cy: Math.floor((top + bottom) / 2)};""", canvas)
        actions = ActionChains(self.d, duration=30)
        first = True
        for x, y in points:
            sx, sy = to_screen(x, y)
            actions.move_to_element_with_offset(canvas, int(round(box["left"] + sx - box["cx"])), int(round(box["top"] + sy - box["cy"])))
            if first:
                actions.click_and_hold()
                first = False
        actions.release().perform()

    def editor_screen(self, x, y):
        p = self.js("return window.loupe.editor.toScreen(arguments[0], arguments[1])", x, y)
        return p["x"], p["y"]

    def recipe_screen(self, x, y):
        p = self.js("return window.loupe.recipeEditor.toScreen(arguments[0], arguments[1])", x, y)
        return p["x"], p["y"]

    def idle(self):
        """Waits until every edit the page queued has had its answer."""
        self.js("window.__idle = false; window.loupe.editor.pending.then(() => { window.__idle = true; })")
        self.wait(lambda: self.js("return window.__idle === true"), "the page's edits to finish")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("LOUPE_CHROMIUM", "/usr/bin/chromium")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1100", "--disable-gpu"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("LOUPE_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def run(args):
    os.makedirs(args.artifacts, exist_ok=True)
    api = AgentAPI(args.url, args.user, args.password)
    driver = browser()
    page = Page(driver, args.artifacts)
    try:
        steps(page, api, args)
    finally:
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
        for e in errors:
            print(f"  browser console: {e['message']}")
        driver.quit()
    check(not errors, f"the page logged {len(errors)} script errors")


def steps(page, api, args):
    d = page.d

    # 1. Sign in, set up a recipe (template and two ROIs), capture, import a file.
    print("step 1: sign in, recipe, capture, import")
    d.get(args.url + "/")
    page.wait(lambda: page.el("login-view").is_displayed(), "the sign-in form")
    page.el("login-password").send_keys("not-the-password")
    page.click("login-submit")
    page.wait(lambda: "Wrong" in page.el("login-error").text, "a wrong password to be refused")
    page.el("login-password").clear()
    page.el("login-user").clear()
    page.el("login-user").send_keys(args.user)
    page.el("login-password").send_keys(args.password)
    page.click("login-submit")
    page.wait(lambda: page.el("app-view").is_displayed(), "the page after signing in")
    check(page.el("user-name").text == args.user, "the page names the signed-in user")
    check(page.el("threshold").get_attribute("disabled") is not None, "the threshold slider is disabled while Live Preview Mode is off")

    page.click("tab-recipe")
    page.click("recipe-capture")
    page.wait(lambda: page.js("return window.loupe.recipeEditor.image !== null"), "the recipe capture to show")
    check(api.get("/api/v1/captures?limit=1")["total"] == 1, "the recipe capture is stored")
    page.click("add-class")
    name = d.find_element(By.CSS_SELECTOR, "#class-list .class-name")
    name.clear()
    name.send_keys("scratch", Keys.TAB)
    template = (160, 128, 480, 384)
    page.click("draw-template")
    page.drag("recipe-canvas", [(template[0], template[1]), (template[2], template[3])], page.recipe_screen)
    angle = page.el("angle-range")
    angle.clear()
    angle.send_keys("20", Keys.TAB)
    rois = {"left": (100, 100, 300, 400), "right": (340, 100, 540, 400)}
    for roi_name, (x0, y0, x1, y1) in rois.items():
        page.click("add-roi")
        page.drag("recipe-canvas", [(x0, y0), (x1, y1)], page.recipe_screen)
        field = d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-name")[-1]
        field.clear()
        field.send_keys(roi_name, Keys.TAB)
    # A third ROI, deleted again.
    page.click("add-roi")
    page.drag("recipe-canvas", [(20, 20), (80, 80)], page.recipe_screen)
    d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-delete")[-1].click()
    page.shot("recipe-setup")
    page.click("save-recipe")
    page.wait(lambda: "Saved" in page.el("recipe-status").text, "the recipe to save")
    recipe = api.get("/api/v1/recipe")
    check(recipe["version"] >= 1, "a recipe version was saved")
    t = recipe.get("template")
    check(t is not None and abs(t["x"] - template[0]) <= 2 and abs(t["y"] - template[1]) <= 2
          and abs(t["width"] - (template[2] - template[0])) <= 3 and abs(t["height"] - (template[3] - template[1])) <= 3,
          f"the stored template {t} is the rectangle drawn {template}")
    check(recipe.get("angleRangeDegrees") == 20, f"rotation range stored as 20, not {recipe.get('angleRangeDegrees')}")
    check(recipe.get("referenceCapture") == 1, "the template's capture is the aligner's reference")
    stored = {r["name"]: r["rect"] for r in recipe["rois"]}
    check(sorted(stored) == ["left", "right"], f"the recipe has ROIs left and right, not {sorted(stored)}")
    for roi_name, (x0, y0, x1, y1) in rois.items():
        r = stored[roi_name]
        check(abs(r["x"] - x0) <= 2 and abs(r["y"] - y0) <= 2 and abs(r["width"] - (x1 - x0)) <= 3 and abs(r["height"] - (y1 - y0)) <= 3,
              f"ROI {roi_name} stored as {r}, drawn as {(x0, y0, x1, y1)}")
    classes = api.get("/api/v1/classes")
    check([c["name"] for c in classes] == ["scratch"], f"classes stored as {classes}")
    page.click("test-alignment")
    page.wait(lambda: page.el("align-result").get_attribute("data-score") is not None, "the alignment test")
    score = float(page.el("align-result").get_attribute("data-score"))
    check(score > 0.5 and page.el("align-result").get_attribute("data-aligned") == "true",
          f"the live frame aligns to the template (score {score}): {page.el('align-result').text}")
    print(f"  recipe v{recipe['version']}: template {t}, ROIs {stored}; test alignment score {score:.3f}")

    page.click("tab-label")
    page.wait(lambda: page.el("preview").is_displayed(), "the live camera preview")
    page.wait(lambda: page.js("return document.getElementById('preview').naturalWidth > 0"), "a live camera frame in the preview")
    page.click("capture")
    page.wait(lambda: page.js("return window.loupe.editor.ready === 2"), "capture 2 on the stage")
    captures = api.get("/api/v1/captures")
    check(captures["total"] == 2 and "aligned" in captures["captures"][1]["source"], f"capture 2 is an aligned camera frame: {captures['captures'][-1]}")
    frame = api.call("GET", "/api/v1/camera/frame.jpg?width=640", raw=True)
    import_path = os.path.join(args.artifacts, "library-frame.jpg")
    with open(import_path, "wb") as f:
        f.write(frame)
    page.el("import-file").send_keys(import_path)
    page.wait(lambda: page.js("return window.loupe.editor.ready === 3"), "the imported capture on the stage")
    imported = api.get("/api/v1/captures/3")["capture"]
    check(imported["source"] == "import:library-frame.jpg", f"capture 3 is the imported file: {imported['source']}")

    # 2. Prev, Next, jump by number.
    print("step 2: navigation")
    page.click("prev")
    page.wait(lambda: page.js("return window.loupe.state.current") == 2 and "Capture 2 of 3" in page.el("stage-caption").text, "Prev to capture 2")
    check(api.get("/api/v1/captures/2")["capture"]["source"] in page.el("stage-caption").text, "the caption shows capture 2's source")
    page.click("next")
    page.wait(lambda: page.js("return window.loupe.state.current") == 3 and page.el("next").get_attribute("disabled") is not None,
              "Next to capture 3, the last, where Next is disabled")
    page.el("jump-number").clear()
    page.el("jump-number").send_keys("1")
    page.click("jump")
    page.wait(lambda: page.js("return window.loupe.state.current") == 1 and "Capture 1 of 3" in page.el("stage-caption").text, "jump to capture 1")
    # Arrow keys pressed faster than captures load: capture 2's image is held back
    # 1.5 s in the page's fetch, so it arrives after capture 3's. Only the capture
    # asked for last (3) may end up on the stage, not the one that arrived last.
    page.js("""
      const real = window.fetch;
      window.loupeRealFetch = real;
      window.fetch = (url, options) => {
        const response = real(url, options);
        if (!String(url).includes("/captures/2/image")) return response;
        return response.then(r => new Promise(resolve => setTimeout(() => resolve(r), 1500)));
      };""")
    page.keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    page.wait(lambda: page.js("return window.loupe.editor.ready") == 3, "the arrow keys to end on capture 3")
    time.sleep(2.5)
    page.js("window.fetch = window.loupeRealFetch")
    three = api.get("/api/v1/captures/3")["capture"]
    shown = page.js("const e = window.loupe.editor; return [window.loupe.state.current, e.ready, e.capture.number, e.image.width, e.image.height]")
    check(shown == [3, 3, 3, three["width"], three["height"]] and "Capture 3 of 3" in page.el("stage-caption").text,
          f"after fast arrow keys the stage holds capture 3 alone, though capture 2 arrived later: {shown}, caption {page.el('stage-caption').text!r}")
    page.keys(Keys.ARROW_LEFT)
    page.wait(lambda: page.js("return window.loupe.state.current") == 2, "the left arrow key to go to capture 2")
    page.wait(lambda: page.js("return window.loupe.editor.ready === 2 && window.loupe.editor.rois.length === 2"), "capture 2 with its ROIs")
    page.shot("before-labelling")

    # 3. Brush in class 1, erase part of it, the wand; undo and redo.
    print("step 3: brush, eraser, wand, undo/redo")
    left, right = stored["left"], stored["right"]
    page.keys("b")
    check(page.js("return window.loupe.editor.tool") == "brush", "B picks the brush")
    page.js("const s = document.getElementById('brush-class'); s.value = '1'; s.dispatchEvent(new Event('change'))")
    page.keys("]", "]")
    check(page.js("return window.loupe.editor.brushSize") == 20, "] twice grows the brush from 16 to 20 px")
    y = left["y"] + left["height"] // 2
    page.drag("view-canvas", [(left["x"] + 40, y), (left["x"] + 100, y + 10), (left["x"] + 150, y)], page.editor_screen)
    page.idle()
    page.keys("e")
    check(page.js("return window.loupe.editor.tool") == "eraser", "E picks the eraser")
    x = left["x"] + 95
    page.drag("view-canvas", [(x, y - 40), (x, y + 40)], page.editor_screen)
    page.idle()
    # A dab thinner than the 6 px guidance, which the page flags.
    page.keys("b")
    for _ in range(8):
        page.keys("[")
    check(page.js("return window.loupe.editor.brushSize") == 4, "[ shrinks the brush to 4 px")
    page.drag("view-canvas", [(left["x"] + 60, left["y"] + 30)], page.editor_screen)
    page.idle()
    page.wait(lambda: "under a 6 px radius" in page.el("flags").text, "the thin dab to be flagged")
    sent = page.js("return window.loupe.editor.sent")
    check(len(sent) == 3 and [s["stroke"]["tool"] for s in sent] == ["brush", "eraser", "brush"], f"three strokes went to the agent: {[s['stroke']['tool'] for s in sent]}")
    check(all(len(s["stroke"]["points"]) <= 2000 for s in sent), "strokes are compact point paths")
    expected = np.zeros((left["height"], left["width"]), dtype=np.uint8)
    for s in sent:
        check(s["capture"] == 2 and s["roi"] == "left", "strokes went to capture 2, ROI left")
        paint(expected, s["stroke"], 1 if s["stroke"]["tool"] == "brush" else 0)
    stored_mask = api.mask(2, "left")
    check(stored_mask.shape == expected.shape, f"mask is {stored_mask.shape}, ROI is {expected.shape}")
    differing = int((stored_mask != expected).sum())
    check(differing == 0, f"the stored mask differs from the strokes drawn in {differing} pixels")
    label = api.label(2, "left")
    check(label["labelledPixels"] == int((expected != 0).sum()) > 0, f"labelledPixels {label['labelledPixels']} = {int((expected != 0).sum())}")
    page_mask = np.array(page.js("return Array.from(window.loupe.editor.labels.get('left').mask)"), dtype=np.uint8).reshape(expected.shape)
    check(bool((page_mask == stored_mask).all()), "the page shows the stored mask")
    # The eraser cut the stroke in two.
    from_left = (expected[:, : x - left["x"] - 12] != 0).sum()
    from_right = (expected[:, x - left["x"] + 12:] != 0).sum()
    check(from_left > 0 and from_right > 0 and (expected[:, x - left["x"] - 5: x - left["x"] + 5] != 0).sum() == 0,
          "the eraser cleared a band through the brush stroke")
    print(f"  ROI left: {label['labelledPixels']} labelled pixels, identical to the strokes sent (brush, eraser, dab)")

    # Remove specks (regions under 30 px): the thin dab goes, the two stroke halves stay; the flag clears.
    dab = sent[2]["stroke"]
    dab_only = np.zeros_like(expected)
    paint(dab_only, dab, 1)
    page.el("active-roi").send_keys("left")
    page.click("remove-specks")
    page.idle()
    page.wait(lambda: page.el("flags").text == "", "the flag to clear once the dab is removed")
    expected[(dab_only == 1)] = 0
    check(int((api.mask(2, "left") != expected).sum()) == 0, "Remove specks removed exactly the dab")
    check(api.get("/api/v1/edits?limit=1")[0]["action"] == "remove-specks", "the edit log records the mask tool")

    page.keys("a")
    check(page.js("return window.loupe.editor.tool") == "wand", "A picks the AI wand")
    # Click a distinct patch: the darkest 9x9 area of the ROI that is not the
    # black border of an aligned capture (a hole or a dark defect on the part).
    crop = np.array(Image.open(io.BytesIO(api.call("GET", "/api/v1/captures/2/rois/right/image", raw=True))).convert("L"), dtype=np.float64)
    padded = np.cumsum(np.cumsum(np.pad(crop, ((1, 0), (1, 0))), axis=0), axis=1)
    k = 9
    means = (padded[k:, k:] - padded[:-k, k:] - padded[k:, :-k] + padded[:-k, :-k]) / (k * k)
    mins = np.full_like(means, np.inf)
    for dy in range(k):
        for dx in range(k):
            window = crop[dy: dy + means.shape[0], dx: dx + means.shape[1]]
            mins = np.minimum(mins, window)
    candidates = np.where((mins > 12) & (np.arange(means.shape[1])[None, :] > 20) & (np.arange(means.shape[1])[None, :] < means.shape[1] - 20)
                          & (np.arange(means.shape[0])[:, None] > 20) & (np.arange(means.shape[0])[:, None] < means.shape[0] - 20), means, np.inf)
    py, px = np.unravel_index(int(np.argmin(candidates)), candidates.shape)
    cx, cy = right["x"] + int(px) + k // 2, right["y"] + int(py) + k // 2
    page.drag("view-canvas", [(cx, cy)], page.editor_screen)
    page.idle()
    wand_label = api.label(2, "right")
    check(wand_label is not None and wand_label["labelledPixels"] > 0, "the wand labelled similar pixels in ROI right")
    wand_mask = api.mask(2, "right")
    check(set(np.unique(wand_mask)) <= {0, 1} and int((wand_mask == 1).sum()) == wand_label["labelledPixels"], "the wand's pixels are class 1")
    click = page.js("return window.loupe.editor.lastWand")
    check(click["roi"] == "right" and abs(click["x"] - (cx - right["x"])) <= 2 and abs(click["y"] - (cy - right["y"])) <= 2,
          f"the wand click reached the agent where it was made: {click}")
    check(wand_mask[click["y"], click["x"]] == 1, f"the clicked pixel is labelled: {click}")
    wand_hash = wand_label["maskSHA256"]
    page.chord(Keys.CONTROL, "z")
    page.idle()
    page.wait(lambda: api.label(2, "right")["labelledPixels"] == 0, "undo to clear the wand's selection")
    page.chord(Keys.CONTROL, "y")
    page.idle()
    page.wait(lambda: api.label(2, "right")["maskSHA256"] == wand_hash, "redo to put the wand's selection back")
    print(f"  ROI right: the wand labelled {wand_label['labelledPixels']} pixels; undo cleared them, redo restored the same mask")

    # The tab closes right after a stroke: the completed stroke is stored all the same.
    page.keys("b")
    page.keys(*(["]"] * 6))
    ry = right["y"] + 40
    page.drag("view-canvas", [(right["x"] + 30, ry), (right["x"] + 170, ry + 20)], page.editor_screen)
    last = page.js("const s = window.loupe.editor.sent; return s[s.length - 1]")
    d.get("about:blank")
    after_close = wand_mask.copy()
    paint(after_close, last["stroke"], 1)
    page.wait(lambda: api.label(2, "right")["labelledPixels"] == int((after_close != 0).sum()), "the stroke made just before the tab closed to be stored")
    check(int((api.mask(2, "right") != after_close).sum()) == 0, "the stored mask holds that last stroke exactly")
    d.get(args.url + "/")
    page.wait(lambda: page.el("app-view").is_displayed(), "the page again, still signed in")
    page.el("jump-number").send_keys("2")
    page.click("jump")
    page.wait(lambda: page.js("return window.loupe.editor.ready === 2"), "capture 2 again")
    print("  a stroke finished just before the tab closed was stored")

    # 4. Tick an ROI, open View All ROIs.
    print("step 4: include checkbox, View All ROIs")
    box = d.find_element(By.CSS_SELECTOR, ".roi-include[data-roi='left']")
    box.click()
    page.idle()
    page.wait(lambda: api.label(2, "left")["includeInTraining"] is True, "ROI left to be included")
    check(api.label(2, "right")["includeInTraining"] is False, "drawing alone does not include ROI right")
    check(d.find_element(By.CSS_SELECTOR, ".roi-include[data-roi='right']").is_selected() is False, "ROI right's box stays clear")
    page.shot("after-labelling")
    page.click("view-all")
    page.wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#all-rois-grid .tile[data-ready='true']")) == len(api.get("/api/v1/labels")),
              "every labelled ROI in View All ROIs")
    tiles = d.find_elements(By.CSS_SELECTOR, "#all-rois-grid .tile")
    check(sorted((t.get_attribute("data-capture"), t.get_attribute("data-roi")) for t in tiles) == [("2", "left"), ("2", "right")],
          "View All ROIs shows the two labelled ROIs")
    slider = page.el("all-opacity")
    check(slider.get_attribute("max") == "0.5", "the opacity slider goes up to 0.5")
    slider.click()
    page.keys(Keys.END)
    page.wait(lambda: page.el("all-opacity-value").text == "0.50", "the opacity slider at 0.5")
    page.shot("view-all-rois")
    page.click("all-rois-close")

    # 5. Train for a few iterations.
    print("step 5: training")
    iterations = page.el("iterations")
    iterations.clear()
    iterations.send_keys("3")
    page.click("advanced")
    check(page.el("aug-rotation").is_displayed(), "Advanced Settings open")
    page.click("train-start")
    page.wait(lambda: page.el("train-state").get_attribute("data-state") in ("running", "succeeded"), "training to start")
    started = time.monotonic()
    page.wait(lambda: page.el("train-state").get_attribute("data-state") in ("succeeded", "failed", "cancelled"), "training to finish", timeout=args.train_timeout)
    state = page.el("train-state").get_attribute("data-state")
    check(state == "succeeded", f"training ended {state}: {page.el('train-state').text}")
    check(float(page.el("train-progress").get_attribute("value")) == 1.0, "the progress bar is full")
    status = api.get("/api/v1/training")
    model = api.get("/api/v1/model")["current"]
    check(model is not None and model["version"] == status["modelVersion"], f"the trained model {status['modelVersion']} is installed")
    page.wait(lambda: page.el("model-version").text == model["version"], "the page to show the new model version")
    check(status["trainingImages"] == 1 and status["passes"] == 3, f"trained on the one ticked ROI for 3 passes: {status['trainingImages']} ROIs, {status['passes']} passes")
    print(f"  model {model['version']} in {time.monotonic() - started:.1f} s, final loss {status['loss']:.4f}")

    # 5a. The training result links the new model's report, which chromium renders as pictures under the agent's CSP.
    print("step 5a: the training report")
    check(page.el("train-report").is_displayed() and page.el("model-report").is_displayed(), "the training result and the model link the report")
    report_url = page.el("train-report").get_attribute("href")
    page_window = page.d.current_window_handle
    page.d.switch_to.new_window("tab")
    page.d.get(report_url)
    page.wait(lambda: page.d.title == f"Model {model['version']}", "the report to load")
    charts = page.d.find_elements(By.CSS_SELECTOR, "svg.chart")
    check(len(charts) >= 1 and all(c.size["width"] > 100 and c.size["height"] > 100 for c in charts), f"the report draws its charts: {len(charts)}")
    loss_line = page.d.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series")
    check(len(loss_line) >= 1 and len(loss_line[0].get_attribute("points").split()) == 3, "the loss curve has a point per pass")
    font = page.js("return getComputedStyle(document.body).fontFamily")
    check("sans-serif" in font, f"the report's stylesheet applies (CSP allows it): {font}")
    page.shot("training-report")
    page.d.close()
    page.d.switch_to.window(page_window)

    # 5b. Suggested labels from the model just trained: one accepted, one edited, one rejected.
    print("step 5b: suggested labels")
    page.el("jump-number").clear()
    page.el("jump-number").send_keys("3")
    page.click("jump")
    page.wait(lambda: page.js("return window.loupe.editor.ready === 3"), "capture 3 on the stage")
    check(api.label(3, "left") is None and api.label(3, "right") is None, "capture 3 has no labels yet")
    choose_roi = lambda name: page.js("const s = document.getElementById('active-roi'); s.value = arguments[0]; s.dispatchEvent(new Event('change'))", name)
    proposed = lambda name: page.js("return window.loupe.editor.proposals.has(arguments[0])", name)
    choose_roi("left")
    page.click("suggest")
    page.wait(lambda: proposed("left"), "the suggestion for ROI left on the stage")
    check(page.el("suggest-accept").get_attribute("disabled") is None, "Accept is enabled while a proposal is shown")
    check(api.label(3, "left") is None, "a suggestion is not stored before it is accepted")
    page.shot("suggestion")
    suggested = page.js("return window.loupe.editor.proposals.get('left').mask.reduce((n, v) => n + (v ? 1 : 0), 0)")
    page.click("suggest-accept")
    page.idle()
    accepted = api.label(3, "left")
    check(accepted is not None and accepted["labelledPixels"] == suggested, f"the accepted suggestion is stored: {accepted}, {suggested} suggested")
    newest = api.get("/api/v1/edits?limit=1")[0]
    check(newest["action"] == "suggestion" and f"model {model['version']}" in newest["detail"], f"the edit log says the mask came from a suggestion: {newest}")
    check(not proposed("left"), "the proposal is gone once accepted")
    # Edited: a brush stroke on a proposal accepts it, then paints.
    choose_roi("right")
    page.click("suggest")
    page.wait(lambda: proposed("right"), "the suggestion for ROI right on the stage")
    page.keys("b")
    ry = right["y"] + right["height"] // 3
    page.drag("view-canvas", [(right["x"] + 30, ry), (right["x"] + 80, ry)], page.editor_screen)
    page.idle()
    actions = [e["action"] for e in api.get("/api/v1/edits?limit=2")]
    check(actions == ["strokes", "suggestion"], f"editing a suggestion stores it, then the edit: {actions}")
    edited = api.mask(3, "right")
    check(edited[ry - right["y"], 55] == 1, "the stroke is in the stored mask")
    # Rejected: the stored mask stays as it was.
    choose_roi("left")
    page.click("suggest")
    page.wait(lambda: proposed("left"), "a second suggestion for ROI left")
    page.click("suggest-reject")
    page.idle()
    check(not proposed("left") and api.label(3, "left")["maskSHA256"] == accepted["maskSHA256"], "a rejected suggestion changes nothing")
    check(api.get("/api/v1/edits?limit=1")[0]["action"] == "strokes", "a rejection is not an edit")
    print(f"  ROI left: accepted {suggested} suggested pixels; ROI right: suggestion edited with a stroke; a second suggestion rejected")

    # 6. Live Preview Mode and the threshold.
    print("step 6: live preview mode")
    check(page.el("threshold").get_attribute("disabled") is not None, "the threshold is disabled before Live Preview Mode")
    page.click("live-mode")
    page.wait(lambda: page.el("threshold").get_attribute("disabled") is None, "the threshold slider to enable")
    check(api.get("/api/v1/live")["live"] is True, "live mode is on in the agent")
    read_rows = lambda: page.js("return [...document.querySelectorAll('#live-results tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))")
    page.wait(lambda: len(read_rows()) >= 2, "live results per ROI", timeout=60)
    rows = read_rows()
    check(sorted(r[0] for r in rows[:2]) == ["left", "right"] and all(r[3] in ("PASS", "FAIL") for r in rows[:2]), f"results per ROI: {rows}")
    before = api.get("/api/v1/live")["threshold"]
    page.el("threshold").click()
    page.keys(Keys.HOME, *([Keys.PAGE_UP] * 7))
    page.wait(lambda: abs(api.get("/api/v1/live")["threshold"] - 0.70) < 1e-9, "the threshold to reach the agent")
    check(abs(api.get("/api/v1/recipe")["confidenceThreshold"] - 0.70) < 1e-9, "the threshold is saved in the recipe")
    check(page.el("threshold-value").text == "0.70", "the page shows 0.70")
    page.wait(lambda: page.js("return document.getElementById('preview').naturalWidth > 0"), "the live overlay stream")
    page.shot("live-preview")
    page.click("live-mode")
    page.wait(lambda: page.el("threshold").get_attribute("disabled") is not None, "the threshold slider to disable again")
    check(api.get("/api/v1/live")["live"] is False, "live mode is off in the agent")
    print(f"  live results {rows[:2]}; threshold {before} -> 0.70")

    # 7. The camera's Library: the frames live mode kept, Review first; one imported for labelling.
    print("step 7: the Library")
    page.wait(lambda: api.get("/api/v1/library?limit=1")["kept"] > 0, "the Library to keep a frame", timeout=60)
    page.click("open-library")
    check(page.el("library-dialog").is_displayed() and page.el("library-filter").get_attribute("value") == "review", "the Library opens on Review")
    page.js("const s = document.getElementById('library-filter'); s.value = 'all'; s.dispatchEvent(new Event('change'))")
    page.wait(lambda: page.js("return document.querySelectorAll('#library-grid .tile').length") > 0, "the kept frames as tiles")
    first = int(page.js("return document.querySelector('#library-grid .tile').dataset.frame"))
    page.js("document.querySelector('#library-grid .tile .library-import').click()")
    page.wait(lambda: not page.el("library-dialog").is_displayed(), "the Library to close after the import")
    frame = [f for f in api.get("/api/v1/library?limit=1000")["frames"] if f["id"] == first][0]
    check(frame["importedAs"] is not None, f"Library frame {first} is marked imported: {frame}")
    page.wait(lambda: page.js("return window.loupe.editor.ready") == frame["importedAs"], "the imported frame on the stage")
    source = api.get(f"/api/v1/captures/{frame['importedAs']}")["capture"]["source"]
    check(source.startswith(f"library:{first}#"), f"the capture came from the Library: {source}")
    print(f"  Library frame {first} ({frame['verdict']}, {frame['reason']}) became capture {frame['importedAs']}")

    page.click("logout")
    page.wait(lambda: page.el("login-view").is_displayed(), "the sign-in form after signing out")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--artifacts", default="browser-artifacts")
    parser.add_argument("--train-timeout", type=float, default=300)
    args = parser.parse_args()
    try:
        run(args)
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        return 1
    print("browser test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
