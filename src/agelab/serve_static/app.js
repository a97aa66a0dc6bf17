// agelab serve: the page. Plain JavaScript, no libraries; every request goes to this server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
let INFO = null;

// ---- requests -------------------------------------------------------------------------------
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server did not answer (" + err.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail;
    throw new Error(typeof detail === "string" ? detail : `${response.status} ${response.statusText}`);
  }
  return body;
}

function postForm(path, fields) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (value === null || value === undefined) continue;
    if (Array.isArray(value)) value.forEach((v) => form.append(key, String(v)));
    else if (value instanceof File) form.append(key, value, value.name);
    else form.append(key, String(value));
  }
  return api(path, { method: "POST", body: form });
}

function dataUrlToBlob(url) {
  const [head, data] = url.split(",");
  const bytes = atob(data);
  const array = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) array[i] = bytes.charCodeAt(i);
  return new File([array], "input.png", { type: head.slice(5).split(";")[0] });
}

// run `task` with the panel's message line cleared first and filled with the error, if any
async function guarded(msgEl, button, task) {
  msgEl.textContent = "";
  if (button) button.disabled = true;
  document.body.classList.add("busy");
  try {
    return await task();
  } catch (err) {
    msgEl.textContent = err.message;
    return null;
  } finally {
    if (button) button.disabled = false;
    document.body.classList.remove("busy");
  }
}

const seconds = (s) => (typeof s === "number" ? `${(s * 1000).toFixed(0)} ms on the server` : "");
const randomSeed = () => Math.floor(Math.random() * 2147483647);

function img(src, alt, cls) {
  const el = document.createElement("img");
  el.src = src;
  el.alt = alt || "";
  if (cls) el.className = cls;
  return el;
}

// ---- image pickers: an upload or a test-split index ----------------------------------------
class Picker {
  constructor(slot, onChange, msgEl) {
    this.node = $("picker-template").content.firstElementChild.cloneNode(true);
    this.node.querySelector("legend").textContent = slot.dataset.label;
    slot.appendChild(this.node);
    this.fileInput = this.node.querySelector(".file");
    this.indexInput = this.node.querySelector(".index");
    this.preview = this.node.querySelector(".preview");
    this.source = this.node.querySelector(".source");
    this.thumbs = this.node.querySelector(".thumbs");
    this.onChange = onChange;
    this.msgEl = msgEl;
    this.file = null;
    this.index = null;
    this.thumbStart = 0;
    this.fileInput.addEventListener("change", () => this.pickFile());
    this.indexInput.addEventListener("change", () => this.pickIndex(parseInt(this.indexInput.value, 10)));
    this.node.querySelector(".random").addEventListener("click", () => {
      this.pickIndex(Math.floor(Math.random() * INFO.test.count));
    });
    this.node.querySelector(".browse").addEventListener("click", () => this.toggleThumbs());
    Picker.all.push(this);
    this.updateTestState();
  }

  updateTestState() {
    const test = INFO.test;
    const ready = test.state === "ready";
    this.node.querySelector(".test-pick").hidden = !ready;
    const off = this.node.querySelector(".test-off");
    off.hidden = ready;
    off.textContent = test.state === "loading" ? "(the test split is loading…)" : `(${test.reason || ""})`;
    if (ready) this.indexInput.max = String(test.count - 1);
  }

  pickFile() {
    const file = this.fileInput.files[0];
    if (!file) return;
    if (file.size > INFO.limits.max_upload_bytes) {
      this.msgEl.textContent = `${file.name} is ${(file.size / 1048576).toFixed(1)} MB, over the upload limit ` +
        `of ${(INFO.limits.max_upload_bytes / 1048576).toFixed(0)} MB`;
      this.fileInput.value = "";
      return;
    }
    this.msgEl.textContent = "";
    this.file = file;
    this.index = null;
    this.indexInput.value = "";
    this.preview.src = URL.createObjectURL(file);
    this.preview.hidden = false;
    this.source.textContent = file.name;
    this.onChange();
  }

