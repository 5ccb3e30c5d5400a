// Validation files beside the graphs (docs/validation.md): the faithfulness pane of a graph
// ({slug}.faithfulness.json: necessity and sufficiency against the pruning threshold) and the
// diff view of two graphs ({a}__vs__{b}.diff.json: shared, only in A, only in B).
import { format } from "d3-format";
import { el } from "./dom.js";
import { state } from "./state.js";

const f3 = format(".3f");
const pct = format(".1%");
const $ = (id) => document.getElementById(id);
export const DIFF_COLORS = { shared: "#7c3aed", only_a: "#2563eb", only_b: "#ea580c" };
const LINES = {
  sufficiency: { color: "#16a34a", label: "sufficiency (circuit alone)" },
  necessity: { color: "#dc2626", label: "necessity (circuit ablated)" },
  replacement: { color: "#6b7280", dash: "5 3", label: "replacement score" },
  completeness: { color: "#6b7280", dash: "1 3", label: "completeness score" },
};

export const validation = { files: { faithfulness: [], diffs: [] }, faith: null, diff: null, metric: "effect" };

export async function loadValidationList() {
  const r = await fetch("api/validation", { cache: "no-cache" }).catch(() => null);
  if (r && r.ok) validation.files = await r.json();
  return validation.files;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

// ---- faithfulness -----------------------------------------------------------------------
// Fetch and show the open graph's faithfulness file, or hide the pane when it has none.
export async function loadFaithfulness(slug, { setPruning }) {
  validation.faith = null;
  validation.setPruning = setPruning;
  document.body.classList.remove("has-faith");
  $("faith-pane").hidden = true;
  if (!validation.files.faithfulness.includes(slug)) return;
  try {
    const data = await getJSON(`data/${encodeURIComponent(slug)}.faithfulness.json`);
    if (data.kind !== "circuitlab.faithfulness" || !Array.isArray(data.points)) throw new Error("not a faithfulness file");
    if (state.slug !== slug) return;
    validation.faith = data;
  } catch (e) {
    $("faith").replaceChildren(el("p", { class: "error" }, `${slug}.faithfulness.json: ${e.message}`));
  }
  $("faith-pane").hidden = false;
  document.body.classList.add("has-faith");
  renderFaithfulness();
}

function measureValue(m, metric) {
  if (!m) return null;
  return m[metric] == null ? null : Number(m[metric]);
}

export function renderFaithfulness() {
  const data = validation.faith;
  const box = $("faith");
  if (!data) return;
  const metric = validation.metric;
  const pts = data.points;
  const wrap = el("div", { class: "faith-chart" });
  const W = Math.max(220, box.clientWidth - 16);
  const H = 170;
  const m = { l: 38, r: 10, t: 8, b: 28 };
  const xs = pts.map((p) => p.node_threshold);
  const x0 = Math.min(0, ...xs);
  const x1 = Math.max(1, ...xs);
  const series = {
    sufficiency: pts.map((p) => measureValue(p.sufficiency, metric)),
    necessity: pts.map((p) => measureValue(p.necessity, metric)),
  };
  if (metric === "effect") {
    series.replacement = pts.map((p) => p.replacement);
    series.completeness = pts.map((p) => p.completeness);
  }
  const ys = Object.values(series).flat().filter((v) => v != null);
  const ref = metric === "effect" ? [] : [measureValue(data.clean, metric), measureValue(data.all_ablated, metric)].filter((v) => v != null);
  let y0 = Math.min(metric === "effect" || metric === "prob" ? 0 : Infinity, ...ys, ...ref);
  let y1 = Math.max(metric === "effect" || metric === "prob" ? 1 : -Infinity, ...ys, ...ref);
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y) => m.t + (1 - (y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const svg = el("svg", { svg: true, width: W, height: H, id: "faith-svg" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const x = x0 + t * (x1 - x0);
    svg.append(el("line", { svg: true, x1: sx(x), x2: sx(x), y1: m.t, y2: H - m.b, class: "grid" }),
      el("text", { svg: true, x: sx(x), y: H - m.b + 12, "text-anchor": "middle", class: "axis" }, format(".2")(x)));
    const y = y0 + t * (y1 - y0);
    svg.append(el("line", { svg: true, x1: m.l, x2: W - m.r, y1: sy(y), y2: sy(y), class: "grid" }),
      el("text", { svg: true, x: m.l - 4, y: sy(y) + 3, "text-anchor": "end", class: "axis" }, format(".2~f")(y)));
  }
  svg.append(el("text", { svg: true, x: (W + m.l) / 2, y: H - 3, "text-anchor": "middle", class: "axis" }, "node threshold (share of influence kept)"));
  if (metric !== "effect") {
    for (const [key, label] of [["clean", "clean"], ["all_ablated", "all ablated"]]) {
      const v = measureValue(data[key], metric);
      if (v == null) continue;
      svg.append(el("line", { svg: true, x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "ref" }),
        el("text", { svg: true, x: W - m.r - 2, y: sy(v) - 3, "text-anchor": "end", class: "axis" }, label));
    }
  }
  const prune = state.pruning;
  if (prune >= x0 && prune <= x1) {
    svg.append(el("line", { svg: true, x1: sx(prune), x2: sx(prune), y1: m.t, y2: H - m.b, class: "prune-mark", id: "faith-prune" }));
  }
  for (const [name, values] of Object.entries(series)) {
    const style = LINES[name];
    const d = values.map((v, i) => (v == null ? null : `${sx(xs[i])},${sy(v)}`)).filter(Boolean);
    if (d.length > 1) svg.append(el("polyline", { svg: true, points: d.join(" "), fill: "none", stroke: style.color, "stroke-width": name.length > 11 ? 1.2 : 2, "stroke-dasharray": style.dash || null }));
    if (name === "sufficiency" || name === "necessity") {
      values.forEach((v, i) => {
        if (v == null) return;
        const c = el("circle", { svg: true, cx: sx(xs[i]), cy: sy(v), r: 4, fill: style.color, class: `faith-point ${name}`, "data-threshold": xs[i], onclick: () => validation.setPruning(xs[i]) });
        c.append(el("title", { svg: true }, `${name} at ${xs[i]}: ${f3(v)} (click: prune there)`));
        svg.append(c);
      });
    }
  }
  wrap.append(svg);
  const legend = el("div", { class: "faith-legend" }, ...Object.keys(series).map((name) => {
    const sw = el("span", { class: `swatch${LINES[name].dash ? " dashed" : ""}` });
    sw.style.borderColor = LINES[name].color;
    if (!LINES[name].dash) sw.style.background = LINES[name].color;
    return el("span", { class: "legend-item" }, sw, LINES[name].label);
  }));
  const picker = el("select", { id: "faith-metric", title: "y axis", onchange: (e) => { validation.metric = e.target.value; renderFaithfulness(); } },
    ...[["effect", "effect (0 = all ablated, 1 = clean)"], ["prob", "target probability"], ["logit_demeaned", "target logit − mean"], ["logit", "target logit"]].map(([v, t]) => el("option", { value: v }, t)));
  picker.value = metric;
  const target = data.target || {};
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "target"), el("dd", {}, `${JSON.stringify(target.token)} · ${data.mode}${data.ablate_errors ? " · errors ablated outside the circuit" : ""}`),
    el("dt", {}, "clean"), el("dd", {}, measureText(data.clean)),
    el("dt", {}, "all ablated"), el("dd", {}, measureText(data.all_ablated)),
    el("dt", {}, "full graph"), el("dd", { id: "faith-full" }, `replacement ${f3(data.full_graph.replacement)} · completeness ${f3(data.full_graph.completeness)}`),
    data.pinned ? el("dt", {}, "pinned") : null,
    data.pinned ? el("dd", { id: "faith-pinned" }, `${data.pinned.node_ids.length} nodes: sufficiency ${fmt(data.pinned.sufficiency && data.pinned.sufficiency.effect)}, necessity ${fmt(data.pinned.necessity && data.pinned.necessity.effect)}, replacement ${fmt(data.pinned.replacement)}, completeness ${fmt(data.pinned.completeness)}`) : null);
  const table = el("table", { class: "links faith-table" },
    el("tr", {}, ...["threshold", "features", "errors", "edges", "sufficiency", "necessity", "replacement", "completeness"].map((h) => el("th", {}, h))),
    ...pts.map((p) => el("tr", { class: `link-row${Math.abs(p.node_threshold - prune) < 1e-9 ? " current" : ""}`, onclick: () => validation.setPruning(p.node_threshold) },
      el("td", {}, String(p.node_threshold)), el("td", { class: "w" }, String(p.n_features)), el("td", { class: "w" }, String(p.n_errors)),
      el("td", { class: "w" }, String(p.n_edges)), el("td", { class: "w" }, fmt(p.sufficiency && p.sufficiency.effect)),
      el("td", { class: "w" }, fmt(p.necessity && p.necessity.effect)), el("td", { class: "w" }, fmt(p.replacement)), el("td", { class: "w" }, fmt(p.completeness)))));
  box.replaceChildren(picker, wrap, legend, facts, table);
}

function fmt(v) {
  return v == null ? "–" : f3(v);
}

function measureText(mm) {
  if (!mm) return "–";
  return `logit ${fmt(mm.logit)} · p ${mm.prob == null ? "–" : pct(mm.prob)} · rank ${mm.rank ?? "–"}`;
}

// ---- diff view --------------------------------------------------------------------------
export async function showDiff(file, { openGraph }) {
  const box = $("diff");
  validation.openGraph = openGraph;
  try {
    const data = await getJSON(`data/${encodeURIComponent(file)}`);
    if (data.kind !== "circuitlab.diff" || !data.nodes || !data.edges) throw new Error("not a diff file (docs/validation.md)");
    validation.diff = { file, data, what: validation.diff ? validation.diff.what : "nodes" };
  } catch (e) {
    validation.diff = null;
    box.replaceChildren(el("p", { class: "error" }, `${file}: ${e.message}`));
    return;
  }
  renderDiff();
}

function renderDiff() {
  const { data, what } = validation.diff;
  const box = $("diff");
  const s = data.settings || {};
  const side = (key, label) => {
    const g = data[key] || {};
    return el("div", { class: `diff-side diff-${key}` }, el("strong", {}, `${label}: `),
      el("a", { href: `?slug=${encodeURIComponent(g.slug)}`, class: "diff-open", "data-side": key, onclick: (e) => { e.preventDefault(); validation.openGraph(g.slug, null); } }, g.slug),
      el("span", { class: "muted" }, ` ${JSON.stringify(g.prompt || "")} · ${g.model_name || ""}${g.transcoder_name ? ` / ${g.transcoder_name}` : ""}`));
  };
  const groups = data[what];
  const counts = Object.fromEntries(["shared", "only_a", "only_b"].map((k) => [k, (groups[k] || []).length]));
  const toggle = el("span", { class: "diff-toggle" }, ...["nodes", "edges"].map((w) => el("button", { class: w === what ? "on" : "", "data-what": w, onclick: () => { validation.diff.what = w; renderDiff(); } }, w)));
  box.replaceChildren(
    el("div", { class: "diff-head" }, side("a", "A"), side("b", "B")),
    el("div", { class: "diff-metrics", id: "diff-metrics" },
      metric("node overlap", data.node_overlap), metric("edge overlap", data.edge_overlap), metric("spectral distance", data.spectral_distance),
      el("span", { class: "muted" }, `thresholds ${s.node_threshold}/${s.edge_threshold}${s.position_aware ? " · position-aware" : ""}${s.aligned ? ` · aligned by decoder cosine ≥ ${s.align_threshold}` : ""}`)),
    el("div", { class: "diff-bar" }, toggle, ...["shared", "only_a", "only_b"].map((k) => chip(k, counts[k]))),
    el("div", { class: "diff-body" }, scatter(groups, what), ...["shared", "only_a", "only_b"].map((k) => column(k, groups[k] || [], what))),
  );
}

function metric(label, v) {
  return el("span", { class: "diff-metric" }, el("span", { class: "muted" }, `${label} `), el("strong", {}, v == null ? "–" : f3(v)));
}

const TITLES = { shared: "shared", only_a: "only in A", only_b: "only in B" };

function chip(kind, n) {
  const sw = el("span", { class: "swatch" });
  sw.style.background = DIFF_COLORS[kind];
  return el("span", { class: "legend-item", "data-count": kind }, sw, `${TITLES[kind]} ${n}`);
}

function itemKey(item, what) {
  return what === "nodes" ? item.key : `${item.source} → ${item.target}`;
}

// A node id (edges: the target of the first pair) of side "a" or "b" to open in its graph.
function firstId(item, sideKey, what) {
  const ids = item[sideKey] || [];
  if (!ids.length) return null;
  return what === "nodes" ? ids[0] : ids[0][1];
}

function openItem(item, what, kind) {
  const sideKey = kind === "only_b" ? "b" : "a";
  const slug = validation.diff.data[sideKey].slug;
  validation.openGraph(slug, firstId(item, sideKey, what));
}

function column(kind, items, what) {
  const m = Math.max(1e-9, ...items.map((x) => Math.max(x.weight_a || 0, x.weight_b || 0)));
  const bar = (w, cls) => {
    const b = el("span", { class: `bar ${cls}` });
    b.style.width = `${Math.round((50 * (w || 0)) / m)}px`;
    return b;
  };
  return el("div", { class: "diff-col", "data-kind": kind },
    el("h3", {}, el("span", { class: "swatch", style: `background:${DIFF_COLORS[kind]}` }), ` ${TITLES[kind]} (${items.length})`),
    el("table", { class: "links" },
      el("tr", {}, el("th", {}, what === "nodes" ? "feature" : "edge"), el("th", {}, "A"), el("th", {}, "B")),
      ...items.slice(0, 200).map((x) => el("tr", { class: "link-row diff-row", title: "open in its graph", onclick: () => openItem(x, what, kind) },
        el("td", { class: "name" }, itemKey(x, what), x.cosine != null ? el("span", { class: "muted" }, ` cos ${f3(x.cosine)}`) : null),
        el("td", { class: "w" }, x.weight_a ? bar(x.weight_a, "diff-a") : null, ` ${x.weight_a ? pct(x.weight_a) : "–"}`),
        el("td", { class: "w" }, x.weight_b ? bar(x.weight_b, "diff-b") : null, ` ${x.weight_b ? pct(x.weight_b) : "–"}`)))),
    items.length > 200 ? el("p", { class: "muted" }, `…and ${items.length - 200} more`) : null);
}

// weight in A (x) against weight in B (y), square-root scales, coloured by group.
function scatter(groups, what) {
  const S = 220;
  const m = 28;
  const all = ["shared", "only_a", "only_b"].flatMap((k) => (groups[k] || []).map((x) => [k, x]));
  const top = Math.max(1e-9, ...all.map(([, x]) => Math.max(x.weight_a || 0, x.weight_b || 0)));
  const sc = (w) => Math.sqrt(Math.max(0, w || 0) / top) * (S - m - 6);
  const svg = el("svg", { svg: true, width: S, height: S, class: "diff-scatter" });
  svg.append(
    el("line", { svg: true, x1: m, y1: S - m, x2: S - 6, y2: 6, class: "grid" }),
    el("line", { svg: true, x1: m, y1: S - m, x2: S - 6, y2: S - m, class: "axisline" }),
    el("line", { svg: true, x1: m, y1: S - m, x2: m, y2: 6, class: "axisline" }),
    el("text", { svg: true, x: (S + m) / 2, y: S - 8, "text-anchor": "middle", class: "axis" }, "weight in A"),
    el("text", { svg: true, x: 10, y: (S - m) / 2, "text-anchor": "middle", class: "axis", transform: `rotate(-90 10 ${(S - m) / 2})` }, "weight in B"));
  for (const [kind, x] of all) {
    const c = el("circle", { svg: true, cx: m + sc(x.weight_a), cy: S - m - sc(x.weight_b), r: 4, fill: DIFF_COLORS[kind], "fill-opacity": 0.75, class: `diff-point ${kind}`, onclick: () => openItem(x, what, kind) });
    c.append(el("title", { svg: true }, `${itemKey(x, what)} · A ${pct(x.weight_a || 0)} · B ${pct(x.weight_b || 0)}`));
    svg.append(c);
  }
  return el("div", { class: "diff-col scatter-col" }, el("h3", {}, `${what}: weight in A vs B`), svg);
}
