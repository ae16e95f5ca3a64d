// spectro-fx live page: scrolling log-frequency spectrograms of the input and the output, the
// region as a box to drag, a control for every parameter the engine declares, MIDI learn.
// Talks only to the server that served it, through the API documented in effect/io/ui/server.py.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const withToken = (path) => `${path}?token=${encodeURIComponent(TOKEN)}`;
const COLUMNS = 480; // spectrogram columns on screen (about 5 s at 94 columns/s)
const HEADER_BYTES = 14; // <BBHHd: kind, reserved, n_columns, n_rows, start_s
const EDGE_PX = 7; // how close to a band edge a press grabs that edge

// what the page knows; window.spectroFx exposes it to tests and curious users
const page = {
  params: {}, // name -> description from /api/state
  values: {}, // name -> value as the engine has it (targets)
  local: {}, // name -> value the user is setting now (wins over `values` until sent)
  view: null, // spectrogram geometry
  grid: null, // codemap geometry
  midi: { available: false, learning: null, bindings: [] },
  streamS: 0, // stream time at the right edge of the spectrograms
  columnsReceived: 0,
  updatesReceived: 0,
  sent: 0,
  connected: false,
};
window.spectroFx = page;

// ------------------------------------------------------------------ colour map (dark -> bright)
const LUT = (() => {
  const stops = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[i * 4 + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
    lut[i * 4 + 3] = 255;
  }
  return lut;
})();

// ------------------------------------------------------------------ spectrogram panels
const panels = ["in", "out"].map((which) => ({
  which,
  spec: document.getElementById(`spec-${which}`),
  over: document.getElementById(`over-${which}`),
}));

function setUpPanels() {
  for (const p of panels) {
    p.spec.width = COLUMNS;
    p.spec.height = page.view.n_rows;
    p.ctx = p.spec.getContext("2d");
    p.ctx.fillStyle = "#000";
    p.ctx.fillRect(0, 0, p.spec.width, p.spec.height);
  }
}

// columns wait here until the next frame that may draw; drawing costs the browser far more
// CPU than receiving, so several messages are drawn at once, at most DRAWS_PER_S times a second
const queued = [];
const DRAWS_PER_S = Number(new URLSearchParams(location.search).get("fps")) || 15;
let lastDraw = 0;

function receiveColumns(buffer) {
  const head = new DataView(buffer, 0, HEADER_BYTES);
  const n = head.getUint16(2, true);
  const rows = head.getUint16(4, true);
  const start = head.getFloat64(6, true);
  if (!page.view || rows !== page.view.n_rows || n === 0) return;
  page.columnsReceived += n;
  if (document.hidden) { // a tab nobody looks at draws nothing (its picture restarts when shown)
    page.streamS = start + n * page.view.column_s;
    queued.length = 0;
    return;
  }
  queued.push({ body: new Uint8Array(buffer, HEADER_BYTES), n, start });
}

function drawColumns() {
  const rows = page.view.n_rows;
  const total = queued.reduce((sum, m) => sum + m.n, 0);
  const shift = Math.min(total, COLUMNS);
  panels.forEach((p, half) => {
    p.ctx.drawImage(p.spec, shift, 0, COLUMNS - shift, rows, 0, 0, COLUMNS - shift, rows);
    const image = p.ctx.createImageData(shift, rows);
    let x = shift - total; // columns older than the screen fall off the left
    for (const m of queued) {
      for (let c = 0; c < m.n; c++, x++) {
        if (x < 0) continue;
        for (let r = 0; r < rows; r++) {
          const level = m.body[half * m.n * rows + c * rows + r];
          const at = ((rows - 1 - r) * shift + x) * 4; // row 0 is the lowest frequency: bottom
          image.data.set(LUT.subarray(level * 4, level * 4 + 4), at);
        }
      }
    }
    p.ctx.putImageData(image, COLUMNS - shift, 0);
  });
  const last = queued[queued.length - 1];
  page.streamS = last.start + last.n * page.view.column_s;
  page.columnsDrawn = (page.columnsDrawn || 0) + total;
  queued.length = 0;
  if (overlayMoves()) overlayDirty = true; // a still overlay is not redrawn: less work for the browser
}