  pickIndex(i) {
    if (!Number.isInteger(i)) return;
    if (INFO.test.state !== "ready" || i < 0 || i >= INFO.test.count) {
      this.msgEl.textContent = INFO.test.state === "ready"
        ? `test image #${i} does not exist: the test split has images 0 to ${INFO.test.count - 1}`
        : "the test split is not available";
      return;
    }
    this.msgEl.textContent = "";
    this.file = null;
    this.fileInput.value = "";
    this.index = i;
    this.indexInput.value = String(i);
    this.preview.src = `/api/test-image/${i}`;
    this.preview.hidden = false;
    this.source.textContent = `test image #${i}`;
    this.onChange();
  }

  async toggleThumbs() {
    this.thumbs.hidden = !this.thumbs.hidden;
    if (!this.thumbs.hidden) await this.showThumbs();
  }

  async showThumbs() {
    const data = await guarded(this.msgEl, null, () => api(`/api/test-images?start=${this.thumbStart}&count=24`));
    if (!data) return;
    this.thumbs.replaceChildren();
    for (const item of data.images) {
      const el = img(item.src, `test image #${item.index}`);
      el.title = `test image #${item.index}`;
      el.addEventListener("click", () => this.pickIndex(item.index));
      this.thumbs.appendChild(el);
    }
    const more = document.createElement("button");
    more.type = "button";
    more.textContent = "more";
    more.addEventListener("click", () => {
      this.thumbStart = (this.thumbStart + 24) % data.total;
      this.showThumbs();
    });
    this.thumbs.appendChild(more);
  }

  ready() { return this.file !== null || this.index !== null; }

  // the form fields for this choice, named `fileField` / `indexField`
  fields(fileField, indexField) {
    return this.file ? { [fileField]: this.file } : { [indexField]: this.index };
  }
}
Picker.all = [];

// ---- tabs --------------------------------------------------------------------------------------
function showTab(name) {
  for (const tab of document.querySelectorAll("#tabs button")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    $("panel-" + tab.dataset.tab).hidden = !on;
  }
}

