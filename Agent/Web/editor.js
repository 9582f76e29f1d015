// The labelling canvas: a capture with its ROIs, their masks as a coloured
// overlay, and the tools (pan/zoom, brush, eraser, AI wand). Strokes draw
// locally at the display's frame rate; each finished stroke goes to the agent
// as one compact delta (the pointer path, in ROI pixels), with keepalive so
// it is stored even when the tab closes right after. The agent's answer is
// the truth: the ROI's mask is reloaded from it.

import { api, fetchMask, maskFromBase64, rgbOf, notify } from "./app.js";

export class LabelEditor {
  constructor(elements) {
    this.el = elements;
    this.canvas = elements.canvas;
    this.ctx = this.canvas.getContext("2d");
    this.cursor = elements.cursor;
    this.cursorCtx = this.cursor.getContext("2d");
    this.overlay = document.createElement("canvas");
    this.overlayCtx = this.overlay.getContext("2d", { willReadFrequently: false });
    this.proposalCanvas = document.createElement("canvas"); // the model's suggestions, not stored yet
    this.proposalCtx = this.proposalCanvas.getContext("2d");
    this.proposals = new Map(); // roi name -> {mask, rect, modelVersion}
    this.capture = null;       // {number, width, height, source}
    this.image = null;         // ImageBitmap of the capture
    this.ready = null;         // number of the capture whose image, masks and ROI boxes are all on the stage
    this.loadToken = 0;        // counts load() calls, so that a superseded one leaves the stage alone
    this.rois = [];            // recipe ROIs [{name, rect}]
    this.labels = new Map();   // roi name -> label JSON from the agent
    this.thin = new Map();     // roi name -> thin regions flagged by the agent
    this.classes = [];
    this.tool = "brush";
    this.brushClass = 1;
    this.brushSize = 16;
    this.wandTolerance = 0.5;
    this.wandMode = "add";
    this.showAnnotations = true;
    this.opacity = 0.5;
    this.view = { scale: 1, ox: 0, oy: 0 };
    this.stroke = null;        // the stroke being drawn
    this.pending = Promise.resolve(); // edits go to the agent in order
    this.undoStack = [];
    this.redoStack = [];
    this.activeROI = null;
    this.dirty = true;
    this.onChange = () => {};
    this.sent = [];
    this.installEvents();
    this.damage = null;        // image area a stroke changed since the last frame
    const tick = () => { this.frame(); requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    new ResizeObserver(() => this.resize()).observe(elements.wrap);
  }

  // MARK: Loading

  /// Puts capture `number` on the stage. Returns false when a later call took over
  /// before this one finished (an operator holding an arrow key): only the newest
  /// capture asked for ends up on the stage, never a mix of two.
  async load(number) {
    const token = ++this.loadToken;
    const current = () => token === this.loadToken;
    this.ready = null;
    const detail = await api("GET", `/api/v1/captures/${number}`);
    const blob = await api("GET", `/api/v1/captures/${number}/image`, null, { raw: true });
    const image = await createImageBitmap(blob);
    if (!current()) return false;
    const labels = new Map(detail.labels.map(l => [l.roi, l]));
    await Promise.all(detail.labels.map(async l => { l.mask = (await fetchMask(number, l.roi)).classes; }));
    if (!current()) return false;
    this.capture = detail.capture;
    this.image = image;
    this.labels = labels;
    this.thin = new Map();
    this.undoStack = [];
    this.redoStack = [];
    this.overlay.width = image.width;
    this.overlay.height = image.height;
    this.overlayCtx.clearRect(0, 0, image.width, image.height);
    for (const label of labels.values()) this.paintMask(label);
    this.proposals = new Map();
    this.proposalCanvas.width = image.width;
    this.proposalCanvas.height = image.height;
    if (!this.rois.some(r => r.name === this.activeROI)) this.activeROI = this.rois[0]?.name ?? null;
    this.fit();
    this.layoutBoxes();
    this.ready = number;
    if (this.tool === "wand") this.prepareWand();
    this.onChange();
    await Promise.all(detail.labels.filter(l => l.labelledPixels > 0).map(l => this.check(l.roi)));
    return current();
  }

  /// The recipe's ROIs and the classes (the page loads them once and after each recipe save).
  setRecipe(recipe, classes) {
    this.rois = recipe.rois;
    this.classes = classes;
    this.redrawAllMasks();
  }

  colorOf(index) {
    const record = this.classes.find(c => c.index === index);
    return rgbOf(record ? record.color : 0xff00ff);
  }

  /// Fetches an ROI's mask from the agent and paints it into the overlay.
  async reloadMask(roiName, label) {
    label = label ?? this.labels.get(roiName);
    if (!label) return;
    const number = this.capture.number;
    // An edit's answer carries the edited mask; otherwise fetch it.
    const mask = (await (label.maskPNG ? maskFromBase64(label.maskPNG) : fetchMask(number, roiName))).classes;
    delete label.maskPNG;
    if (this.capture?.number !== number) return;
    label.mask = mask;
    this.labels.set(roiName, label);
    this.paintMask(label);
  }

  paintMask(label) {
    if (!label.mask) return;
    const { x, y, width, height } = label.rect;
    const pixels = this.overlayCtx.createImageData(width, height);
    const data = pixels.data;
    const colours = new Map();
    for (let i = 0; i < label.mask.length; i++) {
      const value = label.mask[i];
      if (value === 0) continue;
      let c = colours.get(value);
      if (!c) { c = this.colorOf(value); colours.set(value, c); }
      data[i * 4] = c[0]; data[i * 4 + 1] = c[1]; data[i * 4 + 2] = c[2]; data[i * 4 + 3] = 255;
    }
    this.overlayCtx.putImageData(pixels, x, y);
    this.dirty = true;
  }

  redrawAllMasks() {
    if (!this.image) return;
    this.overlayCtx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    for (const label of this.labels.values()) this.paintMask(label);
  }

  // MARK: View

  resize() {
    const { clientWidth: w, clientHeight: h } = this.el.wrap;
    if (w === 0 || h === 0) return;
    this.canvas.width = w; this.canvas.height = h;
    this.cursor.width = w; this.cursor.height = h;
    if (this.image && !this.fitted) this.fit();
    this.layoutBoxes();
    this.dirty = true;
  }

  fit() {
    if (!this.image) return;
    const w = this.canvas.width || this.el.wrap.clientWidth, h = this.canvas.height || this.el.wrap.clientHeight;
    const scale = Math.min(w / this.image.width, (h - 28) / this.image.height);
    this.view = { scale, ox: (w - this.image.width * scale) / 2, oy: Math.max(28, (h - this.image.height * scale) / 2) };
    this.fitted = w > 0;
    this.layoutBoxes();
    this.dirty = true;
  }

  toImage(clientX, clientY) {
    const box = this.canvas.getBoundingClientRect();
    return { x: (clientX - box.left - this.view.ox) / this.view.scale, y: (clientY - box.top - this.view.oy) / this.view.scale };
  }

  /// Screen position (relative to the canvas) of an image point: for tests and the ROI boxes.
  toScreen(x, y) {
    return { x: x * this.view.scale + this.view.ox, y: y * this.view.scale + this.view.oy };
  }

  zoom(factor, cx, cy) {
    const scale = Math.min(32, Math.max(0.05, this.view.scale * factor));
    const k = scale / this.view.scale;
    this.view = { scale, ox: cx - (cx - this.view.ox) * k, oy: cy - (cy - this.view.oy) * k };
    this.layoutBoxes();
    this.dirty = true;
  }

  /// One display frame: a full redraw after a view change, else only the
  /// area strokes touched since the last frame (what keeps strokes at the
  /// display's rate on large captures).
  frame() {
    if (this.dirty) this.render();
    else if (this.damage) this.render(this.damage);
    this.damage = null;
  }

  render(area = null) {
    this.dirty = false;
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    if (!area) ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    const { scale, ox, oy } = this.view;
    ctx.setTransform(scale, 0, 0, scale, ox, oy);
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.save();
    let src = [0, 0, this.image.width, this.image.height];
    if (area) {
      const x0 = Math.max(0, Math.floor(area.x0) - 1), y0 = Math.max(0, Math.floor(area.y0) - 1);
      const x1 = Math.min(this.image.width, Math.ceil(area.x1) + 1), y1 = Math.min(this.image.height, Math.ceil(area.y1) + 1);
      if (x1 <= x0 || y1 <= y0) { ctx.restore(); ctx.setTransform(1, 0, 0, 1, 0, 0); return; }
      ctx.beginPath();
      ctx.rect(x0, y0, x1 - x0, y1 - y0);
      ctx.clip();
      // A margin in the source, so smoothing at the clip's edge reads the same pixels as a full redraw.
      const m0x = Math.max(0, x0 - 2), m0y = Math.max(0, y0 - 2);
      src = [m0x, m0y, Math.min(this.image.width, x1 + 2) - m0x, Math.min(this.image.height, y1 + 2) - m0y];
    }
    ctx.drawImage(this.image, ...src, ...src);
    if (this.showAnnotations && this.opacity > 0) {
      ctx.globalAlpha = this.opacity;
      ctx.drawImage(this.overlay, ...src, ...src);
      ctx.globalAlpha = 1;
    }
    // The model's suggestions: paler than stored masks, in a dashed cyan frame, until accepted.
    if (this.proposals.size > 0 && this.showAnnotations) {
      ctx.globalAlpha = Math.max(0.3, this.opacity * 0.7);
      ctx.drawImage(this.proposalCanvas, ...src, ...src);
      ctx.globalAlpha = 1;
      ctx.lineWidth = 2 / scale;
      ctx.setLineDash([8 / scale, 4 / scale]);
      ctx.strokeStyle = "#22d3ee";
      for (const p of this.proposals.values()) ctx.strokeRect(p.rect.x - 1, p.rect.y - 1, p.rect.width + 2, p.rect.height + 2);
      ctx.setLineDash([]);
    }
    // Regions thinner than the 6 px radius guidance.
    ctx.lineWidth = 2 / scale;
    ctx.setLineDash([4 / scale, 3 / scale]);
    ctx.strokeStyle = "#f0b429";
    for (const [name, regions] of this.thin) {
      const roi = this.labels.get(name)?.rect;
      if (!roi) continue;
      for (const r of regions) ctx.strokeRect(roi.x + r.bounds.x - 2, roi.y + r.bounds.y - 2, r.bounds.width + 4, r.bounds.height + 4);
    }
    ctx.setLineDash([]);
    ctx.restore();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    if (area) return;
    this.el.zoomLabel.textContent = `${Math.round(scale * 100)} %`;
  }

  /// The ROI rectangles and their "include in training" checkboxes, as HTML over the canvas.
  layoutBoxes() {
    const host = this.el.boxes;
    if (!this.image) { host.replaceChildren(); return; }
    const existing = new Map([...host.children].map(div => [div.dataset.roi, div]));
    for (const roi of this.rois) {
      let div = existing.get(roi.name);
      existing.delete(roi.name);
      if (!div) {
        div = document.createElement("div");
        div.className = "roi-box";
        div.dataset.roi = roi.name;
        const tag = document.createElement("label");
        tag.className = "roi-tag";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.className = "roi-include";
        box.dataset.roi = roi.name;
        box.title = "Add this ROI to the training set";
        box.addEventListener("change", () => this.setIncluded(roi.name, box.checked));
        tag.append(box, document.createTextNode(roi.name));
        div.append(tag);
        host.append(div);
      }
      const a = this.toScreen(roi.rect.x, roi.rect.y);
      div.style.left = `${a.x}px`;
      div.style.top = `${a.y}px`;
      div.style.width = `${roi.rect.width * this.view.scale}px`;
      div.style.height = `${roi.rect.height * this.view.scale}px`;
      const included = this.labels.get(roi.name)?.includeInTraining ?? false;
      div.classList.toggle("included", included);
      div.querySelector("input").checked = included;
    }
    for (const div of existing.values()) div.remove();
  }

  roiAt(x, y) {
    return this.rois.find(r => x >= r.rect.x && y >= r.rect.y && x < r.rect.x + r.rect.width && y < r.rect.y + r.rect.height);
  }

  // MARK: Tools

  setTool(tool) {
    this.tool = tool;
    if (tool === "wand") this.prepareWand();
    this.el.wrap.style.cursor = tool === "pan" ? "grab" : tool === "wand" ? "crosshair" : "none";
    this.onChange();
  }

  installEvents() {
    const wrap = this.el.wrap;
    wrap.addEventListener("wheel", event => {
      event.preventDefault();
      const box = this.canvas.getBoundingClientRect();
      this.zoom(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
    }, { passive: false });
    wrap.addEventListener("pointerdown", event => this.pointerDown(event));
    wrap.addEventListener("pointermove", event => this.pointerMove(event));
    wrap.addEventListener("pointerup", event => this.pointerUp(event));
    wrap.addEventListener("pointercancel", event => this.pointerUp(event));
    wrap.addEventListener("pointerleave", () => this.drawCursor(null));
  }

  pointerDown(event) {
    if (!this.image || event.button !== 0) return;
    if (event.target.closest?.(".roi-tag")) return;
    const p = this.toImage(event.clientX, event.clientY);
    if (this.tool === "pan" || event.shiftKey) {
      this.panning = { x: event.clientX, y: event.clientY, ox: this.view.ox, oy: this.view.oy };
      try { this.el.wrap.setPointerCapture(event.pointerId); } catch (_) { /* a synthetic pointer */ }
      this.el.wrap.style.cursor = "grabbing";
      return;
    }
    const roi = this.roiAt(p.x, p.y);
    if (!roi) { notify("Paint inside an ROI rectangle (set them up on the Recipe setup tab).", "info"); return; }
    this.activeROI = roi.name;
    this.onChange();
    if (this.tool === "wand") { this.wand(roi, p); return; }
    if (this.tool !== "brush" && this.tool !== "eraser") return;
    if (this.tool === "brush" && !this.classes.some(c => c.index === this.brushClass)) {
      notify("Define a defect class first (Recipe setup).", "info");
      return;
    }
    try { this.el.wrap.setPointerCapture(event.pointerId); } catch (_) { /* a synthetic pointer */ }
    this.stroke = { roi, tool: this.tool, classIndex: this.brushClass, radius: this.brushSize / 2, points: [[p.x, p.y]] };
    this.paintSegment(p, p);
  }

  pointerMove(event) {
    if (this.panning) {
      this.view.ox = this.panning.ox + event.clientX - this.panning.x;
      this.view.oy = this.panning.oy + event.clientY - this.panning.y;
      this.layoutBoxes();
      this.dirty = true;
      return;
    }
    this.drawCursor(event);
    if (!this.stroke) return;
    // Coalesced events keep fast strokes smooth on high-rate pointers.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const q = this.toImage(e.clientX, e.clientY);
      const last = this.stroke.points[this.stroke.points.length - 1];
      if (Math.hypot(q.x - last[0], q.y - last[1]) < 0.5) continue;
      this.paintSegment({ x: last[0], y: last[1] }, q);
      this.stroke.points.push([q.x, q.y]);
    }
  }

  pointerUp(event) {
    if (this.panning) {
      this.panning = null;
      this.el.wrap.style.cursor = "grab";
      return;
    }
    if (!this.stroke) return;
    const stroke = this.stroke;
    this.stroke = null;
    try { this.el.wrap.releasePointerCapture(event.pointerId); } catch (_) { /* already released */ }
    this.sendStroke(stroke);
  }

  /// Draws one piece of the stroke into the overlay, clipped to its ROI: what the agent will paint.
  paintSegment(a, b) {
    const ctx = this.overlayCtx;
    const r = this.stroke.roi.rect;
    ctx.save();
    ctx.beginPath();
    ctx.rect(r.x, r.y, r.width, r.height);
    ctx.clip();
    ctx.globalCompositeOperation = this.stroke.tool === "eraser" ? "destination-out" : "source-over";
    const [cr, cg, cb] = this.colorOf(this.stroke.classIndex);
    ctx.strokeStyle = ctx.fillStyle = `rgb(${cr},${cg},${cb})`;
    ctx.lineCap = "round";
    ctx.lineWidth = this.stroke.radius * 2;
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x + (a.x === b.x && a.y === b.y ? 0.01 : 0), b.y);
    ctx.stroke();
    ctx.restore();
    const pad = this.stroke.radius + 1;
    const d = this.damage ?? { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
    this.damage = {
      x0: Math.max(r.x, Math.min(d.x0, a.x - pad, b.x - pad)), y0: Math.max(r.y, Math.min(d.y0, a.y - pad, b.y - pad)),
      x1: Math.min(r.x + r.width, Math.max(d.x1, a.x + pad, b.x + pad)), y1: Math.min(r.y + r.height, Math.max(d.y1, a.y + pad, b.y + pad)),
    };
  }

  drawCursor(event) {
    const ctx = this.cursorCtx;
    ctx.clearRect(0, 0, this.cursor.width, this.cursor.height);
    if (!event || !this.image || (this.tool !== "brush" && this.tool !== "eraser")) return;
    const box = this.canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    const radius = Math.max(1, (this.brushSize / 2) * this.view.scale);
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, Math.PI * 2);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = this.tool === "eraser" ? "#ffffff" : "#ffd400";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x, y, radius + 1.5, 0, Math.PI * 2);
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  /// Queues an edit so edits reach the agent in the order they were made.
  enqueue(work) {
    this.pending = this.pending.then(work).catch(error => notify(error.message));
    return this.pending;
  }