// the overlay scrolls with time only when it shows the gate or the codemap's columns
function overlayMoves() {
  const period = value("period_s") || 0, duty = value("duty") === undefined ? 1 : value("duty");
  const gated = period > 0 && duty < 1;
  const columns = page.grid && (page.grid.column_s / (COLUMNS * page.view.column_s)) * panels[0].over.clientWidth >= 6;
  return gated || columns;
}

// ------------------------------------------------------------------ axes: Hz <-> pixels
function yOfHz(hz, height) {
  const { fmin_hz: lo, fmax_hz: hi } = page.view;
  const f = Math.log(Math.max(hz, lo) / lo) / Math.log(hi / lo);
  return height * (1 - Math.min(Math.max(f, 0), 1));
}
function hzOfY(y, height) {
  const { fmin_hz: lo, fmax_hz: hi } = page.view;
  return lo * Math.pow(hi / lo, 1 - y / height);
}
function xOfTime(t, width) {
  const span = COLUMNS * page.view.column_s;
  return width * (1 - (page.streamS - t) / span);
}

function value(name) {
  return name in page.local ? page.local[name] : page.values[name];
}

// ------------------------------------------------------------------ overlay: grid, region box
let overlayDirty = true;

function drawOverlay(p) {
  const w = p.over.clientWidth, h = p.over.clientHeight;
  const scale = window.devicePixelRatio || 1;
  if (p.over.width !== Math.round(w * scale) || p.over.height !== Math.round(h * scale)) {
    p.over.width = Math.round(w * scale);
    p.over.height = Math.round(h * scale);
  }
  const ctx = p.over.getContext("2d");
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // frequency labels
  ctx.fillStyle = "rgba(255,255,255,0.55)";
  ctx.font = "10px system-ui, sans-serif";
  for (const hz of [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]) {
    if (hz < page.view.fmin_hz || hz > page.view.fmax_hz) continue;
    const y = yOfHz(hz, h);
    ctx.fillRect(0, y, 4, 1);
    ctx.fillText(hz >= 1000 ? `${hz / 1000}k` : `${hz}`, 6, y + 3);
  }
  // codemap grid, faint: rows always, columns where they stay apart
  if (page.grid) {
    ctx.strokeStyle = "rgba(255,255,255,0.13)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    // rows crowd together towards the top of a log axis: draw them up to where they come
    // closer than 5 px (above that a drawn grid would only be a grey wash)
    let lastY = Infinity;
    for (const hz of page.grid.row_edges_hz) {
      if (hz < page.view.fmin_hz) continue;
      const y = Math.round(yOfHz(hz, h)) + 0.5;
      if (lastY - y < 5) break;
      lastY = y;
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
    }
    const colPx = (page.grid.column_s / (COLUMNS * page.view.column_s)) * w;
    if (colPx >= 6) {
      const first = Math.ceil((page.streamS - COLUMNS * page.view.column_s) / page.grid.column_s);
      for (let k = first; k * page.grid.column_s <= page.streamS; k++) {
        const x = Math.round(xOfTime(k * page.grid.column_s, w)) + 0.5;
        ctx.moveTo(x, 0);
        ctx.lineTo(x, h);
      }
    }
    ctx.stroke();
  }
  // the region: band x gate
  const low = value("low_hz"), high = value("high_hz");
  if (low === undefined || high === undefined || !(high > low)) return;
  const yTop = yOfHz(high, h), yBottom = yOfHz(low, h);
  const period = value("period_s") || 0, duty = value("duty") === undefined ? 1 : value("duty");
  const spans = [];
  if (period <= 0 || duty >= 1) {
    spans.push([0, w]);
  } else {
    const t0 = page.streamS - COLUMNS * page.view.column_s;
    for (let k = Math.floor(t0 / period); k * period <= page.streamS; k++) {
      spans.push([xOfTime(k * period, w), xOfTime(k * period + duty * period, w)]);
    }
  }
  ctx.fillStyle = "rgba(63,208,224,0.10)";
  ctx.strokeStyle = "rgba(63,208,224,0.95)";
  ctx.lineWidth = 1.5;
  for (const [a, b] of spans) {
    const x0 = Math.max(a, 0), x1 = Math.min(b, w);
    if (x1 <= x0) continue;
    ctx.fillRect(x0, yTop, x1 - x0, yBottom - yTop);
    ctx.strokeRect(x0 + 0.75, yTop, x1 - x0 - 1.5, yBottom - yTop);
  }
  ctx.fillStyle = "rgba(63,208,224,1)";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`${formatNumber(low)} - ${formatNumber(high)} Hz`, w - 110, Math.max(yTop - 4, 11));
}

