// Big graphs by level of detail (server/lod.py, docs/web-lab.md "Big graphs"): a graph opens
// with every node and only its LOD_LINKS strongest links; a clicked node gets all of its links,
// and a zoomed-in view (at most VIEW_NODES nodes on screen) the strongest links of the nodes in
// it, merged into the page's graph as they arrive. Files with fewer links come whole.
import { emit, on, state } from "./state.js";

export const LOD_LINKS = 100000; // up to this many links a file comes whole
const NODE_LINKS = 5000; // a clicked node's links
const VIEW_NODES = 6000; // zoomed in to this many nodes or fewer: ask for their links
const VIEW_LINKS = 60000;
const MAX_LOADED = 400000; // links held by the page before zooming stops asking for more

// The graph file `slug` by level of detail; pages served without the route (the inline page)
// read the whole file. Errors carry the HTTP status (404: no such graph).
export async function fetchGraph(slug) {
  const name = encodeURIComponent(slug);
  const r = await fetch(`api/lod/${name}?links=${LOD_LINKS}`, { cache: "no-cache" });
  if (r.ok) return r.json();
  const whole = await fetch(`data/${name}.json`, { cache: "no-cache" });
  if (!whole.ok) throw Object.assign(new Error(`data/${name}.json: ${whole.status}`), { status: whole.status });
  return whole.json();
}

// After parseGraph: remember what the file holds beyond the links sent, and each node's index in
// the file's node list (the routes' link columns are such indices).
export function attachLod(g, data) {
  const lod = data.lod;
  g.lod = lod && lod.links_total > lod.links_sent ? { ...lod, asked: new Set() } : null;
  if (!g.lod) return;
  g.fileNodes = (data.nodes || []).map((raw) => g.byId.get(String(raw.node_id)) || null);
  g.fileNodes.forEach((n, i) => { if (n && n.fileIndex == null) n.fileIndex = i; });
  g.linkKeys = new Set(g.links.map((l) => key(g, l.source, l.target)));
}

const key = (g, s, t) => s.fileIndex * g.fileNodes.length + t.fileIndex;

// Add the links of an edges answer ({source, target, weight} columns) that the page lacks.
function merge(g, cols) {
  const touched = new Set();
  let added = 0;
  for (let i = 0; i < cols.source.length; i++) {
    const s = g.fileNodes[cols.source[i]];
    const t = g.fileNodes[cols.target[i]];
    if (!s || !t || s === t) continue;
    const k = key(g, s, t);
    if (g.linkKeys.has(k)) continue;
    g.linkKeys.add(k);
    const link = { source: s, target: t, weight: cols.weight[i] };
    g.links.push(link);
    s.outputs.push(link);
    t.inputs.push(link);
    touched.add(s);
    touched.add(t);
    added++;
  }
  for (const n of touched) {
    n.inputs.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    n.outputs.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    n.absIn = n.inputs.reduce((a, l) => a + Math.abs(l.weight), 0);
  }
  return added;
}

async function askEdges(g, ids, limit) {
  const r = await fetch(`api/lod/${encodeURIComponent(state.slug)}/edges`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ nodes: ids, min_abs_weight: 0, limit }),
  });
  if (!r.ok || state.graph !== g) return 0;
  return merge(g, await r.json());
}

// Wire the view: a clicked node's links, and a zoomed-in view's links, once each.
export function setupLod(view) {
  on(async (what) => {
    const g = state.graph;
    const id = state.clickedId;
    if (what !== "select" || !g || !g.lod || !id || g.lod.asked.has(id)) return;
    g.lod.asked.add(id);
    if (await askEdges(g, [id], NODE_LINKS)) {
      view.redraw();
      if (state.clickedId === id) emit("select"); // the inspector lists them
    }
  });
  view.onSettle = async () => {
    const g = state.graph;
    if (!g || !g.lod || view.zoom.k < 2 || g.links.length > MAX_LOADED) return;
    const ids = view.onScreen().filter((n) => !g.lod.asked.has(`view:${n.id}`)).map((n) => n.id);
    if (!ids.length || ids.length > VIEW_NODES) return;
    ids.forEach((x) => g.lod.asked.add(`view:${x}`));
    if (await askEdges(g, ids, VIEW_LINKS)) view.redraw();
  };
}