  // MARK: Suggested labels

  /// Asks the agent for the installed model's labels of the active ROI and
  /// shows them as a proposal: nothing is stored until it is accepted.
  suggest() {
    if (!this.capture || !this.activeROI) { notify("Choose a capture and an ROI first.", "info"); return; }
    const number = this.capture.number, name = this.activeROI;
    const roi = this.rois.find(r => r.name === name);
    return this.enqueue(async () => {
      const result = await api("POST", `/api/v1/captures/${number}/rois/${name}/suggestion`, {});
      const mask = (await maskFromBase64(result.maskPNG)).classes;
      if (this.capture?.number !== number) return;
      this.proposals.set(name, { mask, rect: roi.rect, modelVersion: result.modelVersion });
      this.paintProposals();
      this.onChange();
      notify(`Suggestion from model ${result.modelVersion}: ${result.labelledPixels} pixels in ${name}. Accept, edit (any tool accepts it first) or reject.`, "info");
    });
  }

  /// Stores the proposal for ROI `name` as its mask (logged as a suggestion).
  acceptSuggestion(name = this.activeROI) {
    if (!this.proposals.has(name)) return Promise.resolve();
    const number = this.capture.number;
    this.proposals.delete(name);
    this.paintProposals();
    return this.enqueue(async () => {
      const before = this.labels.get(name)?.maskSHA256 ?? null;
      const label = await api("POST", `/api/v1/captures/${number}/rois/${name}/suggestion/accept`, {});
      await this.edited(number, name, before, label);
      notify(`Suggestion accepted in ${name}: ${label.labelledPixels} labelled pixels`, "info");
    });
  }

