// Recipe setup: on a capture, draw the aligner's template and set its
// rotation range; add, move, resize, name and delete ROI rectangles; pick the
// inspection type, its classes (name and colour) and the pass/fail rule.
// "Test alignment" finds the drafted template in the current live frame.

import { api, notify, hexOf } from "./app.js";

const $ = id => document.getElementById(id);
const HANDLE = 10; // screen pixels around a corner that resize

export class RecipeEditor {
  constructor(elements, callbacks) {
    this.canvas = elements.canvas;
    this.wrap = elements.wrap;
    this.ctx = this.canvas.getContext("2d");
    this.callbacks = callbacks;
    this.image = null;
    this.captureNumber = null;
    this.draft = null;
    this.classes = [];
    this.selected = null;  // "template" or an ROI index
    this.mode = "select";  // "select", "template", "roi"
    this.drag = null;
    this.scale = 1; this.ox = 0; this.oy = 0;
    this.canvas.addEventListener("pointerdown", e => this.down(e));
    this.canvas.addEventListener("pointermove", e => this.move(e));
    this.canvas.addEventListener("pointerup", e => this.up(e));
    new ResizeObserver(() => this.fit()).observe(this.wrap);
    this.wire();
  }

  setRecipe(recipe, classes) {
    this.saved = recipe;
    this.draft = {
      inspectionType: recipe.inspectionType,
      referenceCapture: recipe.referenceCapture ?? null,
      template: recipe.template ?? null,
      angleRangeDegrees: recipe.angleRangeDegrees ?? 15,
      minAlignScore: recipe.minAlignScore ?? 0.5,
      rois: recipe.rois.map(r => ({ name: r.name, rect: { ...r.rect } })),
      confidenceThreshold: recipe.confidenceThreshold,
      failRule: { ...recipe.failRule },
      trigger: recipe.trigger ?? "",
    };
    this.classes = classes.map(c => ({ ...c }));
    $("recipe-type").value = this.draft.inspectionType;
    $("angle-range").value = this.draft.angleRangeDegrees;
    $("min-score").value = this.draft.minAlignScore;
    $("fail-pixels").value = this.draft.failRule.minimumDefectPixels;
    const trigger = $("recipe-trigger");
    if (this.draft.trigger && ![...trigger.options].some(o => o.value === this.draft.trigger)) {
      trigger.add(new Option(`input line ${this.draft.trigger}`, this.draft.trigger));
    }
    trigger.value = this.draft.trigger;
    this.renderLists();
    this.draw();
  }

  async show(number) {
    if (!number) {
      $("recipe-caption").textContent = "No captures yet: take one with Capture.";
      this.image = null;
      this.draw();
      return;
    }
    try {
      const blob = await api("GET", `/api/v1/captures/${number}/image`, null, { raw: true });
      this.image = await createImageBitmap(blob);
      this.captureNumber = number;
      $("recipe-capture-number").value = number;
      $("recipe-caption").textContent = `Capture ${number} · ${this.image.width}×${this.image.height}` +
        (this.draft.referenceCapture ? ` · aligner reference: capture ${this.draft.referenceCapture}` : "");
      this.fit();
    } catch (error) { notify(error.message); }
  }

  fit() {
    const w = this.wrap.clientWidth, h = this.wrap.clientHeight;
    if (!w || !h) return;
    this.canvas.width = w; this.canvas.height = h;
    if (this.image) {
      this.scale = Math.min(w / this.image.width, h / this.image.height);
      this.ox = (w - this.image.width * this.scale) / 2;
      this.oy = (h - this.image.height * this.scale) / 2;
    }
    this.draw();
  }

  toImage(event) {
    const box = this.canvas.getBoundingClientRect();
    return { x: (event.clientX - box.left - this.ox) / this.scale, y: (event.clientY - box.top - this.oy) / this.scale };
  }

  /// Screen position (relative to the canvas) of an image point: for tests.
  toScreen(x, y) { return { x: x * this.scale + this.ox, y: y * this.scale + this.oy }; }

