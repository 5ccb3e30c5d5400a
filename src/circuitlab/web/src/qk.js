// The attention panel: which heads carry an edge (head loadings, per layer, as bars) and why a
// head attends from one token to another (QK attributions: the (query node, key node) pairs
// and each side's strongest nodes; a side opens its node: the inspector and feature card when
// the graph has it, else its dashboard here). Opened from an edge of the inspector's lists or
// of the subgraph, a head's bar here, the heads view (a key of the selected head) or the
// "attention" button (the strongest flows into the last token).
// Results come from the graph file's precomputed `attention` block (attention/records.py:
// loadings by "src->tgt", QK by "L.H.q.k") or, when the lab has a model, from
// api/attention/{loadings,qk,flows} (server/attention.py); the page keeps them per graph.
import { format } from "d3-format";
import { KIND, nodeTitle } from "./data.js";
import { el } from "./dom.js";
import { loadFeature } from "./featurecard.js";
import { emit, on, state } from "./state.js";

const num = format(".3~g");
const pct = format(".1%");
const $ = (id) => document.getElementById(id);

// What the panel shows; tests read it through window.__lab.attention.
export const attn = {
  open: false,
  slug: "",
  edges: null, // [[source, target], ...] summed
  edgeTitle: "",
  loadings: null, // {status: "loading"|"done"|"failed", result, error, from}
  qk: null, // {req: {layer, head, query_pos, key_pos}, status, result, error, from}
  flows: null, // {status, result, error, from}
  node: null, // {id, status, record} a side's dashboard shown here
};

let info = {};
const results = new Map(); // "slug kind key" -> Promise<{result, from}>

// `labInfo`: /api/info (its `attention`: the server computes results).
export function setupAttention(labInfo) {
  info = labInfo || {};
  $("attention-toggle").addEventListener("click", () => (attn.open ? close() : showFlows()));
  $("attention-close").addEventListener("click", close);
  $("subgraph").addEventListener("click", subgraphEdge);
  on((what) => { if (what === "graph") newGraph(); });
}

// Whether the panel can show anything for a graph: a model, or results in its file.
export function attentionAvailable() {
  return Boolean(info.attention || fileBlock());
}

// A new graph: drop what belonged to the last one.
function newGraph() {
  Object.assign(attn, { slug: state.slug, edges: null, loadings: null, qk: null, flows: null, node: null });
  $("attention-toggle").hidden = !attentionAvailable();
  if (attn.open) showFlows();
}

function close() {
  attn.open = false;
  render();
}

function fileBlock() {
  const g = state.graph;
  return g && g.attention && typeof g.attention === "object" ? g.attention : null;
}

