// Loupe Label & Train: the page shell. Sign-in, captures and navigation,
// training, live preview mode and its threshold, "View All ROIs", keyboard
// shortcuts. Everything goes through the agent's API (/api/v1, see
// docs/agent-api.md) with the session cookie set at sign-in.

import { LabelEditor } from "./editor.js";
import { RecipeEditor } from "./recipe.js";

const $ = id => document.getElementById(id);

// MARK: Shared helpers

/// Calls the agent. JSON in and out unless `raw` (answer as a Blob) or a Blob/File body.
export async function api(method, path, body = null, options = {}) {
  const init = { method, credentials: "same-origin", headers: {}, keepalive: options.keepalive ?? false };
  if (body instanceof Blob) {
    init.body = body;
    init.headers["Content-Type"] = body.type || "application/octet-stream";
    if (options.filename) init.headers["X-Loupe-Filename"] = options.filename;
  } else if (body !== null) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401 && !path.endsWith("/login")) {
    showLogin("Your session has ended; sign in again.");
    throw new Error("not signed in");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const text = await response.text();
      try {
        const json = JSON.parse(text);
        message = json.error?.message ?? json.message ?? text;
      } catch (_) { if (text) message = text; }
    } catch (_) { /* no body */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  if (options.raw) return response.blob();
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/// An ROI's stored mask: its class index per pixel (`classes`), and the
/// canvas it was decoded on. The PNG is 8-bit grey; no colour conversion.
export async function fetchMask(captureNumber, roiName) {
  return decodeMask(await api("GET", `/api/v1/captures/${captureNumber}/rois/${roiName}/mask`, null, { raw: true }));
}

/// A mask PNG that came base64 in an edit's answer.
export function maskFromBase64(png) {
  const bytes = Uint8Array.from(atob(png), c => c.charCodeAt(0));
  return decodeMask(new Blob([bytes], { type: "image/png" }));
}

/// A mask PNG (8-bit grey class indices) as { classes, canvas }.
async function decodeMask(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const grey = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const classes = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < classes.length; i++) classes[i] = grey[i * 4];
  return { classes, canvas };
}

export function rgbOf(color) {
  return [(color >> 16) & 0xff, (color >> 8) & 0xff, color & 0xff];
}

export function hexOf(color) {
  return "#" + (color & 0xffffff).toString(16).padStart(6, "0");
}

let messageTimer = null;
/// Shows a message under the top bar: errors stay until the next action, notes fade.
export function notify(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
  box.dataset.kind = kind;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 15000 : 5000);
}

function formatSeconds(seconds) {
  if (!isFinite(seconds) || seconds <= 0) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// MARK: State

const state = {
  session: null,
  total: 0,
  current: null,      // capture number on the stage, or null for the live camera
  classes: [],
  recipe: null,
  live: false,
  previewTimer: null,
  liveEvents: null,
  trainingEvents: null,
  resultTimer: null,     // the live results table redraws at most 5 times a second
  thresholdTimer: null,  // one threshold request once the slider settles
};

let editor = null;
let recipeEditor = null;

// MARK: Sign-in

function showLogin(reason = "") {
  stopPreview();
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = reason;
  $("login-password").focus();
}

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("POST", "/api/v1/login", { user: $("login-user").value, password: $("login-password").value });
    $("login-password").value = "";
    await start();
  } catch (error) {
    $("login-error").textContent = error.status === 401 ? "Wrong user name or password." : error.message;
  }
}

async function signOut() {
  try { await api("POST", "/api/v1/logout"); } catch (_) { /* the session may be gone already */ }
  state.liveEvents?.close();
  state.trainingEvents?.close();
  showLogin("Signed out.");
}

// MARK: Start

