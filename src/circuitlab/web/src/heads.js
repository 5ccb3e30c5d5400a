// The heads view: head analysis and patching sweeps streamed over api/heads/ws, layer by layer.
// Panes: the layers x heads grid (coloured by class or a score), the attention heatmap of the
// selected head with token labels, the head inspector, the logit-lens table and the patching
// heatmaps with a bar chart of the heads that recover most, and path patching from every head to
// the logits or to the selected head's q/k/v. On a graph's prompt, a key of the selected head
// (the heatmap's cells, the "attends to" rows) opens its QK attribution (qk.js). Requests run one at a time: the page queues them
// (analysis, then patching) and the server stops a run on "cancel".
import { format } from "d3-format";
import { el } from "./dom.js";
import { CLASS_COLORS, diverging, drawHeatmap, maxAbs, sequential } from "./heatmap.js";
import { attentionAvailable, showQK } from "./qk.js";
import { state } from "./state.js";

const $ = (id) => document.getElementById(id);
const f3 = format(".3f");
const pct = format(".1%");
const SCORES = ["previous_token", "duplicate_token", "induction", "sink"];
const SCORE_RGB = { previous_token: "37,99,235", duplicate_token: "22,163,74", induction: "220,38,38", sink: "115,115,115" };

// Everything the view shows; tests read it through window.__lab.heads.
export const hs = {
  start: null, // the analysis "start" event: tokens, sizes, target, thresholds
  layers: [], // layer events by layer
  done: null,
  patch: null, // {start, head: [], resid: [], mlp: [], done}
  path: null, // path patching: {start, rows: [layer][head] recovery, done}
  selected: null, // [layer, head]
  color: "class",
  status: "",
  fillLog: [], // cells coloured after each layer event (the grid fills in as layers stream)
  source: null, // {slug} when the analysis is of a graph's prompt
};

let socket = null;
let socketReady = null;
let queue = []; // requests waiting for the running one to end
let running = null; // {run, type, t0}
let pendingSends = []; // requests sent, waiting for "accepted"
let presets = [];
let info = null;
let onOpenGraph = () => {};

export function setupHeads(labInfo, { openGraph }) {
  info = labInfo;
  onOpenGraph = openGraph;
  if (!info.heads) return false;
  if (info.heads_models.length > 1) {
    $("heads-model").hidden = false;
    $("heads-model").replaceChildren(...info.heads_models.map((m) => el("option", { value: m }, m)));
  }
  $("heads-go").addEventListener("click", () => analyse());
  $("heads-prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") analyse(); });
  $("heads-patch").addEventListener("click", () => patchSweep());
  $("heads-path").addEventListener("click", () => pathPatch("logits"));
  $("heads-path-head").addEventListener("click", () => pathPatch("head"));
  $("heads-cancel").addEventListener("click", cancel);
  $("heads-color").addEventListener("change", (e) => { hs.color = e.target.value; renderGrid(); });
  $("heads-preset").addEventListener("change", (e) => applyPreset(e.target.value));
  $("heads-source").addEventListener("change", sourceChanged);
  $("heads-graph-link").addEventListener("click", (e) => { e.preventDefault(); openGraphOfAnalysis(); });
  new ResizeObserver(() => { if (!$("heads-view").hidden) renderAll(); }).observe($("heads-view"));
  $("attn").addEventListener("mousemove", attnHover);
  $("attn").addEventListener("mouseleave", () => { $("attn-tip").hidden = true; });
  $("attn").addEventListener("click", (e) => {
    const hit = attnHit && attnHit(e);
    if (hit && hit.j <= hit.i && hs.selected) explain(hs.selected[0], hs.selected[1], hit.i, hit.j);
  });
  loadPresets();
  return true;
}