function frame(now) {
  if (queued.length && page.view && now - lastDraw >= 1000 / DRAWS_PER_S - 4) {
    lastDraw = now;
    drawColumns();
  }
  if (page.view && overlayDirty) {
    panels.forEach(drawOverlay);
    overlayDirty = false;
  }
  requestAnimationFrame(frame);
}

// dragging the box: its body moves the band (keeping its width in octaves), an edge resizes
// it, a press outside starts a new band at the pointer
let drag = null;

function onPointerDown(event, p) {
  if (!page.view || !("low_hz" in page.params) || !("high_hz" in page.params)) return;
  const rect = p.over.getBoundingClientRect();
  const y = event.clientY - rect.top, h = rect.height;
  const yTop = yOfHz(value("high_hz"), h), yBottom = yOfHz(value("low_hz"), h);
  let mode;
  if (Math.abs(y - yTop) <= EDGE_PX) mode = "high";
  else if (Math.abs(y - yBottom) <= EDGE_PX) mode = "low";
  else if (y > yTop && y < yBottom) mode = "move";
  else mode = "new";
  drag = { mode, p, startY: y, low: value("low_hz"), high: value("high_hz"), anchor: hzOfY(y, h) };
  p.over.setPointerCapture(event.pointerId);
  p.over.classList.add("dragging");
  event.preventDefault();
}

function onPointerMove(event) {
  if (!drag) return;
  const rect = drag.p.over.getBoundingClientRect();
  const h = rect.height;
  const y = Math.min(Math.max(event.clientY - rect.top, 0), h);
  const hz = hzOfY(y, h);
  const lo = page.params.low_hz, hi = page.params.high_hz;
  const clamp = (v, d) => Math.min(Math.max(v, d.minimum), d.maximum);
  let low = drag.low, high = drag.high;
  if (drag.mode === "high") high = Math.max(hz, low * 1.01);
  else if (drag.mode === "low") low = Math.min(hz, high / 1.01);
  else if (drag.mode === "new") { low = Math.min(drag.anchor, hz); high = Math.max(drag.anchor, hz); }
  else {
    const ratio = hzOfY(y, h) / hzOfY(drag.startY, h);
    const floor = lo.minimum / drag.low, ceiling = hi.maximum / drag.high;
    const r = Math.min(Math.max(ratio, floor), ceiling);
    low = drag.low * r;
    high = drag.high * r;
  }
  setParams({ low_hz: round3(clamp(low, lo)), high_hz: round3(clamp(high, hi)) });
}

function onPointerUp() {
  if (!drag) return;
  drag.p.over.classList.remove("dragging");
  drag = null;
}

for (const p of panels) {
  p.over.addEventListener("pointerdown", (e) => onPointerDown(e, p));
  p.over.addEventListener("pointermove", onPointerMove);
  p.over.addEventListener("pointerup", onPointerUp);
  p.over.addEventListener("pointercancel", onPointerUp);
}

// ------------------------------------------------------------------ sending changes
// at most one request in flight; moves made meanwhile are merged and sent when it returns
let pending = {};
let inFlight = false;