async function start() {
  try {
    state.session = await api("GET", "/api/v1/session");
  } catch (error) {
    if (error.status === 401 || error.message === "not signed in") { showLogin(); return; }
    throw error;
  }
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("user-name").textContent = state.session.user;
  $("user-role").textContent = state.session.role;
  editor ??= new LabelEditor({
    wrap: $("canvas-wrap"), canvas: $("view-canvas"), cursor: $("cursor-canvas"), boxes: $("roi-boxes"),
    flags: $("flags"), zoomLabel: $("zoom-label"),
  });
  editor.onChange = updateEditorControls;
  recipeEditor ??= new RecipeEditor({ canvas: $("recipe-canvas"), wrap: $("recipe-wrap") }, { reloaded: refreshRecipe });
  window.loupe = { editor, recipeEditor, state, api };
  await refreshRecipe();
  await refreshCaptures();
  await refreshLive();
  // The camera's state (lost, back, its stream counters) without waiting for results.
  state.liveTimer ??= setInterval(() => { if (state.session) refreshLive().catch(() => {}); }, 3000);
  await refreshModel();
  await resumeTraining();
  showLive();
}

async function refreshRecipe() {
  state.recipe = await api("GET", "/api/v1/recipe");
  state.classes = await api("GET", "/api/v1/classes");
  $("recipe-version").textContent = state.recipe.version;
  $("inspection-type").textContent = state.recipe.inspectionType;
  const select = $("brush-class");
  const previous = Number(select.value) || 1;
  select.replaceChildren(...state.classes.map(c => {
    const option = document.createElement("option");
    option.value = c.index;
    option.textContent = `${c.index} · ${c.name}`;
    option.style.color = hexOf(c.color);
    return option;
  }));
  if (state.classes.some(c => c.index === previous)) select.value = previous;
  editor.setRecipe(state.recipe, state.classes);
  editor.brushClass = Number(select.value) || 1;
  if (state.current !== null) await editor.load(state.current);
  recipeEditor?.setRecipe(state.recipe, state.classes);
}

async function refreshCaptures() {
  const list = await api("GET", "/api/v1/captures?limit=1");
  state.total = list.total;
  updateNavigation();
}

async function refreshModel() {
  const shelf = await api("GET", "/api/v1/model");
  $("model-version").textContent = shelf.current?.version ?? "none";
  $("model-report").hidden = !shelf.current;
}

// MARK: Captures and navigation

async function show(number) {
  if (!Number.isInteger(number) || number < 1 || number > state.total) {
    notify(state.total ? `Capture numbers run from 1 to ${state.total}.` : "There are no captures yet.", "info");
    return;
  }
  stopPreview();
  state.current = number;
  updateNavigation();
  $("preview").hidden = true;
  $("canvas-wrap").hidden = false;
  editor.resize();
  if (!(await editor.load(number))) return;
  const c = editor.capture;
  $("stage-caption").textContent = `Capture ${number} of ${state.total} · ${c.width}×${c.height} · ${c.source} · ${new Date(c.capturedAt).toLocaleString()}`;
  $("jump-number").value = number;
  updateNavigation();
}

function showLive() {
  state.current = null;
  editor?.clear();
  $("canvas-wrap").hidden = true;
  $("preview").hidden = false;
  $("stage-caption").textContent = state.live ? "Live Preview Mode: aligner, ROIs and segmenter on the camera" : "Live camera";
  startPreview();
  updateNavigation();
}

function startPreview() {
  stopPreview();
  const img = $("preview");
  if (state.live) {
    img.src = `/api/v1/live/stream.mjpeg?width=960&fps=8&t=${Date.now()}`;
    return;
  }
  const next = () => {
    const url = `/api/v1/camera/frame.jpg?width=960&t=${Date.now()}`;
    const probe = new Image();
    probe.onload = () => { img.src = probe.src; state.previewTimer = setTimeout(next, 250); };
    probe.onerror = () => { state.previewTimer = setTimeout(next, 2000); };
    probe.src = url;
  };
  next();
}

function stopPreview() {
  clearTimeout(state.previewTimer);
  state.previewTimer = null;
  const img = $("preview");
  if (img.src.includes("stream.mjpeg")) img.removeAttribute("src");
}

function updateNavigation() {
  $("capture-count").textContent = state.total ? `${state.total} capture${state.total > 1 ? "s" : ""}` : "No captures yet";
  $("prev").disabled = state.total === 0 || state.current === 1;
  $("next").disabled = state.total === 0 || (state.current !== null && state.current >= state.total);
  $("show-live").disabled = state.current === null;
  $("jump-number").max = state.total || 1;
}

async function capture() {
  try {
    const record = await api("POST", "/api/v1/captures");
    await refreshCaptures();
    await show(record.number);
    notify(`Capture ${record.number} taken.`, "info");
  } catch (error) { notify(`Capture failed: ${error.message}`); }
}