  clampRect(r) {
    const W = this.image?.width ?? 1e6, H = this.image?.height ?? 1e6;
    const x = Math.max(0, Math.min(W - 8, Math.round(r.x))), y = Math.max(0, Math.min(H - 8, Math.round(r.y)));
    return { x, y, width: Math.max(8, Math.min(W - x, Math.round(r.width))), height: Math.max(8, Math.min(H - y, Math.round(r.height))) };
  }

  rectOf(selection) {
    return selection === "template" ? this.draft.template : this.draft.rois[selection]?.rect;
  }

  hit(p) {
    const near = (a, b) => Math.abs(a - b) * this.scale <= HANDLE;
    const shapes = [...this.draft.rois.map((_, i) => i)];
    if (this.draft.template) shapes.push("template");
    for (const s of shapes) {
      const r = this.rectOf(s);
      if (near(p.x, r.x + r.width) && near(p.y, r.y + r.height)) return { shape: s, resize: true };
    }
    for (const s of shapes) {
      const r = this.rectOf(s);
      if (p.x >= r.x && p.y >= r.y && p.x < r.x + r.width && p.y < r.y + r.height) return { shape: s, resize: false };
    }
    return null;
  }

  down(event) {
    if (!this.image || event.button !== 0) return;
    const p = this.toImage(event);
    this.canvas.setPointerCapture(event.pointerId);
    if (this.mode === "template" || this.mode === "roi") {
      this.drag = { kind: "new", start: p, now: p };
      return;
    }
    const hit = this.hit(p);
    this.selected = hit?.shape ?? null;
    if (hit) {
      const r = this.rectOf(hit.shape);
      this.drag = { kind: hit.resize ? "resize" : "move", start: p, rect: { ...r } };
    }
    this.renderLists();
    this.draw();
  }

  move(event) {
    if (!this.image) return;
    const p = this.toImage(event);
    if (!this.drag) {
      const hit = this.mode === "select" ? this.hit(p) : null;
      this.canvas.style.cursor = this.mode !== "select" ? "crosshair" : hit?.resize ? "nwse-resize" : hit ? "move" : "default";
      return;
    }
    const d = this.drag;
    d.now = p;
    if (d.kind === "move") {
      this.setRect(this.selected, this.clampRect({ ...d.rect, x: d.rect.x + p.x - d.start.x, y: d.rect.y + p.y - d.start.y }));
    } else if (d.kind === "resize") {
      this.setRect(this.selected, this.clampRect({ ...d.rect, width: d.rect.width + p.x - d.start.x, height: d.rect.height + p.y - d.start.y }));
    }
    this.draw();
  }

  up(event) {
    const d = this.drag;
    this.drag = null;
    try { this.canvas.releasePointerCapture(event.pointerId); } catch (_) { /* released */ }
    if (!d || d.kind !== "new") { this.renderLists(); return; }
    const rect = this.clampRect({
      x: Math.min(d.start.x, d.now.x), y: Math.min(d.start.y, d.now.y),
      width: Math.abs(d.now.x - d.start.x), height: Math.abs(d.now.y - d.start.y),
    });
    if (this.mode === "template") {
      if (rect.width < 16 || rect.height < 16) { notify("The template must be at least 16×16 px.", "info"); }
      else {
        this.draft.template = rect;
        this.draft.referenceCapture = this.captureNumber;
        this.selected = "template";
      }
    } else {
      let n = this.draft.rois.length + 1;
      while (this.draft.rois.some(r => r.name === `roi-${n}`)) n++;
      this.draft.rois.push({ name: `roi-${n}`, rect });
      this.selected = this.draft.rois.length - 1;
    }
    this.mode = "select";
    this.canvas.style.cursor = "default";
    this.renderLists();
    this.draw();
  }