async function loadPresets() {
  const model = $("heads-model").hidden ? "" : `?model=${encodeURIComponent($("heads-model").value)}`;
  const r = await fetch(`api/heads/presets${model}`).catch(() => null);
  if (!r || !r.ok) return;
  const all = (await r.json()).presets;
  presets = all.filter((p) => p.fits);
  // Presets this model's tokenizer cannot run stay listed, disabled, saying why.
  const unfit = all.filter((p) => !p.fits).map((p) =>
    el("option", { value: p.name, disabled: "", title: p.why, "data-why": p.why }, `${p.title}: doesn't fit this model (${p.why})`));
  $("heads-preset").replaceChildren(
    el("option", { value: "" }, presets.length ? "preset…" : "preset… (none fits this model)"),
    ...presets.map((p) => el("option", { value: p.name }, p.title)),
    ...(unfit.length ? [el("optgroup", { label: "not for this model" }, ...unfit)] : []),
  );
}

function sourceChanged() {
  const src = $("heads-source").value;
  $("heads-prompt").disabled = src !== "prompt";
  if (src === "graph" && hs.graphPrompt) $("heads-prompt").value = hs.graphPrompt;
}

// The graph tab tells the view which graph is open (the "graph's prompt" source).
export function setGraph(slug, prompt) {
  hs.graphSlug = slug;
  hs.graphPrompt = prompt || "";
  const opt = $("heads-source").querySelector("option[value=graph]");
  opt.disabled = !slug;
  opt.textContent = slug ? `graph ${slug}` : "graph's prompt";
  if ($("heads-source").value === "graph") sourceChanged();
}

// Open the view on the open graph's prompt and analyse it (from the graph pane's button).
export function analyseGraph() {
  $("heads-source").value = "graph";
  sourceChanged();
  analyse();
}

function applyPreset(name) {
  const p = presets.find((x) => x.name === name);
  if (!p) return;
  $("heads-source").value = "prompt";
  sourceChanged();
  $("heads-prompt").value = p.clean;
  $("heads-corrupted").value = p.corrupted;
  $("heads-answer").value = p.answer;
  $("heads-wrong").value = p.wrong;
  hs.preset = p;
  analyse();
  patchSweep();
}

function common() {
  const body = {};
  if (!$("heads-model").hidden) body.model = $("heads-model").value;
  const answer = $("heads-answer").value;
  const wrong = $("heads-wrong").value;
  if (answer) body.answer = answer;
  if (wrong) body.wrong = wrong;
  return body;
}

// The heads view's part of the URL (so a view can be shared): what was analysed and patched,
// and the selected head. Kept by state.writeUrl while the heads view is open.
const URL_KEYS = { headsSource: "heads-source", headsPrompt: "heads-prompt", headsAnswer: "heads-answer", headsWrong: "heads-wrong", headsCorrupted: "heads-corrupted" };

function syncUrl() {
  const p = new URLSearchParams(location.search);
  for (const [key, id] of Object.entries(URL_KEYS)) {
    const v = $(id).value;
    if (v && !(key === "headsSource" && v === "prompt")) p.set(key, v);
    else p.delete(key);
  }
  if (hs.selected) p.set("head", hs.selected.join("."));
  else p.delete("head");
  if (hs.patch && hs.patch.start) p.set("headsPatch", "1");
  history.replaceState(null, "", `${location.pathname}?${p}`);
}

// Open a shared heads view: fill the fields from the URL and run what it ran.
export function applyUrl(url) {
  if (!url.get("headsPrompt") && url.get("headsSource") !== "probe" && url.get("headsSource") !== "graph") return;
  for (const [key, id] of Object.entries(URL_KEYS)) if (url.get(key)) $(id).value = url.get(key);
  sourceChanged();
  const head = (url.get("head") || "").split(".").map(Number);
  if (head.length === 2 && head.every(Number.isInteger)) hs.wantSelected = head;
  analyse();
  if (url.get("headsPatch") && url.get("headsCorrupted")) patchSweep();
}

export function analyse() {
  const src = $("heads-source").value;
  const body = { type: "analysis", ...common() };
  if (src === "graph" && hs.graphSlug) body.slug = hs.graphSlug;
  else if (src === "probe") body.probe = 20;
  else {
    const text = $("heads-prompt").value;
    if (!text.trim()) return $("heads-prompt").focus();
    body.prompt = text;
  }
  if (hs.preset && src !== "prompt") hs.preset = null;
  request(body);
  syncUrl();
}