async function importFiles(files) {
  let last = null;
  for (const file of files) {
    try {
      const name = file.name.replace(/[^A-Za-z0-9._-]/g, "_").slice(-64);
      last = await api("POST", "/api/v1/captures/import", file, { filename: name });
    } catch (error) { notify(`${file.name}: ${error.message}`); }
  }
  $("import-file").value = "";
  await refreshCaptures();
  if (last) {
    await show(last.number);
    notify(`Imported ${files.length} image${files.length > 1 ? "s" : ""}; showing capture ${last.number}.`, "info");
  }
}

function go(delta) {
  if (state.total === 0) return;
  const from = state.current ?? (delta > 0 ? 0 : state.total + 1);
  const target = Math.min(state.total, Math.max(1, from + delta));
  if (target !== state.current) return show(target);
}

// MARK: Annotation controls

function updateEditorControls() {
  for (const button of document.querySelectorAll("[data-tool]")) button.classList.toggle("active", button.dataset.tool === editor.tool);
  $("undo").disabled = editor.undoStack.length === 0;
  $("redo").disabled = editor.redoStack.length === 0;
  const select = $("active-roi");
  const names = editor.rois.map(r => r.name);
  if ([...select.options].map(o => o.value).join() !== names.join()) {
    select.replaceChildren(...names.map(n => { const o = document.createElement("option"); o.value = o.textContent = n; return o; }));
  }
  if (editor.activeROI) select.value = editor.activeROI;
  const hasCapture = editor.capture !== null;
  for (const id of ["fill-holes", "grow", "shrink", "remove-specks", "suggest"]) $(id).disabled = !hasCapture;
  const proposed = hasCapture && editor.proposals.has(editor.activeROI);
  $("suggest-accept").disabled = !proposed;
  $("suggest-reject").disabled = !proposed;
}

function setBrushSize(size) {
  size = Math.min(128, Math.max(2, Math.round(size)));
  editor.brushSize = size;
  $("brush-size").value = size;
  $("brush-size-value").textContent = size;
}

// MARK: Training

function augmentation() {
  const flip = $("aug-flip").checked;
  return {
    flipHorizontal: flip, flipVertical: flip,
    rotationDegrees: Number($("aug-rotation").value) || 0,
    brightness: Number($("aug-brightness").value) || 0,
    contrast: Number($("aug-contrast").value) || 0,
  };
}

async function startTraining() {
  const iterations = Number($("iterations").value);
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 10000) {
    notify("Number of Iterations must be a whole number from 1 to 10000.");
    return;
  }
  try {
    const status = await api("POST", "/api/v1/training", { iterations, augmentation: augmentation() });
    showTraining(status);
    followTraining();
  } catch (error) { notify(`Training did not start: ${error.message}`); }
}

function followTraining() {
  state.trainingEvents?.close();
  const events = new EventSource("/api/v1/training/events");
  state.trainingEvents = events;
  events.addEventListener("progress", event => {
    const status = JSON.parse(event.data);
    showTraining(status);
    if (status.state !== "running") {
      events.close();
      refreshModel();
    }
  });
  events.onerror = () => {
    // The stream ended (agent restart); ask once where the job is.
    events.close();
    setTimeout(resumeTraining, 2000);
  };
}

async function resumeTraining() {
  try {
    const status = await api("GET", "/api/v1/training");
    showTraining(status);
    if (status.state === "running") followTraining();
  } catch (error) { if (error.status !== 404) notify(error.message); }
}

// The validation split judged as parts (PartFigures): what the line would have let through and thrown away.
function partFiguresText(parts) {
  const share = (count, total, what) =>
    total > 0 ? `${count} of ${total} ${what} (${(100 * count / total).toFixed(1)} %)` : `no ${what}`;
  return `escapes ${share(parts.escapes, parts.defectiveParts, "defective parts")}, `
    + `false rejects ${share(parts.falseRejects, parts.goodParts, "good parts")} at threshold ${parts.threshold.toFixed(2)}`;
}

