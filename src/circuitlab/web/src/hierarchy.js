// The dendrogram of a graph file's circuit_suggestions (docs/circuits.md, circuits/suggestions.py):
// leaf i is feature node features[i]; merge i joins clusters merges[i] into cluster n + i
// (scipy's linkage layout), in order of increasing height. Cutting at k groups undoes the last
// k - 1 merges, exactly as Dendrogram.cut does in Python.

export class Hierarchy {
  // raw: the file's circuit_suggestions; graph: the parsed graph (labels of deep clusters).
  constructor(raw, graph) {
    const problem = check(raw);
    if (problem) throw new Error(`circuit_suggestions ${problem}; rewrite the file with create_graph_files(..., suggestions=True)`);
    this.graph = graph;
    this.n = raw.features.length;
    this.ids = raw.features.map(String);
    this.merges = raw.merges;
    this.labels = raw.labels && typeof raw.labels === "object" ? raw.labels : {};
    this.maxGroups = Math.max(1, Math.min(this.n, Number(raw.max_groups) || 64));
    this.defaultGroups = Math.max(1, Math.min(this.maxGroups, Number(raw.default_groups) || 1));
    this.parent = new Int32Array(Math.max(0, 2 * this.n - 1)).fill(-1);
    this.merges.forEach(([a, b], i) => { this.parent[a] = this.n + i; this.parent[b] = this.n + i; });
    this.leafCache = new Map();
  }

  // The two clusters merged into `c`, or null for a leaf.
  children(c) {
    return c < this.n ? null : this.merges[c - this.n];
  }

  // Leaf indices under `c`, ascending.
  leaves(c) {
    let out = this.leafCache.get(c);
    if (out) return out;
    out = [];
    const stack = [c];
    while (stack.length) {
      const x = stack.pop();
      const kids = this.children(x);
      if (kids) stack.push(kids[0], kids[1]);
      else out.push(x);
    }
    out.sort((a, b) => a - b);
    this.leafCache.set(c, out);
    return out;
  }

  // The lab node ids under `c` that the graph holds.
  members(c) {
    return this.leaves(c).map((i) => this.ids[i]).filter((id) => this.graph.byId.has(id));
  }

  // The clusters of the cut at `k` groups, ordered by their smallest leaf (Dendrogram.cut's order).
  cut(k) {
    const n = this.n;
    k = Math.max(1, Math.min(n, k));
    const roots = new Set();
    for (let i = 0; i < n; i++) roots.add(i);
    for (let i = 0; i < n - k; i++) {
      const [a, b] = this.merges[i];
      roots.delete(a);
      roots.delete(b);
      roots.add(n + i);
    }
    return [...roots].sort((a, b) => this.leaves(a)[0] - this.leaves(b)[0]);
  }

  // Whether `c` lies under `ancestor` (or is it).
  isUnder(c, ancestor) {
    for (let x = c; x >= 0; x = this.parent[x]) if (x === ancestor) return true;
    return false;
  }

  // The file's automatic label, else one made from where the members sit (deep clusters).
  label(c) {
    const saved = this.labels[String(c)];
    if (saved) return String(saved);
    const nodes = this.members(c).map((id) => this.graph.byId.get(id));
    if (!nodes.length) return "auto: (no member in this file)";
    const layers = nodes.map((n) => n.layer);
    const pos = [...new Set(nodes.map((n) => n.pos))].sort((a, b) => a - b);
    const shown = pos.slice(0, 2).map((p) => JSON.stringify(String(this.graph.tokens[p] ?? `#${p}`).trim())).join(", ");
    return `auto: ${nodes.length} features, L${Math.min(...layers)}-${Math.max(...layers)} @ ${shown}${pos.length > 2 ? ", ..." : ""}`;
  }
}

function check(raw) {
  if (!raw || typeof raw !== "object") return "is not an object";
  const { features, merges } = raw;
  if (!Array.isArray(features) || !features.length) return "has no features";
  const n = features.length;
  if (!Array.isArray(merges) || merges.length !== n - 1) return `needs ${n - 1} merges for ${n} features`;
  for (let i = 0; i < merges.length; i++) {
    const m = merges[i];
    const ok = Array.isArray(m) && m.length === 2 && m.every((c) => Number.isInteger(c) && c >= 0 && c < n + i);
    if (!ok) return `merge ${i} must join two earlier clusters (ids below ${n + i})`;
  }
  return "";
}
