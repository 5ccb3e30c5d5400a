// The feature card: a feature's dashboard from the store of the graph's own transcoder set.
// api/features/{slug} names that store (or none: "No dashboard for this transcoder set"; see
// server/dashboards.py); its files are under feature_stores/{key}/ (docs/formats.md):
// index.json.gz -> per layer {filename, offsets}; a feature is bytes [offsets[f], offsets[f+1])
// of the layer's file, a 4-byte little-endian length + zlib JSON.
import { format } from "d3-format";
import { el } from "./dom.js";
import { KIND } from "./data.js";
import { cardId, state } from "./state.js";

const num = format(".3~g");
const pct = format(".3~%");
const stores = new Map(); // slug -> Promise<{store, match, note}>
const indexes = new Map(); // store key -> Promise<index | null>
const cache = new Map(); // "key/layer/feature" -> Promise<record | null>

async function inflate(bytes, kind) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(kind));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// Which store serves the graph `slug`: {store: key | null, match, note}.
export function storeFor(slug) {
  if (!stores.has(slug)) {
    stores.set(slug, fetch(`api/features/${encodeURIComponent(slug)}`).then(async (r) => {
      const data = await r.json().catch(() => ({}));
      return r.ok ? data : { store: null, match: null, note: data.detail || `dashboards: ${r.status}` };
    }).catch((e) => ({ store: null, match: null, note: String(e.message || e) })));
  }
  return stores.get(slug);
}

function storeUrl(key, file) {
  return `feature_stores/${encodeURIComponent(key)}/${file}`;
}

function loadIndex(key) {
  if (!indexes.has(key)) {
    indexes.set(key, fetch(storeUrl(key, "index.json.gz")).then(async (r) => {
      if (!r.ok) return null;
      const raw = new Uint8Array(await r.arrayBuffer());
      const gz = raw[0] === 0x1f && raw[1] === 0x8b; // a proxy may already have inflated it
      const idx = JSON.parse(new TextDecoder().decode(gz ? await inflate(raw, "gzip") : raw));
      const layers = idx && idx.layers ? idx.layers : idx;
      return Array.isArray(layers) ? Object.fromEntries(layers.map((v, i) => [String(i), v])) : layers;
    }).catch(() => null));
  }
  return indexes.get(key);
}

// The dashboard record of (layer, feature) in the store serving graph `slug` (default: the open
// graph); null when that graph's transcoder set has no store or the store lacks the feature.
export async function loadFeature(layer, feature, slug = state.slug) {
  const { store } = await storeFor(slug);
  return store == null ? null : loadRecord(store, layer, feature);
}

function loadRecord(store, layer, feature) {
  const key = `${store}/${layer}/${feature}`;
  if (cache.has(key)) return cache.get(key);
  const promise = (async () => {
    const index = await loadIndex(store);
    const entry = index && index[String(layer)];
    if (!entry || feature < 0 || feature + 1 >= entry.offsets.length) return null;
    const start = entry.offsets[feature];
    const end = entry.offsets[feature + 1];
    if (end <= start) return null;
    const r = await fetch(storeUrl(store, entry.filename), { headers: { Range: `bytes=${start}-${end - 1}` } });
    if (!r.ok) return null;
    let buf = new Uint8Array(await r.arrayBuffer());
    if (r.status === 200) buf = buf.slice(start, end); // server ignored the range
    const n = new DataView(buf.buffer, buf.byteOffset).getUint32(0, true);
    return JSON.parse(new TextDecoder().decode(await inflate(buf.slice(4, 4 + n), "deflate")));
  })();
  cache.set(key, promise);
  return promise;
}

export function resetFeatureCache() {
  stores.clear();
  indexes.clear();
  cache.clear();
}