  /// Drops the proposal for ROI `name`; the stored mask stays as it was.
  rejectSuggestion(name = this.activeROI) {
    if (!this.proposals.has(name)) return Promise.resolve();
    const number = this.capture.number;
    this.proposals.delete(name);
    this.paintProposals();
    this.onChange();
    return this.enqueue(async () => {
      await api("DELETE", `/api/v1/captures/${number}/rois/${name}/suggestion`);
    });
  }

  paintProposals() {
    const ctx = this.proposalCtx;
    ctx.clearRect(0, 0, this.proposalCanvas.width, this.proposalCanvas.height);
    for (const p of this.proposals.values()) {
      const { x, y, width, height } = p.rect;
      const pixels = ctx.createImageData(width, height);
      for (let i = 0; i < p.mask.length; i++) {
        if (p.mask[i] === 0) continue;
        const c = this.colorOf(p.mask[i]);
        pixels.data[i * 4] = c[0]; pixels.data[i * 4 + 1] = c[1]; pixels.data[i * 4 + 2] = c[2]; pixels.data[i * 4 + 3] = 255;
      }
      ctx.putImageData(pixels, x, y);
    }
    this.dirty = true;
  }

  sendStroke(stroke) {
    const number = this.capture.number;
    // Editing a proposal accepts it first.
    if (this.proposals.has(stroke.roi.name)) this.acceptSuggestion(stroke.roi.name);
    const r = stroke.roi.rect;
    const body = {
      strokes: [{
        tool: stroke.tool, classIndex: stroke.classIndex, radius: stroke.radius,
        points: stroke.points.map(([x, y]) => [Math.round((x - r.x) * 100) / 100, Math.round((y - r.y) * 100) / 100]),
      }],
    };
    // Kept for checks (the browser test compares the stored mask with what was sent).
    this.sent.push({ capture: number, roi: stroke.roi.name, stroke: body.strokes[0] });
    return this.enqueue(async () => {
      const before = this.labels.get(stroke.roi.name)?.maskSHA256 ?? null;
      const label = await api("POST", `/api/v1/captures/${number}/rois/${stroke.roi.name}/strokes`, body, { keepalive: true });
      await this.edited(number, stroke.roi.name, before, label);
    });
  }

