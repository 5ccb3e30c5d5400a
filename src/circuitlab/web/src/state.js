// The page's state, its URL mirror and its save format (qParams).
import { asJSON, asList } from "./data.js";

const listeners = new Set();

export const state = {
  slug: "",
  graph: null,
  clickedId: "",
  hoveredId: "",
  hoverFrozen: false, // Shift froze the hover card (it stays when the pointer leaves the graph)
  pinned: [], // node ids, in pin order
  supernodes: [], // [label, ...memberIds]
  clerps: new Map(), // feature index (string) -> label
  sgPos: {}, // node or supernode key -> [x, y] in the subgraph
  pruning: 0.8,
  linkType: "both",
  dirty: false,
  view: "graph", // or "heads", "diff"
  diffFile: "",
  missing: "", // a slug from the URL that names no graph
  version: 0, // the file's annotation version the edits are made on (sent back with saves)
  base: null, // the file's qParams at that version (what a merge compares our edits with)
  loading: false, // a graph is being fetched: the URL still belongs to the one shown
};

// The node the inspector and feature card show: the hovered one, else the clicked one.
export function cardId() {
  return state.hoveredId || state.clickedId;
}

// `what` names what changed: "graph", "select", "hover", "pins", "prune", "labels", "layout".
export function on(fn) { listeners.add(fn); }
export function emit(what, { dirty = false } = {}) {
  if (dirty) state.dirty = true;
  for (const fn of listeners) fn(what);
  if (what !== "hover") scheduleUrl();
}

// Load the annotations saved in the file, then let the URL override them.
export function applyQParams(q, url) {
  const g = state.graph;
  const pick = (key) => (url && url.has(key) ? url.get(key) : q[key]);
  state.clickedId = String(pick("clickedId") || "");
  if (!g.byId.has(state.clickedId)) state.clickedId = "";
  state.pinned = asList(pick("pinnedIds")).filter((id) => g.byId.has(id));
  state.supernodes = asJSON(pick("supernodes"), []).filter(
    (s) => Array.isArray(s) && s.length > 1,
  ).map((s) => [String(s[0]), ...s.slice(1).map(String).filter((id) => g.byId.has(id))]);
  state.clerps = new Map(asJSON(pick("clerps"), []).map(([k, v]) => [String(k), String(v)]));
  state.sgPos = asJSON(q.sg_pos, {}) || {};
  if (typeof state.sgPos !== "object") state.sgPos = {};
  const threshold = g.meta.node_threshold || 0.8;
  const pr = parseFloat(pick("pruningThreshold"));
  state.pruning = Number.isFinite(pr) ? pr : threshold;
  state.linkType = String(pick("linkType") || "both");
  state.dirty = false;
}

export function qParams() {
  return {
    pinnedIds: state.pinned,
    supernodes: state.supernodes,
    clerps: [...state.clerps.entries()],
    pruningThreshold: state.pruning,
    linkType: state.linkType,
    clickedId: state.clickedId,
    sg_pos: state.sgPos,
  };
}

let urlTimer = 0;
function scheduleUrl() {
  clearTimeout(urlTimer);
  urlTimer = setTimeout(writeUrl, 150);
}

export function cancelUrlWrite() {
  clearTimeout(urlTimer);
}

export function writeUrl() {
  clearTimeout(urlTimer);
  if (state.loading) return;
  const p = new URLSearchParams();
  if (state.view === "diff") {
    p.set("diff", state.diffFile);
    history.replaceState(null, "", `${location.pathname}?${p}`);
    return;
  }
  if (state.view === "heads") {
    p.set("view", "heads");
    const current = new URLSearchParams(location.search);
    for (const [k, v] of current) if (k.startsWith("heads") || k === "head") p.set(k, v);
  }
  if (!state.slug) {
    if (state.missing) p.set("slug", state.missing);
    const url = `${location.pathname}${p.size ? `?${p}` : ""}`;
    if (url !== location.pathname + location.search) history.replaceState(null, "", url);
    return;
  }
  p.set("slug", state.slug);
  if (state.clickedId) p.set("clickedId", state.clickedId);
  if (state.pinned.length) p.set("pinnedIds", state.pinned.join(","));
  if (state.supernodes.length) p.set("supernodes", JSON.stringify(state.supernodes));
  if (state.clerps.size) p.set("clerps", JSON.stringify([...state.clerps.entries()]));
  p.set("pruningThreshold", String(state.pruning));
  const url = `${location.pathname}?${p.toString()}`;
  if (url !== location.pathname + location.search) history.replaceState(null, "", url);
}

export function togglePin(id) {
  const i = state.pinned.indexOf(id);
  if (i >= 0) {
    state.pinned.splice(i, 1);
    state.supernodes = state.supernodes
      .map((s) => s.filter((x, j) => j === 0 || x !== id))
      .filter((s) => s.length > 2);
  } else {
    state.pinned.push(id);
  }
  emit("pins", { dirty: true });
}

// Group nodes (ids or supernode labels' members) into one supernode.
export function groupNodes(ids) {
  const members = new Set();
  const keep = [];
  for (const s of state.supernodes) {
    if (s.slice(1).some((id) => ids.includes(id))) s.slice(1).forEach((id) => members.add(id));
    else keep.push(s);
  }
  ids.forEach((id) => members.add(id));
  if (members.size < 2) return;
  for (const id of members) if (!state.pinned.includes(id)) state.pinned.push(id);
  state.supernodes = [...keep, [`group ${keep.length + 1}`, ...members]];
  emit("pins", { dirty: true });
}

export function ungroup(index) {
  state.supernodes.splice(index, 1);
  emit("pins", { dirty: true });
}

export function setSupernodeLabel(index, label) {
  state.supernodes[index][0] = label;
  emit("labels", { dirty: true });
}

export function setClerp(featureIndex, label) {
  if (label) state.clerps.set(String(featureIndex), label);
  else state.clerps.delete(String(featureIndex));
  emit("labels", { dirty: true });
}

// Pruning keeps the nodes that hold the top `pruning` share of influence, as the exporter does
// (graph/pruning.py): the features and errors ranked above the node whose cumulative influence
// first reaches the threshold, and that node itself (its cumulative share is past the
// threshold). Tokens, logits and pinned nodes always show; at or above the file's own
// node_threshold every node of the file shows (the file holds exactly what it kept).
export function isVisible(n) {
  if (n.kind === "token" || n.kind === "logit") return true;
  if (n.influence == null || n.influence <= pruneCut()) return true;
  return state.pinned.includes(n.id);
}

const EPS = 1e-6; // cumulative scores are float32 in files; the exporter summed in float64
let cutCache = { graph: null, pruning: NaN, cut: Infinity };

function pruneCut() {
  const g = state.graph;
  if (cutCache.graph !== g || cutCache.pruning !== state.pruning) {
    cutCache = { graph: g, pruning: state.pruning, cut: computeCut(g, state.pruning) };
  }
  return cutCache.cut;
}

// The largest cumulative influence still shown: the first one at or past the threshold.
function computeCut(g, pruning) {
  const fileThreshold = g ? Number(g.meta.node_threshold) : NaN;
  if (!g || (Number.isFinite(fileThreshold) && pruning >= fileThreshold - EPS)) return Infinity;
  let cut = Infinity;
  for (const n of g.nodes) {
    if (n.influence != null && n.influence >= pruning + EPS && n.influence < cut) cut = n.influence;
  }
  return cut;
}