function setParams(changes) {
  Object.assign(page.local, changes);
  Object.assign(pending, changes);
  overlayDirty = true;
  for (const name of Object.keys(changes)) showValue(name);
  if (!inFlight) flush();
}

async function flush() {
  const body = pending;
  pending = {};
  if (Object.keys(body).length === 0) return;
  inFlight = true;
  try {
    const reply = await fetch(withToken("/api/params"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await reply.json();
    if (!reply.ok) say(answer.error || `error ${reply.status}`, true);
    else if (answer.message) say(answer.message, true);
    else say("");
    page.sent += 1;
    if (reply.ok) Object.assign(page.values, answer.applied);
  } catch (error) {
    say(`could not reach spectro-fx (${error})`, true);
  } finally {
    for (const name of Object.keys(body)) if (!(name in pending) && !(drag && name.endsWith("_hz"))) delete page.local[name];
    inFlight = false;
    if (Object.keys(pending).length) flush();
  }
}

async function learn(name) {
  const wanted = page.midi.learning === name ? null : name;
  const reply = await fetch(withToken("/api/learn"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ parameter: wanted }),
  });
  const answer = await reply.json();
  if (!reply.ok) return say(answer.error, true);
  say(answer.message);
  page.midi = answer.midi;
  showMidi();
}

// ------------------------------------------------------------------ controls
const controls = {}; // name -> {input, label, button, cc}

function formatNumber(v) {
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(a >= 1 ? 2 : 3);
}

function sliderToValue(d, position) {
  const f = position / 1000;
  let v = d.scale === "log" && d.minimum > 0
    ? d.minimum * Math.pow(d.maximum / d.minimum, f)
    : d.minimum + f * (d.maximum - d.minimum);
  if (d.kind === "int") v = Math.round(v);
  return round3(v);
}
function valueToSlider(d, v) {
  const f = d.scale === "log" && d.minimum > 0
    ? Math.log(v / d.minimum) / Math.log(d.maximum / d.minimum)
    : (v - d.minimum) / (d.maximum - d.minimum || 1);
  return Math.round(1000 * Math.min(Math.max(f, 0), 1));
}
function round3(v) {
  return Math.abs(v) >= 100 ? Math.round(v * 10) / 10 : Math.round(v * 1000) / 1000;
}

function buildControls(parameters) {
  const aside = document.getElementById("controls");
  aside.textContent = "";
  const groups = {};
  for (const d of parameters) {
    const group = d.name.includes(".") ? d.name.split(".")[0] : "region";
    if (!groups[group]) {
      const section = document.createElement("section");
      section.className = "group";
      const title = document.createElement("h2");
      title.textContent = group;
      section.appendChild(title);
      aside.appendChild(section);
      groups[group] = section;
    }
    const row = document.createElement("div");
    row.className = "param";
    row.dataset.name = d.name;
    row.title = d.help;
    const label = document.createElement("label");
    label.textContent = d.name.includes(".") ? d.name.split(".").slice(1).join(".") : d.name;
    const shown = document.createElement("span");
    shown.className = "value";
    let input;
    if (d.kind === "choice") {
      input = document.createElement("select");
      for (const c of d.choices) {
        const option = document.createElement("option");
        option.value = option.textContent = c;
        input.appendChild(option);
      }
      input.addEventListener("change", () => setParams({ [d.name]: input.value }));
    } else if (d.kind === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.addEventListener("change", () => setParams({ [d.name]: input.checked }));
    } else {
      input = document.createElement("input");
      input.type = "range";
      input.min = 0;
      input.max = 1000;
      input.step = 1;
      input.addEventListener("input", () => setParams({ [d.name]: sliderToValue(d, Number(input.value)) }));
    }
    input.id = `param-${d.name}`;
    input.setAttribute("aria-label", d.name);
    label.htmlFor = input.id;
    const button = document.createElement("button");
    button.textContent = "learn";
    button.title = "bind the next MIDI knob you move to this parameter";
    button.addEventListener("click", () => learn(d.name));
    const cc = document.createElement("span");
    cc.className = "cc";
    row.append(label, shown, button, input, cc);
    groups[group].appendChild(row);
    controls[d.name] = { input, shown, button, cc, d };
    showValue(d.name);
  }
  showMidi();
}