// The clean and corrupted prompts of a patching request, or null (and a status line).
function promptPair() {
  const clean = src() === "graph" ? hs.graphPrompt : $("heads-prompt").value;
  const corrupted = $("heads-corrupted").value;
  if (!clean || !corrupted) {
    setStatus("patching needs the clean prompt and a corrupted prompt of the same token length");
    $("heads-corrupted").focus();
    return null;
  }
  return { clean, corrupted };
}

function patchSweep() {
  const pair = promptPair();
  if (!pair) return;
  const kinds = ["head", "resid", "mlp"].filter((k) => $(`patch-${k}`).checked);
  request({ type: "patching", ...pair, kinds, ...common() });
  syncUrl();
}

// Path patching from every head to the logits, or to the selected head's chosen inputs.
function pathPatch(to) {
  const pair = promptPair();
  if (!pair) return;
  const body = { type: "path_patching", ...pair, receivers: "logits", ...common() };
  if (to === "head") {
    if (!hs.selected) return setStatus("select a receiver head in the grid first (analyse a prompt)");
    body.receivers = [hs.selected.join(".")];
    body.inputs = $("heads-path-inputs").value;
  }
  request(body);
}

const src = () => $("heads-source").value;

// Requests run one at a time. A new request of the kind that is running replaces it (the
// running one is cancelled); otherwise it waits its turn (analysis, then patching).
function request(body) {
  queue = queue.filter((q) => q.type !== body.type);
  queue.push(body);
  if (running && running.type === body.type) socket.send(JSON.stringify({ type: "cancel" }));
  else if (!running && !pendingSends.length) next();
}

async function next() {
  const body = queue.shift();
  if (!body) return;
  await connect();
  if (body.type === "analysis") reset();
  else if (body.type === "path_patching") resetPath();
  else resetPatch();
  pendingSends.push(body);
  socket.send(JSON.stringify(body));
  setStatus(`${body.type.replace("_", " ")}: starting…`);
}

function cancel() {
  queue = [];
  if (socket && socket.readyState === 1) socket.send(JSON.stringify({ type: "cancel" }));
}