// ---- Sample ----------------------------------------------------------------------------------
async function showSamples(seed) {
  const n = parseInt($("sample-n").value, 10);
  const data = await guarded($("sample-msg"), $("sample-new"), () => api("/api/sample", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ seed, n }),
  }));
  if (!data) return;
  $("sample-seed").value = String(data.seed);
  const grid = $("sample-grid");
  grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(data.n))}, auto)`;
  grid.replaceChildren(...data.images.map((src, i) => {
    const el = img(src, `sample ${i + 1} of seed ${data.seed}`, "sample");
    el.addEventListener("click", () => {
      grid.querySelectorAll("img.selected").forEach((x) => x.classList.remove("selected"));
      el.classList.add("selected");
      $("sample-large-img").src = src;
      $("sample-large-caption").textContent = `sample ${i + 1} of seed ${data.seed}`;
      $("sample-large").hidden = false;
    });
    return el;
  }));
  grid.dataset.seed = String(data.seed);
  $("sample-large").hidden = true;
  $("sample-time").textContent = seconds(data.seconds);
}

function initSample() {
  $("sample-new").addEventListener("click", () => showSamples(randomSeed()));
  $("sample-show").addEventListener("click", () => {
    const seed = parseInt($("sample-seed").value, 10);
    if (!Number.isInteger(seed) || seed < 0) { $("sample-msg").textContent = "the seed is a whole number ≥ 0"; return; }
    showSamples(seed);
  });
  $("sample-n").addEventListener("change", () => $("sample-show").click());
  showSamples(0);
}

// ---- Reconstruct -------------------------------------------------------------------------------
function initReconstruct() {
  const msg = $("rec-msg");
  const picker = new Picker($("rec-picker"), () => go(), msg);
  async function go() {
    if (!picker.ready()) { msg.textContent = "upload an image or pick a test image first"; return; }
    const data = await guarded(msg, $("rec-go"), () => postForm("/api/reconstruct", picker.fields("image", "index")));
    if (!data) return;
    $("rec-input").src = data.input;
    $("rec-output").src = data.reconstruction;
    $("rec-result").hidden = false;
    $("rec-error").textContent = `reconstruction error: L1 ${data.l1.toFixed(4)}, MSE ${data.mse.toFixed(4)} ` +
      `(pixels in [-1, 1]), PSNR ${data.psnr.toFixed(2)} dB`;
    $("rec-time").textContent = seconds(data.seconds);
  }
  $("rec-go").addEventListener("click", go);
}

// ---- Interpolate -------------------------------------------------------------------------------
function initInterpolate() {
  const msg = $("int-msg");
  let frames = [];
  const a = new Picker($("int-picker-a"), () => { if (b.ready()) go(); }, msg);
  const b = new Picker($("int-picker-b"), () => { if (a.ready()) go(); }, msg);
  function show(i) {
    if (!frames.length) return;
    $("int-frame").src = frames[i];
    $("int-t").textContent = `t = ${(i / (frames.length - 1)).toFixed(3)}`;
    $("int-strip").querySelectorAll("img").forEach((el, j) => el.classList.toggle("selected", j === i));
  }
  async function go() {
    if (!a.ready() || !b.ready()) { msg.textContent = "pick both images first"; return; }
    const steps = parseInt($("int-steps").value, 10);
    const data = await guarded(msg, $("int-go"), () => postForm("/api/interpolate",
      { ...a.fields("image_a", "index_a"), ...b.fields("image_b", "index_b"), steps }));
    if (!data) return;
    frames = data.frames;
    $("int-a").src = data.a;
    $("int-b").src = data.b;
    $("int-strip").replaceChildren(...frames.map((src, i) => {
      const el = img(src, `frame ${i}`, "pick");
      el.addEventListener("click", () => { $("int-slider").value = String(i); show(i); });
      return el;
    }));
    const slider = $("int-slider");
    slider.max = String(frames.length - 1);
    slider.value = String(Math.floor((frames.length - 1) / 2));
    show(parseInt(slider.value, 10));
    $("int-result").hidden = false;
    $("int-time").textContent = seconds(data.seconds);
  }
  $("int-slider").addEventListener("input", () => show(parseInt($("int-slider").value, 10)));
  $("int-go").addEventListener("click", go);
}

// ---- Colorize ---------------------------------------------------------------------------------
function initColorize() {
  const msg = $("col-msg");
  let input = null;  // the model-size input as a PNG blob (what the sliders and the transfer send)
  const dim = INFO.latent_dim;
  const sliders = [];
  const picker = new Picker($("col-picker"), () => go(), msg);

  if (dim <= 8) {
    for (let j = 0; j < dim; j++) {
      const label = document.createElement("label");
      label.textContent = `z${j + 1}`;
      const range = document.createElement("input");
      Object.assign(range, { type: "range", min: "-1", max: "1", step: "0.01", value: "0" });
      range.id = `col-z${j + 1}`;
      const out = document.createElement("output");
      range.addEventListener("input", () => { out.textContent = Number(range.value).toFixed(2); recolor(); });
      label.append(range, out);
      $("col-sliders").appendChild(label);
      sliders.push({ range, out });
    }
  }

  function setSliders(z) {
    sliders.forEach((s, j) => { s.range.value = String(z[j]); s.out.textContent = z[j].toFixed(2); });
  }

  // live recolor: one request at a time, always for the sliders' latest position
  let busy = false, pending = false;
  function recolor() {
    pending = true;
    if (!busy) pump();
  }
  async function pump() {
    busy = true;
    while (pending) {
      pending = false;
      const z = sliders.map((s) => Number(s.range.value));
      const data = await guarded(msg, null, () => postForm("/api/colorize-z", { image: input, z }));
      if (data) {
        $("col-live").src = data.image;
        $("col-z").textContent = "z on the sphere: (" + data.z.map((v) => v.toFixed(3)).join(", ") + ")";
        $("col-z-time").textContent = seconds(data.seconds);
        $("col-live").dataset.z = data.z.join(",");
      }
    }
    busy = false;
  }

  async function go() {
    if (!picker.ready()) { msg.textContent = "upload an image or pick a test image first"; return; }
    const k = parseInt($("col-k").value, 10), seed = parseInt($("col-seed").value, 10);
    const data = await guarded(msg, $("col-go"), () => postForm("/api/colorize",
      { ...picker.fields("image", "index"), k, seed }));
    if (!data) return;
    input = dataUrlToBlob(data.input);
    const strip = $("col-strip");
    const gray = img(data.gray, "the gray input (its lightness L)");
    gray.title = "input lightness L";
    strip.replaceChildren(gray, ...data.colorizations.map((src, i) => {
      const el = img(src, `colorization ${i + 1}`, "pick colorization");
      el.title = "z = (" + data.codes[i].map((v) => v.toFixed(2)).join(", ") + ")";
      el.addEventListener("click", () => {
        strip.querySelectorAll("img.selected").forEach((x) => x.classList.remove("selected"));
        el.classList.add("selected");
        setSliders(data.codes[i]);
        recolor();
      });
      return el;
    }));
    $("col-result").hidden = false;
    $("col-time").textContent = seconds(data.seconds);
    if (sliders.length) {
      $("col-sliders-box").hidden = false;
      strip.querySelector("img.colorization").click();
    }
    $("tr-result").hidden = true;
  }
  $("col-go").addEventListener("click", go);
  $("col-new").addEventListener("click", () => { $("col-seed").value = String(randomSeed()); go(); });

  if (INFO.transfer) {
    $("transfer-box").hidden = false;
    const trMsg = $("tr-msg");
    const source = new Picker($("tr-picker"), () => transferGo(), trMsg);
    async function transferGo() {
      if (!input) { trMsg.textContent = "colorize an image first: it is the target"; return; }
      if (!source.ready()) { trMsg.textContent = "upload or pick the colour source first"; return; }
      const data = await guarded(trMsg, $("tr-go"), () => postForm("/api/transfer",
        { ...source.fields("source", "source_index"), target: input }));
      if (!data) return;
      $("tr-source").src = data.source;
      $("tr-gray").src = data.target_gray;
      $("tr-out").src = data.result;
      $("tr-target").src = data.target;
      $("tr-result").hidden = false;
      $("tr-time").textContent = seconds(data.seconds);
    }
    $("tr-go").addEventListener("click", transferGo);
  }
}

// ---- start -------------------------------------------------------------------------------------
async function pollTestSplit() {
  while (INFO.test.state === "loading") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    try { INFO = await api("/api/info"); } catch (err) { return; }
  }
  Picker.all.forEach((p) => p.updateTestState());
}

async function start() {
  try {
    INFO = await api("/api/info");
  } catch (err) {
    $("page-msg").textContent = "cannot reach the demo server: " + err.message;
    return;
  }
  $("run-name").textContent = INFO.run;
  $("run-info").textContent = `${INFO.model} model, ${INFO.dataset || "unknown dataset"}, ` +
    `${INFO.image_size}×${INFO.image_size} pixels, ${INFO.channels === 1 ? "grayscale" : "RGB"}, ` +
    `latent size ${INFO.latent_dim} (${INFO.prior} prior), checkpoint ${INFO.checkpoint}`;
  $("kind-note").textContent = INFO.tabs.includes("colorize")
    ? "A colorization run: Sample, Reconstruct and Interpolate need an unconditional run (AGE or a baseline)."
    : INFO.tabs.includes("reconstruct")
      ? "An unconditional run: Colorize needs a colorization run (--model cage or pix2pix)."
      : `A ${INFO.model} run has no encoder: samples only (Reconstruct and Interpolate need age, vae or ali).`;
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.hidden = !INFO.tabs.includes(tab.dataset.tab);
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  if (INFO.tabs.includes("sample")) { initSample(); initReconstruct(); initInterpolate(); }
  if (INFO.tabs.includes("colorize")) initColorize();
  showTab(INFO.tabs[0]);
  document.body.dataset.ready = "true";
  pollTestSplit();
}

document.addEventListener("DOMContentLoaded", start);