  /// Asks the agent to compute the wand's features for every ROI of the
  /// capture on the stage, so the first click does not wait for them.
  prepareWand() {
    if (!this.capture) return;
    const number = this.capture.number;
    for (const roi of this.rois) {
      api("POST", `/api/v1/captures/${number}/rois/${roi.name}/wand/prepare`, {}).catch(() => {});
    }
  }

  wand(roi, p) {
    const number = this.capture.number;
    const click = {
      x: Math.min(roi.rect.width - 1, Math.max(0, Math.floor(p.x - roi.rect.x))),
      y: Math.min(roi.rect.height - 1, Math.max(0, Math.floor(p.y - roi.rect.y))),
      classIndex: this.brushClass, tolerance: this.wandTolerance, mode: this.wandMode,
    };
    this.lastWand = { capture: number, roi: roi.name, ...click };
    if (this.proposals.has(roi.name)) this.acceptSuggestion(roi.name);
    return this.enqueue(async () => {
      const before = this.labels.get(roi.name)?.maskSHA256 ?? null;
      // The first click on an ROI may wait for its features: say so.
      const slow = setTimeout(() => notify(`AI wand: preparing ${roi.name}…`, "info"), 250);
      let result;
      try { result = await api("POST", `/api/v1/captures/${number}/rois/${roi.name}/wand`, click); } finally { clearTimeout(slow); }
      await this.edited(number, roi.name, before, result.label);
      notify(`AI wand: ${result.selectedPixels} similar pixels ${this.wandMode === "add" ? "labelled" : "unlabelled"} in ${roi.name}`, "info");
    });
  }