  setRect(selection, rect) {
    if (selection === "template") this.draft.template = rect; else this.draft.rois[selection].rect = rect;
  }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image || !this.draft) return;
    ctx.setTransform(this.scale, 0, 0, this.scale, this.ox, this.oy);
    ctx.drawImage(this.image, 0, 0);
    const lw = 2 / this.scale;
    const box = (r, colour, label, selected) => {
      ctx.lineWidth = selected ? lw * 2 : lw;
      ctx.strokeStyle = colour;
      ctx.strokeRect(r.x, r.y, r.width, r.height);
      ctx.fillStyle = colour;
      ctx.fillRect(r.x + r.width - 5 / this.scale, r.y + r.height - 5 / this.scale, 10 / this.scale, 10 / this.scale);
      ctx.font = `${13 / this.scale}px system-ui`;
      ctx.fillText(label, r.x + 3 / this.scale, r.y - 4 / this.scale);
    };
    if (this.draft.template) {
      const t = this.draft.template;
      ctx.setLineDash([6 / this.scale, 4 / this.scale]);
      box(t, "#f0b429", `template ±${this.draft.angleRangeDegrees}°`, this.selected === "template");
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.ellipse(t.x + t.width / 2, t.y + t.height / 2, t.width / 2, t.height / 2, 0, 0, Math.PI * 2);
      ctx.strokeStyle = "rgba(240,180,41,0.5)";
      ctx.lineWidth = lw;
      ctx.stroke();
    }
    this.draft.rois.forEach((roi, i) => box(roi.rect, i === this.selected ? "#2f8cff" : "#5ab0ff", roi.name, i === this.selected));
    if (this.drag?.kind === "new") {
      const a = this.drag.start, b = this.drag.now;
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = lw;
      ctx.strokeRect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
    }
  }

  renderLists() {
    if (!this.draft) return;
    const t = this.draft.template;
    $("template-info").textContent = t
      ? `Template ${t.width}×${t.height} at (${t.x}, ${t.y}) on capture ${this.draft.referenceCapture}`
      : "No template: frames are inspected where they are, without alignment.";
    const list = $("roi-list");
    list.replaceChildren(...this.draft.rois.map((roi, i) => {
      const li = document.createElement("li");
      li.className = i === this.selected ? "selected" : "";
      li.dataset.index = i;
      const name = document.createElement("input");
      name.type = "text";
      name.value = roi.name;
      name.className = "roi-name";
      name.setAttribute("aria-label", "ROI name");
      name.addEventListener("change", () => { roi.name = name.value.trim(); this.draw(); });
      name.addEventListener("focus", () => { this.selected = i; this.draw(); });
      const size = document.createElement("span");
      size.className = "small muted";
      size.textContent = `${roi.rect.width}×${roi.rect.height} @ ${roi.rect.x},${roi.rect.y}`;
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.className = "roi-delete";
      remove.addEventListener("click", () => { this.draft.rois.splice(i, 1); this.selected = null; this.renderLists(); this.draw(); });
      li.append(name, size, remove);
      return li;
    }));
    const classes = $("class-list");
    classes.replaceChildren(...this.classes.map((c, i) => {
      const li = document.createElement("li");
      const index = document.createElement("span");
      index.textContent = i + 1;
      const name = document.createElement("input");
      name.type = "text";
      name.value = c.name;
      name.className = "class-name";
      name.setAttribute("aria-label", "Class name");
      name.addEventListener("change", () => { c.name = name.value.trim(); });
      const colour = document.createElement("input");
      colour.type = "color";
      colour.value = hexOf(c.color);
      colour.className = "class-color";
      colour.addEventListener("input", () => { c.color = parseInt(colour.value.slice(1), 16); });
      const remove = document.createElement("button");
      remove.textContent = "Remove";
      remove.addEventListener("click", () => { this.classes.splice(i, 1); this.renderLists(); });
      li.append(index, name, colour, remove);
      return li;
    }));
  }

  wire() {
    $("draw-template").addEventListener("click", () => {
      this.mode = "template";
      notify("Drag a rectangle around a distinctive, rigid part of the part: the aligner's template.", "info");
    });
    $("clear-template").addEventListener("click", () => {
      this.draft.template = null;
      this.draft.referenceCapture = null;
      this.renderLists();
      this.draw();
    });
    $("add-roi").addEventListener("click", () => {
      this.mode = "roi";
      notify("Drag a rectangle for the new ROI.", "info");
    });
    $("angle-range").addEventListener("change", e => { this.draft.angleRangeDegrees = Number(e.target.value); this.draw(); });
    $("min-score").addEventListener("change", e => { this.draft.minAlignScore = Number(e.target.value); });
    $("recipe-type").addEventListener("change", e => { this.draft.inspectionType = e.target.value.trim(); });
    $("fail-pixels").addEventListener("change", e => { this.draft.failRule.minimumDefectPixels = Number(e.target.value); });
    $("recipe-trigger").addEventListener("change", e => { this.draft.trigger = e.target.value; });
    $("add-class").addEventListener("click", () => {
      const palette = [0xe6194b, 0x3cb44b, 0xffe119, 0x4363d8, 0xf58231, 0x911eb4, 0x46f0f0, 0xf032e6];
      this.classes.push({ index: this.classes.length + 1, name: `class-${this.classes.length + 1}`, color: palette[this.classes.length % palette.length] });
      this.renderLists();
    });
    $("recipe-capture").addEventListener("click", async () => {
      try {
        const record = await api("POST", "/api/v1/captures");
        await this.show(record.number);
        notify(`Capture ${record.number} taken.`, "info");
      } catch (error) { notify(`Capture failed: ${error.message}`); }
    });
    $("recipe-load").addEventListener("click", () => this.show(Number($("recipe-capture-number").value)));
    $("test-alignment").addEventListener("click", () => this.testAlignment());
    $("save-recipe").addEventListener("click", () => this.save());
    document.addEventListener("keydown", event => {
      if ($("recipe-view").hidden || event.target instanceof HTMLInputElement) return;
      if ((event.key === "Delete" || event.key === "Backspace") && typeof this.selected === "number") {
        this.draft.rois.splice(this.selected, 1);
        this.selected = null;
        this.renderLists();
        this.draw();
      }
    });
  }

  async testAlignment() {
    const out = $("align-result");
    out.textContent = "Testing…";
    try {
      const draft = { angleRangeDegrees: this.draft.angleRangeDegrees, minAlignScore: this.draft.minAlignScore };
      if (this.draft.template) { draft.template = this.draft.template; draft.referenceCapture = this.draft.referenceCapture; }
      const r = await api("POST", "/api/v1/align/test", draft);
      out.dataset.score = r.score;
      out.dataset.aligned = r.aligned;
      out.textContent = `Match score ${r.score.toFixed(3)} (${r.aligned ? "aligned" : `below ${r.minScore}: not aligned`}) · ` +
        `found at (${r.x.toFixed(1)}, ${r.y.toFixed(1)}), shift ${r.shiftX >= 0 ? "+" : ""}${r.shiftX.toFixed(1)}, ${r.shiftY >= 0 ? "+" : ""}${r.shiftY.toFixed(1)} px, ` +
        `angle ${r.angleDegrees.toFixed(2)}° · ${r.milliseconds.toFixed(0)} ms on frame ${r.frameSequence}`;
    } catch (error) {
      out.textContent = `Alignment test failed: ${error.message}`;
    }
  }

  async save() {
    const status = $("recipe-status");
    status.textContent = "Saving…";
    try {
      const classes = this.classes.map((c, i) => ({ index: i + 1, name: c.name, color: c.color }));
      await api("PUT", "/api/v1/classes", classes);
      const recipe = {
        version: this.saved.version,
        inspectionType: this.draft.inspectionType,
        rois: this.draft.rois,
        confidenceThreshold: this.draft.confidenceThreshold,
        failRule: { minimumDefectPixels: Number(this.draft.failRule.minimumDefectPixels) },
        angleRangeDegrees: this.draft.angleRangeDegrees,
        minAlignScore: this.draft.minAlignScore,
      };
      if (this.draft.template) { recipe.template = this.draft.template; recipe.referenceCapture = this.draft.referenceCapture; }
      if (this.draft.trigger) recipe.trigger = this.draft.trigger;
      const saved = await api("PUT", "/api/v1/recipe", recipe);
      status.textContent = `Saved as recipe version ${saved.version}.`;
      await this.callbacks.reloaded();
    } catch (error) {
      status.textContent = `Not saved: ${error.message}`;
    }
  }
}