function showValue(name) {
  const c = controls[name];
  if (!c) return;
  const v = value(name);
  if (v === undefined) return;
  const unit = c.d.unit && c.d.unit !== "fraction" ? ` ${c.d.unit}` : "";
  c.shown.textContent = typeof v === "boolean" ? (v ? "on" : "off") : `${formatNumber(v)}${unit}`;
  if (document.activeElement === c.input && name in page.local) return; // the user is moving it
  if (c.d.kind === "choice") c.input.value = v;
  else if (c.d.kind === "bool") c.input.checked = Boolean(v);
  else c.input.value = valueToSlider(c.d, v);
}

function showMidi() {
  const bound = {};
  for (const b of page.midi.bindings || []) bound[b.parameter] = b;
  for (const [name, c] of Object.entries(controls)) {
    c.button.disabled = !page.midi.available;
    c.button.classList.toggle("learning", page.midi.learning === name);
    c.button.textContent = page.midi.learning === name ? "move a knob" : "learn";
    const b = bound[name] || bound[name.split(".").slice(1).join(".")];
    c.cc.textContent = b ? `CC ${b.cc}${b.channel ? ` ch ${b.channel}` : ""}` : "";
  }
}

// ------------------------------------------------------------------ stats
function showStats(s) {
  if (!s) return;
  const set = (id, text, bad = false) => {
    const el = document.getElementById(id);
    el.textContent = text;
    el.classList.toggle("bad", bad);
  };
  set("stat-latency", `${s.latency_ms.toFixed(1)} ms`);
  set("stat-underruns", `${s.underruns}`, s.underruns > 0);
  set("stat-xruns", `${s.xruns}`);
  const pct = (v) => (v === null || v === undefined ? "-" : `${Math.round(100 * v)} %`);
  set("stat-load", `${pct(s.engine_load_p50)} / ${pct(s.engine_load_p99)}`, (s.engine_load_p99 || 0) > 1);
  set("stat-cpu", s.cpu_s_per_audio_s === null ? "-" : `${s.cpu_s_per_audio_s.toFixed(2)} s/s`);
  set("stat-peaks", `${s.in_peak_dbfs} / ${s.out_peak_dbfs} dBFS`);
  set("stat-stream", `${s.stream_s.toFixed(1)} s`);
}

function say(text, bad = false) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

// ------------------------------------------------------------------ the connection
function applyState(state) {
  page.params = Object.fromEntries(state.parameters.map((d) => [d.name, d]));
  page.values = state.values;
  page.view = state.view;
  page.grid = state.grid;
  page.midi = state.midi;
  document.getElementById("chain").textContent = (state.chain || []).join(" > ");
  setUpPanels();
  buildControls(state.parameters);
  showStats(state.stats);
  overlayDirty = true;
}

function applyUpdate(update) {
  page.updatesReceived += 1;
  if (update.values) {
    page.values = update.values;
    for (const name of Object.keys(update.values)) showValue(name);
    overlayDirty = true;
  }
  if (update.midi) {
    page.midi = update.midi;
    showMidi();
  }
  if (update.stats) showStats(update.stats);
}

function connect() {
  const socket = new WebSocket(`ws://${location.host}${withToken("/ws")}`);
  socket.binaryType = "arraybuffer";
  const status = document.getElementById("connection");
  socket.onopen = () => {
    page.connected = true;
    status.textContent = "live";
    status.classList.remove("off");
  };
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return receiveColumns(event.data);
    const message = JSON.parse(event.data);
    if (message.type === "state") applyState(message);
    else applyUpdate(message);
  };
  socket.onclose = () => {
    page.connected = false;
    status.textContent = "disconnected: retrying";
    status.classList.add("off");
    setTimeout(connect, 1000);
  };
}

window.addEventListener("resize", () => { overlayDirty = true; });
connect();
requestAnimationFrame(frame);