export async function renderFeatureCard(root, hasFeatures) {
  const g = state.graph;
  const id = g ? cardId() : ""; // the clicked node, or the hovered one (the hover card)
  const n = id ? g.byId.get(id) : null;
  if (!n || n.kind !== KIND.feature) {
    root.replaceChildren(el("p", { class: "muted" }, "Click a feature."));
    return;
  }
  const head = el("div", { class: "node-head" }, el("strong", {}, `Layer ${n.layer} · feature ${n.featureIdx}`));
  if (!hasFeatures) {
    root.replaceChildren(head, el("p", { class: "muted" }, "No dashboards: start the server with --features_dir."));
    return;
  }
  root.replaceChildren(head, el("p", { class: "muted" }, "loading…"));
  const wanted = id;
  const slug = state.slug;
  let served = { store: null, note: "" };
  let rec = null;
  try {
    served = await storeFor(slug);
    if (served.store != null) rec = await loadRecord(served.store, n.layer, n.featureIdx);
  } catch (e) {
    console.warn("feature load failed", e);
  }
  if (cardId() !== wanted || state.slug !== slug) return; // the user moved on
  if (served.store == null) {
    root.replaceChildren(head, el("p", { class: "muted", id: "feature-no-store" }, served.note || "No dashboard for this transcoder set."));
    return;
  }
  // matched by name only, or a store (or graph) of unknown transcoder set: say so on the card
  const note = served.note ? el("p", { class: "card-note", id: "feature-store-note" }, served.note) : null;
  if (!rec) {
    root.replaceChildren(head, ...(note ? [note] : []), el("p", { class: "muted" }, "No dashboard for this feature."));
    return;
  }
  root.replaceChildren(head, ...(note ? [note] : []), ...card(rec));
}

function card(rec) {
  const parts = [];
  const stats = [];
  if (rec.activation_frequency != null) stats.push(["frequency", pct(rec.activation_frequency)]);
  if (rec.act_max != null) stats.push(["max activation", num(rec.act_max)]);
  if (rec.label) stats.push(["label", rec.label]);
  parts.push(el("dl", { class: "facts", id: "feature-stats" }, ...stats.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  if (Array.isArray(rec.histogram) && rec.histogram.length) parts.push(histogram(rec.histogram));
  const logits = el("div", { class: "logits" });
  if (rec.top_logits) logits.append(el("div", {}, el("h3", {}, "Top logits"), ...rec.top_logits.slice(0, 10).map((t) => el("span", { class: "chip pos" }, t))));
  if (rec.bottom_logits) logits.append(el("div", {}, el("h3", {}, "Bottom logits"), ...rec.bottom_logits.slice(0, 10).map((t) => el("span", { class: "chip neg" }, t))));
  parts.push(logits);
  const actMax = rec.act_max || 1;
  for (const q of rec.examples_quantiles || []) {
    parts.push(el("h3", {}, q.quantile_name || "examples"));
    for (const ex of (q.examples || []).slice(0, 8)) parts.push(example(ex, actMax));
  }
  return parts;
}

function example(ex, actMax) {
  const line = el("div", { class: "example" });
  const acts = ex.tokens_acts_list || [];
  (ex.tokens || []).forEach((tok, i) => {
    const a = Math.max(0, Number(acts[i]) || 0) / actMax;
    const span = el("span", { class: i === ex.train_token_ind ? "tok peak" : "tok", title: num(acts[i] || 0) }, tok.replace(/\n/g, "⏎"));
    if (a > 0) span.style.background = `rgba(249,115,22,${Math.min(1, 0.15 + 0.85 * a)})`;
    line.append(span);
  });
  return line;
}

function histogram(counts) {
  const w = 240;
  const h = 48;
  const max = Math.max(...counts, 1);
  const bw = w / counts.length;
  const svg = el("svg", { width: w, height: h, class: "histogram", id: "feature-histogram" });
  counts.forEach((c, i) => {
    const bh = (h - 2) * Math.sqrt(c / max);
    svg.append(el("rect", { svg: true, x: i * bw, y: h - bh, width: Math.max(1, bw - 1), height: bh }));
  });
  return el("div", {}, el("h3", {}, "Activation histogram"), svg);
}