function showTraining(status) {
  const running = status.state === "running";
  $("train-start").disabled = running;
  $("train-cancel").disabled = !running;
  const progress = $("train-progress");
  progress.value = status.state === "succeeded" ? 1 : status.fraction;
  $("train-loss").textContent = status.loss > 0 ? status.loss.toFixed(4) : "–";
  $("train-eta").textContent = running ? formatSeconds(status.etaSeconds) : "–";
  let text;
  switch (status.state) {
    case "running":
      text = `${status.phase}${status.passes ? ` · pass ${status.pass}/${status.passes}` : ""} · ${status.trainingImages} ROIs`;
      break;
    case "succeeded":
      text = `Done: model ${status.modelVersion ?? ""}${status.validationMIoU != null ? ` · validation mIoU ${status.validationMIoU.toFixed(3)}` : ""}`
        + (status.parts ? ` · ${partFiguresText(status.parts)}` : "");
      break;
    case "cancelled": text = "Cancelled; the model in use is unchanged."; break;
    default: text = `Failed: ${status.message ?? "see the agent's log"}`;
  }
  $("train-state").textContent = text;
  $("train-state").dataset.state = status.state;
  $("train-report").hidden = status.state !== "succeeded";
}

async function cancelTraining() {
  try { showTraining(await api("POST", "/api/v1/training/cancel")); } catch (error) { notify(error.message); }
}

// MARK: Live preview mode

async function refreshLive() {
  const live = await api("GET", "/api/v1/live");
  applyLive(live);
}

function applyLive(live) {
  state.live = live.live;
  $("live-mode").checked = live.live;
  const slider = $("threshold");
  slider.disabled = !live.live;
  slider.title = live.live ? "" : "Turn on Live Preview Mode to adjust the threshold";
  if (document.activeElement !== slider) {
    slider.value = live.threshold;
    $("threshold-value").textContent = Number(live.threshold).toFixed(2);
  }
  // Where the running model's defect IoU peaked on its validation split: a mark on the slider, and a way to take it.
  const calibrated = live.calibratedThreshold;
  state.calibratedThreshold = calibrated ?? null;
  $("threshold-calibrated").hidden = calibrated == null;
  $("threshold-marks").replaceChildren(...(calibrated == null ? [] : [new Option("", calibrated)]));
  if (calibrated != null) {
    $("threshold-calibrated-text").textContent =
      `Calibrated threshold of model ${live.modelVersion}: ${calibrated.toFixed(2)} (its best defect IoU on validation)`;
    $("threshold-use-calibrated").disabled = !live.live || Math.abs(calibrated - live.threshold) < 0.005;
  }
  let summary = `${live.framesPerSecond.toFixed(1)} fps · pass ${live.passCount} · fail ${live.failCount} · model ${live.modelVersion || "none"}`;
  const camera = live.camera;
  if (camera) {
    summary += ` · ${camera.pixelFormat}, ${camera.incompleteFrames} incomplete frames, ${camera.missingPackets} packets missing, ${camera.reconnects} reconnections`;
  }
  $("live-summary").textContent = summary;
  // Why the camera gives no frames ("camera lost: …"), until it streams again.
  const problem = $("camera-problem");
  problem.hidden = !live.sourceError;
  problem.textContent = live.sourceError || "";
  showLine(live.line);
  if (live.live && !state.liveEvents) {
    const events = new EventSource("/api/v1/live/events");
    state.liveEvents = events;
    let pending = null;
    events.addEventListener("result", event => {
      pending = JSON.parse(event.data);
      if (!state.resultTimer) state.resultTimer = setTimeout(() => { state.resultTimer = null; showResult(pending); }, 200);
    });
  } else if (!live.live && state.liveEvents) {
    state.liveEvents.close();
    state.liveEvents = null;
  }
}

async function setLiveMode(on) {
  try {
    applyLive(await api("PUT", "/api/v1/live", { live: on }));
    if (state.current === null || on) showLive();
  } catch (error) {
    $("live-mode").checked = !on;
    notify(error.message);
  }
}

async function setThreshold(value) {
  try {
    applyLive(await api("PUT", "/api/v1/live", { threshold: value }));
    state.recipe = await api("GET", "/api/v1/recipe");
    $("recipe-version").textContent = state.recipe.version;
  } catch (error) { notify(error.message); }
}

