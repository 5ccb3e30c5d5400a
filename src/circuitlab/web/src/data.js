// Graph files -> the page's model. Reads circuitlab's and circuit-tracer's files alike (see
// docs/formats.md): kinds come from feature_type, rows from layer, columns from ctx_idx.

export const KIND = { feature: "feature", error: "error", token: "token", logit: "logit" };

export function nodeKind(n) {
  const t = n.feature_type || "";
  if (t === "embedding") return KIND.token;
  if (t === "logit") return KIND.logit;
  if (t.includes("error")) return KIND.error;
  return KIND.feature;
}

// Parse a graph file. Duplicate node ids (circuit-tracer 0.5.0 could write an error node with a
// layer-0 feature's id) keep the first node and are counted in `duplicates`.
export function parseGraph(data) {
  const meta = data.metadata || {};
  const byId = new Map();
  const nodes = [];
  let duplicates = 0;
  for (const raw of data.nodes || []) {
    if (byId.has(raw.node_id)) { duplicates++; continue; }
    const kind = nodeKind(raw);
    const node = {
      id: String(raw.node_id),
      kind,
      raw,
      layer: kind === KIND.token || kind === KIND.logit ? null : parseInt(raw.layer, 10),
      pos: Number(raw.ctx_idx) || 0,
      influence: raw.influence == null ? null : Number(raw.influence),
      activation: raw.activation == null ? null : Number(raw.activation),
      featureIndex: raw.feature,
      featureIdx: kind === KIND.feature ? featureIdxOf(raw) : null,
      clerp: raw.clerp || "",
      prob: Number(raw.token_prob) || 0,
      inputs: [],
      outputs: [],
    };
    byId.set(node.id, node);
    nodes.push(node);
  }
  const links = [];
  for (const l of data.links || []) {
    const s = byId.get(String(l.source));
    const t = byId.get(String(l.target));
    if (!s || !t || s === t) continue;
    const link = { source: s, target: t, weight: Number(l.weight) || 0 };
    links.push(link);
    s.outputs.push(link);
    t.inputs.push(link);
  }
  for (const n of nodes) {
    n.absIn = n.inputs.reduce((a, l) => a + Math.abs(l.weight), 0);
    n.inputs.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    n.outputs.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
  }
  const layers = nodes.filter((n) => n.layer !== null && !Number.isNaN(n.layer)).map((n) => n.layer);
  const nLayers = Math.max(meta.n_layers || 0, layers.length ? Math.max(...layers) + 1 : 0);
  const tokens = meta.prompt_tokens || [];
  const nPos = Math.max(tokens.length, ...nodes.map((n) => n.pos + 1), 1);
  let maxAbs = 0;
  for (const l of links) maxAbs = Math.max(maxAbs, Math.abs(l.weight));
  return { meta, qParams: data.qParams || {}, nodes, links, byId, nLayers, nPos, tokens, maxAbs, duplicates };
}

// The transcoder feature number of a feature node: node ids are "{layer}_{feature}_{pos}".
function featureIdxOf(raw) {
  const parts = String(raw.node_id).split("_");
  const f = parseInt(parts[1], 10);
  return Number.isNaN(f) ? null : f;
}

// qParams values may be arrays/objects (circuitlab) or raw URL strings (circuit-tracer).
export function asList(v) {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === "string" && v) return v.split(",").filter(Boolean);
  return [];
}

export function asJSON(v, fallback) {
  if (v == null || v === "") return fallback;
  if (typeof v !== "string") return v;
  try { return JSON.parse(v); } catch { return fallback; }
}

export function tokenText(graph, pos) {
  const t = graph.tokens[pos];
  return t == null ? `#${pos}` : t;
}

// A short human name for a node, used everywhere a node is listed.
export function nodeTitle(graph, n, clerps) {
  const label = labelOf(n, clerps);
  switch (n.kind) {
    case KIND.token: return `Emb: ${JSON.stringify(tokenText(graph, n.pos))}`;
    case KIND.logit: return n.clerp || `Logit ${n.featureIndex}`;
    case KIND.error: return `Error L${n.layer} @${n.pos}`;
    default: return label || `L${n.layer} #${n.featureIdx}`;
  }
}

export function labelOf(n, clerps) {
  if (n.kind !== KIND.feature) return n.clerp;
  const local = clerps.get(String(n.featureIndex));
  return local != null ? local : n.clerp;
}