function connect() {
  if (socket && socket.readyState <= 1) return socketReady;
  const url = new URL("api/heads/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.onmessage = (e) => receive(JSON.parse(e.data));
  socket.onclose = () => {
    if (running || pendingSends.length) setStatus("connection lost");
    running = null;
    pendingSends = [];
  };
  socketReady = new Promise((resolve) => { socket.onopen = resolve; });
  return socketReady;
}

function receive(msg) {
  if (msg.type === "accepted") {
    const body = pendingSends.shift();
    running = { run: msg.run, type: body ? body.type : "?", t0: performance.now() };
    return;
  }
  if (!running || msg.run !== running.run) return; // a stale run
  if (msg.type === "end") {
    const secs = ((performance.now() - running.t0) / 1000).toFixed(1);
    const what = running.type;
    running = null;
    const label = what.replace("_", " ");
    if (msg.status === "failed") setStatus(`${label} failed: ${msg.error}`, true);
    else setStatus(`${label} ${msg.status} in ${secs} s`);
    if (what === "patching" && hs.patch) hs.patch.done = msg.status;
    if (what === "path_patching" && hs.path) hs.path.done = msg.status;
    if (what === "analysis") hs.finished = msg.status;
    document.body.dataset.headsStatus = `${what}-${msg.status}`;
    next();
    return;
  }
  if (msg.stream === "analysis") onAnalysis(msg);
  else if (msg.stream === "patching") onPatch(msg);
  else if (msg.stream === "path_patching") onPath(msg);
}

function reset() {
  Object.assign(hs, { start: null, layers: [], done: null, selected: null, fillLog: [], finished: null });
  hs.source = src() === "graph" ? { slug: hs.graphSlug } : null;
  const link = $("heads-graph-link");
  link.hidden = !hs.source;
  if (hs.source) {
    link.textContent = `graph ${hs.source.slug} →`;
    link.href = `?slug=${encodeURIComponent(hs.source.slug)}`;
  }
  renderAll();
}

function resetPatch() {
  hs.patch = { start: null, head: [], resid: [], mlp: [], done: null };
  renderPatching();
}

function resetPath() {
  hs.path = { start: null, rows: [], done: null };
  renderPatching();
}

function onAnalysis(ev) {
  if (ev.event === "start") {
    hs.start = ev;
    renderAll();
  } else if (ev.event === "layer") {
    hs.layers[ev.layer] = ev;
    if (hs.wantSelected && hs.wantSelected[0] === ev.layer && hs.wantSelected[1] < hs.start.n_heads) {
      hs.selected = hs.wantSelected;
      hs.wantSelected = null;
    }
    if (!hs.selected) hs.selected = [ev.layer, 0];
    renderGrid();
    hs.fillLog.push(document.querySelectorAll("#heads-grid rect.hcell.filled").length);
    appendLensRow(ev.layer);
    if (hs.selected[0] === ev.layer) { renderAttention(); renderInspector(); }
    setStatus(`analysis: layer ${ev.layer + 1}/${hs.start.n_layers}`);
  } else if (ev.event === "done") {
    hs.done = ev;
    renderLens();
    renderInspector();
  }
}

function onPatch(ev) {
  const p = hs.patch;
  if (ev.event === "start") p.start = ev;
  else if (ev.event === "patch") {
    p[ev.kind][ev.layer] = ev.values;
    setStatus(`patching: ${ev.kind} L${ev.layer}`);
  }
  renderPatching();
  if (ev.kind === "head") { renderGrid(); renderInspector(); }
}

function onPath(ev) {
  const p = hs.path;
  if (ev.event === "start") p.start = ev;
  else if (ev.event === "path") {
    p.rows[ev.layer] = ev.values;
    setStatus(`path patching: senders in L${ev.layer}`);
  }
  renderPatching();
}

function setStatus(text, error = false) {
  hs.status = text;
  const s = $("heads-status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

function renderAll() {
  renderGrid();
  renderAttention();
  renderInspector();
  renderLens();
  renderPatching();
}

// ---- grid -------------------------------------------------------------------------------
function headValue(layer, head) {
  const ev = hs.layers[layer];
  if (hs.color === "recovery") {
    const row = hs.patch && hs.patch.head[layer];
    return row ? row[head] : null;
  }
  if (!ev) return null;
  const h = ev.heads[head];
  if (hs.color === "class") return h.class;
  if (hs.color === "dla" || hs.color === "entropy") return h[hs.color];
  return h.scores[hs.color];
}

function gridColor() {
  if (hs.color === "class") return (c) => CLASS_COLORS[c] || "#f3f3f3";
  if (hs.color === "dla") return diverging(maxAbs(hs.layers.flatMap((e) => (e ? e.heads.map((h) => h.dla) : []))));
  if (hs.color === "recovery") return diverging(Math.max(1, maxAbs((hs.patch ? hs.patch.head : []).flat())));
  if (hs.color === "entropy") {
    const m = maxAbs(hs.layers.flatMap((e) => (e ? e.heads.map((h) => h.entropy) : []))) || 1;
    const c = sequential("120,80,200");
    return (v) => (v == null ? "#f3f3f3" : c(v / m));
  }
  return sequential(SCORE_RGB[hs.color]);
}

function renderGrid() {
  const svg = $("heads-grid-svg");
  const s = hs.start;
  if (!s) {
    svg.replaceChildren();
    $("heads-legend").replaceChildren(el("span", { class: "muted" }, info && info.heads ? "Analyse a prompt, pick a preset, or open a graph's prompt." : ""));
    return;
  }
  const wrap = $("heads-grid");
  const W = wrap.clientWidth - 4;
  const H = wrap.clientHeight - 4;
  const left = 34;
  const top = 16;
  const cw = Math.max(6, Math.min(34, (W - left) / s.n_heads));
  const ch = Math.max(5, Math.min(24, (H - top) / s.n_layers));
  svg.setAttribute("width", String(left + cw * s.n_heads + 2));
  svg.setAttribute("height", String(top + ch * s.n_layers + 2));
  const color = gridColor();
  const kids = [];
  for (let h = 0; h < s.n_heads; h++) {
    if (cw >= 14 || h % Math.ceil(14 / cw) === 0) kids.push(el("text", { svg: true, x: left + (h + 0.5) * cw, y: 11, "text-anchor": "middle", class: "axis" }, `H${h}`));
  }
  const every = Math.max(1, Math.ceil(11 / ch));
  const [sl, sh] = hs.selected || [-1, -1];
  for (let l = 0; l < s.n_layers; l++) {
    if (l % every === 0) kids.push(el("text", { svg: true, x: left - 4, y: top + (l + 0.5) * ch + 3, "text-anchor": "end", class: "axis" }, `L${l}`));
    const have = !!hs.layers[l];
    for (let h = 0; h < s.n_heads; h++) {
      const v = headValue(l, h);
      const rect = el("rect", {
        svg: true,
        x: left + h * cw + 0.5,
        y: top + l * ch + 0.5,
        width: Math.max(1, cw - 1),
        height: Math.max(1, ch - 1),
        fill: have ? color(v) : "#f3f3f3",
        class: `hcell${have ? " filled" : ""}${l === sl && h === sh ? " selected" : ""}`,
        "data-layer": l,
        "data-head": h,
        onclick: () => select(l, h),
      });
      rect.append(el("title", { svg: true }, cellTitle(l, h, v)));
      kids.push(rect);
    }
  }
  svg.replaceChildren(...kids);
  renderLegend();
}

function cellTitle(l, h, v) {
  const ev = hs.layers[l];
  if (!ev) return `L${l}H${h} (pending)`;
  const head = ev.heads[h];
  const val = typeof v === "number" ? ` · ${hs.color} ${f3(v)}` : "";
  return `L${l}H${h} · ${head.class} · DLA ${head.dla == null ? "–" : f3(head.dla)}${val}`;
}

function renderLegend() {
  const box = $("heads-legend");
  if (hs.color === "class") {
    box.replaceChildren(...Object.entries(CLASS_COLORS).map(([k, c]) => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = c;
      const n = hs.layers.reduce((a, e) => a + (e ? e.heads.filter((h) => h.class === k).length : 0), 0);
      return el("span", { class: "legend-item" }, sw, `${k.replace("_", "-")} ${n}`);
    }));
  } else {
    const note = { dla: "blue raises the target, red lowers it", recovery: "share of the logit difference recovered by patching the head", entropy: "attention entropy (nats)" }[hs.color] || `${hs.color.replace("_", "-")} score, 0 to 1`;
    box.replaceChildren(el("span", { class: "muted" }, note));
  }
}

function select(layer, head) {
  hs.selected = [layer, head];
  renderGrid();
  renderAttention();
  renderInspector();
  syncUrl();
}

// Arrow keys move the selected head (from the heads view's key handler in main.js).
export function moveSelection(key) {
  if (!hs.start || !hs.selected) return false;
  const [l, h] = hs.selected;
  const d = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[key];
  if (!d) return false;
  const nl = Math.max(0, Math.min(hs.start.n_layers - 1, l + d[0]));
  const nh = Math.max(0, Math.min(hs.start.n_heads - 1, h + d[1]));
  if (hs.layers[nl]) select(nl, nh);
  return true;
}

// ---- attention heatmap ------------------------------------------------------------------
let attnHit = null;

function renderAttention() {
  const canvas = $("attn");
  const title = $("attn-title");
  const ev = hs.selected && hs.layers[hs.selected[0]];
  if (!ev) {
    attnHit = null;
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    title.textContent = "";
    return;
  }
  const [l, h] = hs.selected;
  const pattern = ev.heads[h].pattern;
  const toks = hs.start.tokens;
  title.textContent = `L${l}H${h} · rows: queries, columns: keys`;
  attnHit = drawHeatmap(canvas, {
    rows: toks.length,
    cols: toks.length,
    value: (i, j) => pattern[i][j],
    color: sequential("37,99,235"),
    rowLabels: toks,
    colLabels: toks,
    square: true,
  });
}

function attnHover(e) {
  const tip = $("attn-tip");
  const hit = attnHit && attnHit(e);
  if (!hit || hit.j > hit.i) { tip.hidden = true; return; }
  const toks = hs.start.tokens;
  tip.hidden = false;
  tip.textContent = `${JSON.stringify(toks[hit.i])} → ${JSON.stringify(toks[hit.j])}: ${pct(hit.value || 0)}`;
  tip.style.left = `${Math.min(hit.x + 12, $("attn-wrap").clientWidth - 160)}px`;
  tip.style.top = `${hit.y + 12}px`;
}

// ---- inspector --------------------------------------------------------------------------
function renderInspector() {
  const box = $("head-inspector");
  const ev = hs.selected && hs.layers[hs.selected[0]];
  if (!ev) {
    box.replaceChildren(el("p", { class: "muted" }, "Click a head in the grid."));
    return;
  }
  const [l, h] = hs.selected;
  const head = ev.heads[h];
  const all = hs.layers.flatMap((e) => (e ? e.heads.map((x) => Math.abs(x.dla || 0)) : []));
  const rank = all.filter((v) => v > Math.abs(head.dla || 0)).length + 1;
  const th = hs.start.thresholds || {};
  const rec = hs.patch && hs.patch.head[l] ? hs.patch.head[l][h] : null;
  const last = head.pattern[head.pattern.length - 1] || [];
  const top = last.map((v, k) => [v, k]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  const cls = el("span", { class: "kind" }, head.class.replace("_", "-"));
  cls.style.background = CLASS_COLORS[head.class] || "#999";
  if (head.class === "diffuse") cls.style.color = "#333";
  box.replaceChildren(
    el("div", { class: "node-head" }, el("strong", { id: "head-title" }, `Layer ${l} · head ${h}`), cls),
    el("dl", { class: "facts" },
      el("dt", {}, "DLA"), el("dd", { id: "head-dla" }, `${head.dla == null ? "–" : f3(head.dla)} on ${hs.start.target.label} (rank ${rank} of ${all.length} by |DLA|)`),
      el("dt", {}, "entropy"), el("dd", {}, head.entropy == null ? "–" : `${f3(head.entropy)} nats`),
      el("dt", {}, "concentration"), el("dd", {}, head.concentration == null ? "–" : f3(head.concentration)),
      el("dt", {}, "value norm"), el("dd", {}, head.value_norm == null ? "–" : f3(head.value_norm)),
      rec != null ? el("dt", {}, "patch recovery") : null,
      rec != null ? el("dd", {}, f3(rec)) : null,
      ev.mlp_dla != null ? el("dt", {}, `MLP ${l} DLA`) : null,
      ev.mlp_dla != null ? el("dd", {}, f3(ev.mlp_dla)) : null),
    el("h3", {}, "Class scores"),
    el("table", { class: "links scores" }, ...SCORES.map((name) => {
      const v = head.scores[name];
      const bar = el("span", { class: "score-bar" }, el("span", {}), el("i", {}));
      bar.firstChild.style.width = `${Math.round(100 * Math.max(0, Math.min(1, v || 0)))}%`;
      bar.firstChild.style.background = `rgb(${SCORE_RGB[name]})`;
      if (th[name] != null) bar.lastChild.style.left = `${Math.round(100 * th[name])}%`;
      return el("tr", {}, el("td", {}, name.replace("_", "-")), el("td", {}, bar), el("td", { class: "w" }, v == null ? "n/a" : f3(v)));
    })),
    el("h3", {}, `Last query (${JSON.stringify(hs.start.tokens[last.length - 1] ?? "")}) attends to`),
    el("table", { class: "links", id: "head-keys" }, ...top.map(([v, k]) => el("tr", {
      class: canExplain() ? "link-row head-key" : "",
      "data-key": k,
      title: canExplain() ? "click: why it attends there (QK attribution)" : "",
      onclick: () => explain(l, h, last.length - 1, k),
    },
      el("td", { class: "name" }, el("span", { class: "chip pos" }, JSON.stringify(hs.start.tokens[k]))),
      el("td", { class: "w" }, `@${k}`),
      el("td", { class: "w" }, pct(v || 0))))),
    el("p", { class: "muted" }, canExplain()
      ? "click a key (or a heatmap cell) for its QK attribution: which query- and key-side nodes make the head attend there"
      : "QK attributions: analyse the open graph's prompt (source: graph) in a lab with a model or precomputed results"),
  );
}

// QK attributions need the analysed prompt to be the open graph's (its node ids).
function canExplain() {
  return Boolean(hs.source && hs.source.slug === state.slug && state.graph && attentionAvailable());
}

function explain(layer, head, query, key) {
  if (canExplain()) showQK(layer, head, query, key);
}

// ---- logit lens -------------------------------------------------------------------------
function lensRow(label, lens, ev) {
  const headsDla = ev ? ev.heads.reduce((a, x) => a + (x.dla || 0), 0) : null;
  return el("tr", {},
    el("td", {}, label),
    el("td", { class: "name" }, ...lens.top.slice(0, 3).map((t) => el("span", { class: "chip pos", title: pct(t.prob || 0) }, `${JSON.stringify(t.token)} ${pct(t.prob || 0)}`))),
    el("td", { class: "w" }, lens.target_prob == null ? "–" : pct(lens.target_prob)),
    el("td", { class: "w" }, lens.target_rank == null ? "–" : String(lens.target_rank)),
    el("td", { class: "w" }, ev ? f3(headsDla) : ""),
    el("td", { class: "w" }, ev && ev.mlp_dla != null ? f3(ev.mlp_dla) : ""));
}

function lensHead() {
  const t = hs.start ? hs.start.target.answer : "target";
  return el("tr", {}, el("th", {}, "after"), el("th", {}, "top tokens"), el("th", {}, `p(${JSON.stringify(t)})`), el("th", {}, "rank"), el("th", {}, "heads DLA"), el("th", {}, "MLP DLA"));
}

function renderLens() {
  const box = $("lens");
  if (!hs.start) { box.replaceChildren(); return; }
  const rows = [];
  if (hs.done && hs.done.lens_embed) rows.push(lensRow("embed", hs.done.lens_embed, null));
  hs.layers.forEach((ev, l) => { if (ev) rows.push(lensRow(`L${l}`, ev.lens, ev)); });
  const caption = el("p", { class: "muted" }, `position ${hs.start.pos} (${JSON.stringify(hs.start.tokens[hs.start.pos])}); target ${hs.start.target.label}${hs.done ? `, logit ${f3(hs.done.logit)}` : ""}`);
  box.replaceChildren(caption, el("table", { class: "links lens", id: "lens-table" }, lensHead(), ...rows));
}

function appendLensRow(layer) {
  const table = $("lens-table");
  if (!table) return renderLens();
  const ev = hs.layers[layer];
  table.append(lensRow(`L${layer}`, ev.lens, ev));
}

// ---- patching ---------------------------------------------------------------------------
function renderPatching() {
  const box = $("patching");
  const p = hs.patch;
  const intro = hs.preset ? el("p", { class: "preset" }, el("strong", {}, hs.preset.title), ": ", hs.preset.circuit) : null;
  const parts = [intro];
  if (p && p.start) parts.push(...patchParts(p));
  else if (!(hs.path && hs.path.start)) parts.push(el("p", { class: "muted" }, "Patching puts one component of the clean run into the corrupted run and shows how much of the logit difference comes back (1 = all of it). Give a corrupted prompt of the same token length, or pick a preset. Path patching keeps only a head's paths to the logits (through the residual stream and MLPs, not later heads) or to the selected head's q, k or v."));
  if (hs.path && hs.path.start) parts.push(...pathParts(hs.path));
  box.replaceChildren(...parts.filter(Boolean));
  for (const c of box.querySelectorAll("canvas")) if (c.__draw) c.__draw();
}

function patchParts(p) {
  const s = p.start;
  const parts = [el("p", { class: "muted" }, `${s.target}: clean ${f3(s.clean_metric)}, corrupted ${f3(s.corrupted_metric)}`)];
  const layers = Math.max(p.head.length, p.resid.length, p.mlp.length);
  const layerLabels = Array.from({ length: layers }, (_, l) => `L${l}`);
  if (p.head.length) {
    parts.push(el("h3", {}, "Heads: top recovery"), topBars(p.head, "patch-bars"));
    parts.push(heatmapBlock("heads (layer × head)", p.head, layerLabels, Array.from({ length: (p.head.find(Boolean) || []).length }, (_, h) => `H${h}`)));
  }
  for (const kind of ["resid", "mlp"]) {
    if (p[kind].length) parts.push(heatmapBlock(`${kind} (layer × position)`, p[kind], layerLabels, s.clean_tokens));
  }
  return parts;
}

// Path patching: the endpoints, the ten senders that recover most and the layers × heads map.
function pathParts(path) {
  const s = path.start;
  const title = `path patching: heads → ${s.receivers}`;
  const rows = Array.from({ length: s.n_layers }, (_, l) => path.rows[l] || null);
  const layerLabels = rows.map((_, l) => `L${l}`);
  const headLabels = Array.from({ length: s.n_heads }, (_, h) => `H${h}`);
  return [
    el("h3", { id: "path-title" }, title),
    el("p", { class: "muted" }, `${s.target}: clean ${f3(s.clean_metric)}, corrupted ${f3(s.corrupted_metric)}; the senders that recover most:`),
    topBars(path.rows, "path-bars"),
    heatmapBlock("senders (layer × head)", rows, layerLabels, headLabels, { "data-path": "1" }),
  ];
}

// A table of the ten [layer][head] values largest in size, as bars; click a row to select it.
function topBars(grid, id) {
  const ranked = [];
  grid.forEach((row, l) => (row || []).forEach((v, h) => ranked.push([v, l, h])));
  ranked.sort((a, b) => Math.abs(b[0] || 0) - Math.abs(a[0] || 0));
  const top = ranked.slice(0, 10);
  const m = Math.max(1, maxAbs(top.map((x) => x[0])));
  return el("table", { class: "links", id }, ...top.map(([v, l, h]) => {
    const bar = el("span", { class: `bar ${v >= 0 ? "pos" : "neg"}` });
    bar.style.width = `${Math.round((80 * Math.abs(v || 0)) / m)}px`;
    return el("tr", { class: "link-row", onclick: () => select(l, h) }, el("td", {}, `L${l}H${h}`), el("td", {}, bar), el("td", { class: "w" }, f3(v || 0)));
  }));
}

function heatmapBlock(title, rows, rowLabels, colLabels, attrs = { "data-kind": title }) {
  const canvas = el("canvas", { ...attrs, "data-rows": rows.length, "data-cols": colLabels.length });
  const wrap = el("div", { class: "patch-map" }, canvas);
  const height = Math.min(360, 30 + 60 + rows.length * 9);
  wrap.style.height = `${height}px`;
  const m = Math.max(1, maxAbs(rows.flat()));
  canvas.__draw = () => drawHeatmap(canvas, {
    rows: rows.length,
    cols: colLabels.length,
    value: (i, j) => (rows[i] ? rows[i][j] : null),
    color: diverging(m),
    rowLabels,
    colLabels,
  });
  return el("div", {}, el("h3", {}, title), wrap);
}

export function headsFor(slug) {
  return hs.source && hs.source.slug === slug;
}

export function openGraphOfAnalysis() {
  if (hs.source && hs.source.slug) onOpenGraph(hs.source.slug);
}