function showResult(result) {
  const body = $("live-results").tBodies[0];
  const rows = result.rois.map(roi => {
    const tr = document.createElement("tr");
    const area = roi.defects.reduce((sum, d) => sum + d.area, 0);
    const verdict = result.verdict === "no-model" ? "no model" : roi.passed ? "PASS" : "FAIL";
    for (const text of [roi.name, `${area} px`, roi.maxConfidence.toFixed(2), verdict]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.lastChild.className = result.verdict === "no-model" ? "muted" : roi.passed ? "pass" : "fail";
    return tr;
  });
  if (result.verdict === "not-aligned") {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.textContent = `Part not found (alignment score ${result.alignScore?.toFixed(2) ?? "–"})`;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

// The line links (docs/line-integration.md), when the agent's config has them.
function showLine(line) {
  const element = $("line-status");
  const parts = [];
  if (line && line.modbus) {
    const modbus = line.modbus;
    parts.push(`Modbus ${modbus.address || "starting"} · ${modbus.clients} connected · ${modbus.requests} requests`);
  }
  if (line && line.mqtt) {
    const mqtt = line.mqtt;
    let text = `MQTT ${mqtt.broker} ${mqtt.connected ? "connected" : "not connected"} · ${mqtt.published} published · ${mqtt.pending} waiting`;
    if (mqtt.dropped) text += ` · ${mqtt.dropped} dropped (outbox full)`;
    if (mqtt.triggersTaken || mqtt.triggersMissed || mqtt.triggersMalformed) {
      text += ` · triggers ${mqtt.triggersTaken} taken, ${mqtt.triggersMissed} missed, ${mqtt.triggersMalformed} malformed`;
    }
    if (!mqtt.connected && mqtt.lastError) text += ` (${mqtt.lastError})`;
    parts.push(text);
  }
  element.hidden = parts.length === 0;
  element.textContent = parts.length ? "Line: " + parts.join(" | ") : "";
  element.classList.toggle("error", Boolean(line && line.mqtt && !line.mqtt.connected));
}

// MARK: The camera's Library

async function openLibrary() {
  $("library-dialog").showModal();
  await fillLibrary();
}

/// The kept frames, the ones worth labelling first ("Review": the model was
/// unsure) unless another filter is chosen; a tile's Import brings the frame
/// into labelling as the next capture.
async function fillLibrary() {
  const grid = $("library-grid");
  const filter = $("library-filter").value;
  const query = new URLSearchParams({ limit: "200" });
  if (filter === "review") query.set("review", "true");
  if (filter === "fail" || filter === "pass") query.set("verdict", filter);
  const className = $("library-class").value.trim();
  if (className) query.set("class", className);
  let listing;
  try { listing = await api("GET", `/api/v1/library?${query}`); } catch (error) { grid.textContent = error.message; return; }
  $("library-usage").textContent = `${listing.kept} frames kept (${listing.unsure} unsure), ${(listing.bytes / 1048576).toFixed(1)} of ${(listing.quotaBytes / 1048576).toFixed(0)} MB`;
  grid.replaceChildren();
  if (listing.frames.length === 0) {
    grid.textContent = filter === "review" ? "No frame the model was unsure about." : "No frames kept yet.";
    return;
  }
  for (const frame of listing.frames) {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.frame = frame.id;
    const image = document.createElement("img");
    image.loading = "lazy";
    image.alt = `Library frame ${frame.id}`;
    image.src = `/api/v1/library/${frame.id}/image`;
    const caption = document.createElement("figcaption");
    const when = new Date(frame.capturedAt).toLocaleString();
    const unsure = frame.unsure > 0 ? ` · unsure ${Math.round(frame.unsure * 100)} %` : "";
    const classes = frame.classes.length ? ` · ${frame.classes.join(", ")}` : "";
    caption.textContent = `${when} · ${frame.verdict.toUpperCase()} (${frame.reason})${unsure}${classes}`;
    const button = document.createElement("button");
    button.textContent = frame.importedAs ? `Capture ${frame.importedAs}` : "Import";
    button.className = "library-import";
    button.addEventListener("click", async () => {
      if (frame.importedAs) { $("library-dialog").close(); await show(frame.importedAs); return; }
      try {
        const record = await api("POST", `/api/v1/library/${frame.id}/import`);
        $("library-dialog").close();
        await refreshCaptures();
        await show(record.number);
        notify(`Library frame ${frame.id} imported as capture ${record.number}.`, "info");
      } catch (error) { notify(`Import from the Library failed: ${error.message}`); }
    });
    tile.append(image, caption, button);
    grid.append(tile);
  }
}

// MARK: View All ROIs

async function openAllROIs() {
  $("all-rois-dialog").showModal();
  await fillAllROIs();
}

async function fillAllROIs() {
  const grid = $("all-rois-grid");
  grid.replaceChildren();
  const labels = await api("GET", `/api/v1/labels${$("all-included-only").checked ? "?included=true" : ""}`);
  if (labels.length === 0) {
    grid.textContent = "No labelled ROIs yet.";
    return;
  }
  const images = new Map();
  const colours = new Map(state.classes.map(c => [c.index, rgbOf(c.color)]));
  for (const { capture, label } of labels) {
    const tile = document.createElement("figure");
    tile.className = "tile" + (label.includeInTraining ? " included" : "");
    tile.dataset.capture = capture;
    tile.dataset.roi = label.roi;
    const canvas = document.createElement("canvas");
    canvas.width = label.rect.width;
    canvas.height = label.rect.height;
    const caption = document.createElement("figcaption");
    caption.textContent = `#${capture} · ${label.roi} · ${label.labelledPixels} px${label.includeInTraining ? " · ticked" : ""}`;
    tile.append(canvas, caption);
    tile.addEventListener("click", () => { $("all-rois-dialog").close(); show(capture); });
    grid.append(tile);
    if (!images.has(capture)) images.set(capture, api("GET", `/api/v1/captures/${capture}/image`, null, { raw: true }).then(b => createImageBitmap(b)));
    Promise.all([images.get(capture), fetchMask(capture, label.roi)])
      .then(([image, mask]) => {
        // Recolour the decoded mask in place: class colours, background clear.
        const scratch = mask.canvas;
        const sctx = scratch.getContext("2d", { willReadFrequently: true });
        const pixels = sctx.createImageData(scratch.width, scratch.height);
        mask.classes.forEach((value, i) => {
          const c = colours.get(value);
          if (value === 0 || !c) return;
          pixels.data[i * 4] = c[0]; pixels.data[i * 4 + 1] = c[1]; pixels.data[i * 4 + 2] = c[2]; pixels.data[i * 4 + 3] = 255;
        });
        sctx.putImageData(pixels, 0, 0);
        canvas.draw = () => {
          const ctx = canvas.getContext("2d");
          ctx.globalAlpha = 1;
          ctx.drawImage(image, label.rect.x, label.rect.y, label.rect.width, label.rect.height, 0, 0, label.rect.width, label.rect.height);
          ctx.globalAlpha = Number($("all-opacity").value);
          ctx.drawImage(scratch, 0, 0);
          ctx.globalAlpha = 1;
        };
        canvas.draw();
        tile.dataset.ready = "true";
      })
      .catch(error => { caption.textContent += ` (${error.message})`; });
  }
}

function redrawAllROIs() {
  $("all-opacity-value").textContent = Number($("all-opacity").value).toFixed(2);
  for (const canvas of $("all-rois-grid").querySelectorAll("canvas")) canvas.draw?.();
}

// MARK: Tabs

function showTab(name) {
  $("tab-label").classList.toggle("active", name === "label");
  $("tab-recipe").classList.toggle("active", name === "recipe");
  $("label-view").hidden = name !== "label";
  $("recipe-view").hidden = name !== "recipe";
  if (name === "recipe") {
    stopPreview();
    recipeEditor.show(state.current ?? state.recipe.referenceCapture ?? (state.total || null));
  } else if (state.current === null) {
    showLive();
  } else {
    editor.resize();
  }
}

// MARK: Wiring

function wire() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", signOut);
  $("tab-label").addEventListener("click", () => showTab("label"));
  $("tab-recipe").addEventListener("click", () => showTab("recipe"));

  $("capture").addEventListener("click", capture);
  $("import-file").addEventListener("change", event => importFiles([...event.target.files]));
  $("prev").addEventListener("click", () => go(-1));
  $("next").addEventListener("click", () => go(1));
  $("jump").addEventListener("click", () => show(Number($("jump-number").value)));
  $("jump-number").addEventListener("keydown", event => { if (event.key === "Enter") show(Number(event.target.value)); });
  $("show-live").addEventListener("click", showLive);
  $("view-all").addEventListener("click", openAllROIs);
  $("open-library").addEventListener("click", openLibrary);
  $("library-close").addEventListener("click", () => $("library-dialog").close());
  $("library-filter").addEventListener("change", fillLibrary);
  $("library-class").addEventListener("change", fillLibrary);
  $("all-rois-close").addEventListener("click", () => $("all-rois-dialog").close());
  $("all-opacity").addEventListener("input", redrawAllROIs);
  $("all-included-only").addEventListener("change", fillAllROIs);

  for (const button of document.querySelectorAll("[data-tool]")) button.addEventListener("click", () => editor.setTool(button.dataset.tool));
  $("brush-class").addEventListener("change", event => { editor.brushClass = Number(event.target.value); });
  $("brush-size").addEventListener("input", event => setBrushSize(Number(event.target.value)));
  $("wand-tolerance").addEventListener("input", event => {
    editor.wandTolerance = Number(event.target.value);
    $("wand-tolerance-value").textContent = editor.wandTolerance.toFixed(2);
  });
  $("wand-mode").addEventListener("change", event => { editor.wandMode = event.target.value; });
  $("show-annotations").addEventListener("change", event => { editor.showAnnotations = event.target.checked; editor.dirty = true; });
  $("opacity").addEventListener("input", event => {
    editor.opacity = Number(event.target.value);
    $("opacity-value").textContent = editor.opacity.toFixed(2);
    editor.dirty = true;
  });
  $("undo").addEventListener("click", () => editor.undo());
  $("redo").addEventListener("click", () => editor.redo());
  $("active-roi").addEventListener("change", event => { editor.activeROI = event.target.value; editor.onChange(); });
  $("fill-holes").addEventListener("click", () => editor.maskTool("fill-holes"));
  $("grow").addEventListener("click", () => editor.maskTool("grow"));
  $("shrink").addEventListener("click", () => editor.maskTool("shrink"));
  $("remove-specks").addEventListener("click", () => editor.maskTool("remove-specks"));
  $("suggest").addEventListener("click", () => editor.suggest());
  $("suggest-accept").addEventListener("click", () => editor.acceptSuggestion());
  $("suggest-reject").addEventListener("click", () => editor.rejectSuggestion());

  $("train-start").addEventListener("click", startTraining);
  $("train-cancel").addEventListener("click", cancelTraining);

  $("live-mode").addEventListener("change", event => setLiveMode(event.target.checked));
  $("threshold").addEventListener("input", event => { $("threshold-value").textContent = Number(event.target.value).toFixed(2); });
  $("threshold-use-calibrated").addEventListener("click", () => {
    if (state.calibratedThreshold != null) setThreshold(state.calibratedThreshold);
  });
  // One request when the operator lets go (or stops pressing keys), not one per step.
  $("threshold").addEventListener("change", event => {
    clearTimeout(state.thresholdTimer);
    state.thresholdTimer = setTimeout(() => setThreshold(Number(event.target.value)), 300);
  });

  document.addEventListener("keydown", event => {
    if (!editor || $("app-view").hidden || $("label-view").hidden) return;
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "checkbox" && target.type !== "range" || target instanceof HTMLSelectElement) return;
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); event.shiftKey ? editor.redo() : editor.undo(); return; }
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "y") { event.preventDefault(); editor.redo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    switch (event.key) {
      case "b": case "B": editor.setTool("brush"); break;
      case "e": case "E": editor.setTool("eraser"); break;
      case "a": case "A": editor.setTool("wand"); break;
      case "p": case "P": editor.setTool("pan"); break;
      case "[": setBrushSize(editor.brushSize - 2); break;
      case "]": setBrushSize(editor.brushSize + 2); break;
      case "ArrowLeft": event.preventDefault(); go(-1); break;
      case "ArrowRight": event.preventDefault(); go(1); break;
      default: return;
    }
  });

  // The live summary and the model version, every few seconds.
  setInterval(() => {
    if ($("app-view").hidden) return;
    api("GET", "/api/v1/live").then(applyLive).catch(() => {});
  }, 3000);
}

wire();
start().catch(error => notify(error.message));