  /// Mask tools (fill-holes, grow, shrink, remove-specks) on the active ROI.
  maskTool(tool) {
    if (!this.capture || !this.activeROI) { notify("Choose a capture and an ROI first.", "info"); return; }
    const number = this.capture.number, name = this.activeROI;
    if (this.proposals.has(name)) this.acceptSuggestion(name);
    return this.enqueue(async () => {
      const before = this.labels.get(name)?.maskSHA256 ?? null;
      const label = await api("POST", `/api/v1/captures/${number}/rois/${name}/mask/tool`, { tool, radius: 2, minimumArea: 30 });
      await this.edited(number, name, before, label);
    });
  }

  async edited(number, roiName, before, label) {
    if (!this.capture || this.capture.number !== number) return;
    if (before !== label.maskSHA256) {
      this.undoStack.push({ number, roi: roiName, before, after: label.maskSHA256 });
      if (this.undoStack.length > 200) this.undoStack.shift();
      this.redoStack = [];
    }
    await this.reloadMask(roiName, label);
    this.layoutBoxes();
    this.onChange();
    // Every edit's answer carries its labelling check.
    this.showCheck(roiName, label.check);
  }

  async check(roiName) {
    const number = this.capture.number;
    const result = await api("GET", `/api/v1/captures/${number}/rois/${roiName}/mask/check`);
    if (this.capture?.number !== number) return;
    this.showCheck(roiName, result);
  }