// A result: from the graph file when it has it, else from the server (cached per graph).
function fetchResult(kind, key, body) {
  const slug = state.slug;
  const cacheKey = `${slug} ${kind} ${key}`;
  if (results.has(cacheKey)) return results.get(cacheKey);
  const file = fileBlock();
  const stored = file && (kind === "flows" ? file.flows : file[kind] && file[kind][key]);
  let promise;
  if (stored) promise = Promise.resolve({ result: stored, from: "graph file" });
  else if (!info.attention) {
    promise = Promise.reject(new Error("not precomputed in this graph file, and this lab has no model to compute it (start it with --model and --transcoders)"));
  } else {
    promise = fetch(`api/attention/${kind}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ slug, ...body }),
    }).then(async (r) => {
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(data.detail || `attention: ${r.status}`);
      return { result: data.result, from: data.cached ? "server (cached)" : "server" };
    });
  }
  promise.catch(() => results.delete(cacheKey));
  results.set(cacheKey, promise);
  return promise;
}

// Load into attn[slot] and redraw; a later request for the same slot wins.
function load(slot, kind, key, body, extra = {}) {
  const mine = { status: "loading", ...extra };
  attn[slot] = mine;
  attn.open = true;
  render();
  fetchResult(kind, key, body).then(
    ({ result, from }) => Object.assign(mine, { status: "done", result, from }),
    (e) => Object.assign(mine, { status: "failed", error: String(e.message || e) }),
  ).then(() => { if (attn[slot] === mine) render(); });
}

// ---- entry points -----------------------------------------------------------------------

// Head loadings of `edges` ([[source, target], ...], summed).
export function showEdge(edges, title) {
  attn.edges = edges;
  attn.edgeTitle = title;
  attn.qk = null;
  attn.node = null;
  const key = edges.map(([s, t]) => `${s}->${t}`).join("|");
  load("loadings", "loadings", key, { edges });
}

// The QK attribution of `head` in `layer` from `query_pos` to `key_pos` (non-negative).
export function showQK(layer, head, queryPos, keyPos) {
  const req = { layer, head, query_pos: queryPos, key_pos: keyPos };
  attn.node = null;
  load("qk", "qk", `${layer}.${head}.${queryPos}.${keyPos}`, { ...req, top_k: 20 }, { req });
}

function showFlows() {
  attn.open = true;
  if (!attn.flows || attn.flows.status === "failed") load("flows", "flows", "last", { n: 8 });
  else render();
}

// A click on a subgraph link: the loadings of every graph edge between its two boxes.
function subgraphEdge(e) {
  const line = e.target.closest && e.target.closest("g.sg-links line");
  const d = line && line.__data__;
  const g = state.graph;
  if (!d || !g) return;
  const to = new Set(d.to.ids);
  const edges = [];
  for (const id of d.from.ids) {
    for (const l of g.byId.get(id).outputs) if (to.has(l.target.id)) edges.push([id, l.target.id]);
  }
  if (edges.length) showEdge(edges, `${d.from.label} → ${d.to.label}`);
}

// ---- drawing ----------------------------------------------------------------------------

function render() {
  const panel = $("attention-panel");
  panel.hidden = !attn.open;
  if (!attn.open) return;
  const box = $("attention");
  const parts = [];
  if (attn.loadings) parts.push(...loadingsParts());
  if (attn.qk) parts.push(...qkParts());
  if (attn.node) parts.push(nodeCard());
  if (!attn.loadings && !attn.qk && attn.flows) parts.push(...flowsParts());
  box.replaceChildren(...parts);
}

function status(slot, what) {
  if (slot.status === "loading") return el("p", { class: "muted" }, `computing ${what}…`);
  if (slot.status === "failed") return el("p", { class: "error attn-error" }, slot.error);
  return null;
}

function source(slot) {
  return el("p", { class: "muted attn-from" }, `from the ${slot.from}`);
}

function posOf(id) {
  return parseInt(id.slice(id.lastIndexOf("_") + 1), 10);
}

function loadingsParts() {
  const slot = attn.loadings;
  const head = el("h3", { id: "attn-edge-title" }, `Heads carrying ${attn.edgeTitle}`);
  const wait = status(slot, "head loadings");
  if (wait) return [head, wait];
  const r = slot.result;
  const nHeads = r.heads.length ? r.heads[0].length : 0;
  const max = Math.max(1e-12, ...r.heads.flat().map(Math.abs));
  const layers = r.heads.map((row, l) => [row, l]).filter(([row]) => row.some((v) => v !== 0));
  const [src, tgt] = attn.edges.length === 1 ? attn.edges[0] : [null, null];
  const q = tgt ? posOf(tgt) : null;
  const k = src ? posOf(src) : null;
  const clickHead = (l, h) => (q != null && k <= q ? () => showQK(l, h, q, k) : null);
  const top = el("table", { class: "links", id: "attn-top-heads" }, ...r.top.map(([l, h, v]) => {
    const bar = el("span", { class: `bar ${v >= 0 ? "pos" : "neg"}` });
    bar.style.width = `${Math.round((80 * Math.abs(v)) / max)}px`;
    const row = el("tr", { class: "link-row attn-head", "data-head": `${l}.${h}`, title: q != null ? "click: why it attends (QK)" : "" },
      el("td", {}, `L${l}H${h}`), el("td", {}, bar), el("td", { class: "w" }, num(v)), el("td", { class: "muted" }, pct(Math.abs(v) / Math.max(1e-12, Math.abs(r.edge)))));
    const open = clickHead(l, h);
    if (open) row.addEventListener("click", open);
    return row;
  }));
  const perLayer = el("table", { class: "links attn-layers", id: "attn-layers" },
    el("tr", {}, el("th", {}, "layer"), el("th", {}, `heads 0–${nHeads - 1}`), el("th", {}, "bypass")),
    ...layers.map(([row, l]) => el("tr", {},
      el("td", {}, `L${l}`),
      el("td", {}, el("span", { class: "head-bars" }, ...row.map((v, h) => {
        const b = el("i", { class: v >= 0 ? "pos" : "neg", title: `L${l}H${h}: ${num(v)}`, "data-head": `${l}.${h}` });
        b.style.height = `${Math.max(1, Math.round((18 * Math.abs(v)) / max))}px`;
        const open = clickHead(l, h);
        if (open) b.addEventListener("click", open);
        return b;
      }))),
      el("td", { class: "w" }, num(r.bypass[l])))));
  const sum = attn.edges.length > 1 ? ` (${attn.edges.length} edges summed)` : "";
  return [
    head,
    el("p", {}, `edge ${num(r.edge)}${sum}; at each layer the heads plus the bypass (the part that skips the layer's attention) sum to it.`),
    el("h3", {}, "Top heads"), top,
    el("h3", {}, "Per layer"), layers.length ? perLayer : el("p", { class: "muted" }, "no path of this edge crosses attention"),
    source(slot),
  ];
}

function qkParts() {
  const slot = attn.qk;
  const { layer, head, query_pos: q, key_pos: k } = slot.req;
  const tok = (p) => JSON.stringify((state.graph && state.graph.tokens[p]) ?? `#${p}`);
  const title = el("h3", { id: "attn-qk-title" }, `Why L${layer}H${head} attends from ${tok(q)} @${q} to ${tok(k)} @${k}`);
  const wait = status(slot, "the QK attribution");
  if (wait) return [title, wait];
  const r = slot.result;
  const pairs = el("table", { class: "links", id: "qk-pairs" },
    el("tr", {}, el("th", {}, "term"), el("th", {}, "query side"), el("th", {}), el("th", {}, "key side")),
    ...r.pairs.map(([a, b, v]) => el("tr", {},
      el("td", { class: "w" }, num(v)), el("td", {}, nodeButton(a, "query")), el("td", { class: "muted" }, "×"), el("td", {}, nodeButton(b, "key")))));
  const side = (name, list) => el("div", {}, el("h3", {}, name),
    el("table", { class: "links" }, ...list.slice(0, 8).map(([id, v]) => el("tr", {}, el("td", { class: "w" }, num(v)), el("td", {}, nodeButton(id, name))))));
  const bias = Object.entries(r.bias_terms).map(([name, v]) => `${name} ${num(v)}`).join(" · ");
  return [
    title,
    el("p", { id: "qk-score" }, `score ${num(r.total)}${r.softcap ? ` (capped ${num(r.logit)})` : ""}, attention ${pct(r.attention)}`),
    el("h3", {}, "Strongest pairs (query node × key node)"), pairs,
    el("div", { class: "qk-sides" }, side("query", r.query_marginals), side("key", r.key_marginals)),
    el("p", { class: "muted" }, `bias terms: ${bias}`),
    source(slot),
  ];
}

function flowsParts() {
  const slot = attn.flows;
  const head = el("h3", {}, "Strongest attention into the last token");
  const wait = status(slot, "attention flows");
  if (wait) return [head, wait];
  const tok = (p) => JSON.stringify((state.graph && state.graph.tokens[p]) ?? `#${p}`);
  return [
    head,
    el("table", { class: "links", id: "attn-flows" }, ...slot.result.map((f) => {
      const row = el("tr", { class: "link-row attn-flow", "data-flow": `${f.layer}.${f.head}.${f.query_pos}.${f.key_pos}` },
        el("td", {}, `L${f.layer}H${f.head}`), el("td", {}, `${tok(f.key_pos)} @${f.key_pos} → ${tok(f.query_pos)}`), el("td", { class: "w" }, pct(f.weight)));
      row.addEventListener("click", () => showQK(f.layer, f.head, f.query_pos, f.key_pos));
      return row;
    })),
    el("p", { class: "muted" }, "click a flow for its QK attribution; click an edge's \"heads\" in the Node pane or a subgraph link for its head loadings"),
    source(slot),
  ];
}

// A QK side: the graph's own title for it when the graph has the node, else its id spelt out.
function nodeButton(id, side) {
  const g = state.graph;
  const n = g && g.byId.get(id);
  const parts = id.split("_");
  let label = n ? nodeTitle(g, n, state.clerps) : id;
  if (!n && parts[0] === "E") label = `Emb ${JSON.stringify(g ? g.tokens[+parts[2]] ?? "" : "")}`;
  else if (!n && parts[1] === "-1") label = `Error L${parts[0]}`;
  else if (!n) label = `L${parts[0]} #${parts[1]}`;
  return el("button", { class: `qk-node qk-${side}`, "data-node": id, title: id, onclick: () => openSide(id) }, `${label} @${parts[2]}`);
}

// Open a side: in the graph view a node the graph has goes to the inspector and feature card;
// else (not in the pruned graph, or the heads view) its dashboard shows here.
function openSide(id) {
  const g = state.graph;
  if (g && g.byId.has(id) && state.view === "graph") {
    attn.node = null;
    state.clickedId = id;
    emit("select");
    render();
    return;
  }
  const [layer, feature] = id.split("_");
  const isFeature = layer !== "E" && feature !== "-1";
  attn.node = { id, status: isFeature ? "loading" : "done", record: null };
  render();
  if (!isFeature) return;
  const mine = attn.node;
  loadFeature(+layer, +feature).then((rec) => { mine.record = rec; }, () => {}).then(() => {
    mine.status = "done";
    if (attn.node === mine) render();
  });
}

function nodeCard() {
  const { id, status: st, record } = attn.node;
  const [layer, feature, pos] = id.split("_");
  const kind = layer === "E" ? KIND.token : feature === "-1" ? KIND.error : KIND.feature;
  const head = el("h3", { id: "attn-node-title" }, kind === KIND.feature ? `Layer ${layer} · feature ${feature} @${pos}` : `${kind} ${id}`);
  const note = kind === KIND.feature ? "not among the pruned graph's nodes" : "not among the pruned graph's nodes (no dashboard for this kind)";
  if (st === "loading") return el("div", { class: "attn-node" }, head, el("p", { class: "muted" }, "loading…"));
  const parts = [head, el("p", { class: "muted" }, note)];
  if (record) {
    if (record.label) parts.push(el("p", {}, record.label));
    if (record.top_logits) parts.push(el("div", {}, ...record.top_logits.slice(0, 8).map((t) => el("span", { class: "chip pos" }, t))));
  } else if (kind === KIND.feature) parts.push(el("p", { class: "muted" }, "no dashboard for this feature"));
  return el("div", { class: "attn-node" }, ...parts);
}
