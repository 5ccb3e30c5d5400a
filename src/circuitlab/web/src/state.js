// The page's state, its URL mirror and its save format (qParams).
import { asJSON, asList } from "./data.js";

const listeners = new Set();

export const state = {
  slug: "",
  graph: null,
  clickedId: "",
  hoveredId: "",
  pinned: [], // node ids, in pin order
  supernodes: [], // [label, ...memberIds]
  clerps: new Map(), // feature index (string) -> label
  sgPos: {}, // node or supernode key -> [x, y] in the subgraph
  pruning: 0.8,
  linkType: "both",
  dirty: false,
  view: "graph", // or "heads", "diff"
  diffFile: "",
};

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

export function writeUrl() {
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

// Pruning: features and errors whose cumulative influence exceeds the threshold are hidden;
// tokens, logits and pinned nodes always show.
export function isVisible(n) {
  if (n.kind === "token" || n.kind === "logit") return true;
  if (n.influence == null || n.influence <= state.pruning) return true;
  return state.pinned.includes(n.id);
}