  showCheck(roiName, result) {
    if (result.thin.length) this.thin.set(roiName, result.thin); else this.thin.delete(roiName);
    this.dirty = true;
    const lines = [];
    for (const [name, regions] of this.thin) {
      const widest = Math.max(...regions.map(r => r.inscribedRadius));
      lines.push(`ROI ${name}: ${regions.length} painted region${regions.length > 1 ? "s" : ""} under a ${result.minimumRadius} px radius (thickest ${widest.toFixed(1)} px). Overdraw them.`);
    }
    this.el.flags.textContent = lines.join(" ");
  }

  undo() { return this.step(this.undoStack, this.redoStack, "undo"); }
  redo() { return this.step(this.redoStack, this.undoStack, "redo"); }

  step(from, to, action) {
    const entry = from.pop();
    if (!entry) return Promise.resolve();
    return this.enqueue(async () => {
      const target = action === "undo" ? entry.before : entry.after;
      const label = await api("PUT", `/api/v1/captures/${entry.number}/rois/${entry.roi}/mask/revert`, { maskSHA256: target, action });
      to.push(entry);
      if (this.capture?.number === entry.number) {
        await this.reloadMask(entry.roi, label);
        this.layoutBoxes();
        this.showCheck(entry.roi, label.check);
      }
      this.onChange();
    });
  }

  async setIncluded(roiName, include) {
    const number = this.capture.number;
    await this.enqueue(async () => {
      const label = await api("PUT", `/api/v1/captures/${number}/rois/${roiName}/include`, { include });
      if (this.capture?.number !== number) return;
      const known = this.labels.get(roiName);
      if (known && known.maskSHA256 === label.maskSHA256) Object.assign(known, label); else await this.reloadMask(roiName, label);
      this.layoutBoxes();
      this.onChange();
    });
  }

  clear() {
    this.loadToken++;
    this.capture = null;
    this.image = null;
    this.ready = null;
    this.labels = new Map();
    this.thin = new Map();
    this.el.flags.textContent = "";
    this.layoutBoxes();
    this.dirty = true;
  }
}
