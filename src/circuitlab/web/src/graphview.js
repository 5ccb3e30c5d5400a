// The graph pane: layers (rows, embeddings at the bottom, logits on top) x token positions
// (columns). Three stacked canvases: links (redrawn when the layout changes), nodes, and an
// overlay for hover/selection, which is all a mouse move repaints; a quadtree finds the node
// under the pointer. This keeps 5,000 nodes / 100,000 links interactive without SVG.
// Zoom and pan (wheel, drag; resetZoom) are a transform {k, x, y} from layout coordinates to
// the screen: the links' 16 paths are built once per layout and only re-stroked under the new
// transform; nodes keep their screen size (growing a little as you zoom) so crowded cells open.
// Big graphs (30,000 nodes and more): while a zoom or pan is under way each frame only moves a
// snapshot of the links and nodes layers (one image draw, whatever the graph's size); once it
// settles both are drawn again for real (then onSettle, which lod.js uses to fetch the links of
// what is on screen). Nodes are filled in a few batched paths (one per kind and opacity step)
// and only where they are on screen.
import { quadtree } from "d3-quadtree";
import { KIND, nodeTitle, tokenText } from "./data.js";
import { emit, isVisible, state, togglePin } from "./state.js";

const MARGIN = { left: 44, right: 10, top: 10, bottom: 46 };
const COLOR = { feature: "#3b6fb6", error: "#8c8c8c", token: "#2e9d5b", logit: "#e07b1a" };
const POS = "37,99,235"; // positive links
const NEG = "220,38,38"; // negative links
const BUCKETS = 8;
const ALPHAS = 6; // opacity steps of feature and error nodes
const SETTLE_MS = 160; // a zoom or pan this long without input has settled

export const timings = { layout: 0, links: 0, nodes: 0, overlay: 0 };

export class GraphView {
  constructor(wrap) {
    this.wrap = wrap;
    this.canvases = ["links", "nodes", "overlay"].map((id) => wrap.querySelector(`#${id}`));
    this.tooltip = wrap.querySelector("#tooltip");
    this.visible = [];
    this.links = [];
    this.tree = null;
    this.frozen = false;
    this.zoom = { k: 1, x: 0, y: 0 };
    this.linkPaths = null;
    this.snap = null; // the links and nodes layers when a zoom or pan began, with its zoom
    this.onSettle = null; // called when a zoom or pan settles
    new ResizeObserver(() => this.redraw()).observe(wrap);
    const top = this.canvases[2];
    top.addEventListener("mousemove", (e) => this.onMove(e));
    top.addEventListener("mouseleave", (e) => this.onLeave(e));
    top.addEventListener("click", (e) => this.onClick(e));
    top.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    top.addEventListener("mousedown", (e) => this.onDown(e));
    top.addEventListener("dblclick", (e) => { if (!this.nodeAt(e)) this.resetZoom(); });
  }

  // ---- zoom and pan -------------------------------------------------------------------------
  sx(x) { return x * this.zoom.k + this.zoom.x; }
  sy(y) { return y * this.zoom.k + this.zoom.y; }
  sr(r) { return r * Math.min(3, Math.sqrt(this.zoom.k)); }

  setZoom(k, x, y) {
    const { width, height } = this.size;
    k = Math.max(1, Math.min(60, k));
    // keep some of the graph on screen: the layout box may not leave the pane
    x = Math.min(0, Math.max(width * (1 - k), x));
    y = Math.min(0, Math.max(height * (1 - k), y));
    if (!this.snap && this.linkPaths) this.snap = this.snapshot();
    this.zoom = { k, x, y };
    if (!this.zoomFrame) {
      this.zoomFrame = requestAnimationFrame(() => {
        this.zoomFrame = 0;
        if (this.snap) this.moveSnapshot();
        else this.repaint();
      });
    }
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.settle(), SETTLE_MS);
  }

  // The zoom or pan has stopped: draw for real, then tell lod.js.
  settle() {
    this.snap = null;
    this.repaint();
    if (this.onSettle) this.onSettle();
  }

  // Copies of the links and nodes layers, and the zoom they were drawn at.
  snapshot() {
    const layers = this.canvases.slice(0, 2).map((c) => {
      const copy = document.createElement("canvas");
      copy.width = c.width;
      copy.height = c.height;
      copy.getContext("2d").drawImage(c, 0, 0);
      return copy;
    });
    return { layers, zoom: { ...this.zoom } };
  }

  // A frame of a zoom or pan: the snapshot moved from its zoom to the current one
  // (screen point s at zoom 1 goes to (s - x1) * k2 / k1 + x2).
  moveSnapshot() {
    const { layers, zoom } = this.snap;
    const dpr = window.devicePixelRatio || 1;
    const r = this.zoom.k / zoom.k;
    this.canvases.slice(0, 2).forEach((c, i) => {
      const ctx = c.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, c.width, c.height);
      ctx.setTransform(r, 0, 0, r, dpr * (this.zoom.x - zoom.x * r), dpr * (this.zoom.y - zoom.y * r));
      ctx.drawImage(layers[i], 0, 0);
    });
    this.drawOverlay();
  }

  resetZoom() {
    this.setZoom(1, 0, 0);
  }

  onWheel(e) {
    if (!state.graph) return;
    e.preventDefault();
    const rect = this.canvases[2].getBoundingClientRect();
    const mx = e.clientX - rect.left;
    const my = e.clientY - rect.top;
    const { k, x, y } = this.zoom;
    const k2 = Math.max(1, Math.min(60, k * Math.exp(-e.deltaY * (e.deltaMode ? 0.05 : 0.0015))));
    // the layout point under the pointer stays under it
    this.setZoom(k2, mx - ((mx - x) / k) * k2, my - ((my - y) / k) * k2);
  }

  onDown(e) {
    if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const start = { cx: e.clientX, cy: e.clientY, x: this.zoom.x, y: this.zoom.y };
    this.dragged = false;
    const move = (ev) => {
      const dx = ev.clientX - start.cx;
      const dy = ev.clientY - start.cy;
      if (!this.dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
      this.dragged = true;
      this.canvases[2].classList.add("panning");
      this.setZoom(this.zoom.k, start.x + dx, start.y + dy);
    };
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      this.canvases[2].classList.remove("panning");
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  // Everything but the layout (zoom, pan): re-stroke the cached link paths, redraw nodes.
  repaint() {
    if (!state.graph || !this.linkPaths) return this.redraw();
    this.snap = null;
    const [links, nodes] = this.contexts();
    this.linkCtx = links;
    this.nodeCtx = nodes;
    this.strokeLinks();
    this.drawNodes();
    this.drawOverlay();
  }

  // ---- layout -----------------------------------------------------------------------------
  layout() {
    const t0 = performance.now();
    const g = state.graph;
    const { width, height } = this.size;
    this.visible = g.nodes.filter(isVisible);
    const visibleSet = new Set(this.visible);
    this.links = g.links.filter((l) => visibleSet.has(l.source) && visibleSet.has(l.target));
    const rows = g.nLayers + 2;
    const rowOf = (n) => (n.kind === KIND.token ? 0 : n.kind === KIND.logit ? rows - 1 : n.layer + 1);
    const cells = new Map();
    for (const n of this.visible) {
      const key = rowOf(n) * 100000 + n.pos;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(n);
    }
    const colMax = new Array(g.nPos).fill(1);
    for (const [key, list] of cells) {
      const pos = key % 100000;
      colMax[pos] = Math.max(colMax[pos], list.length);
    }
    const weights = colMax.map((c) => Math.max(1, c) ** 0.6);
    const innerW = Math.max(50, width - MARGIN.left - MARGIN.right);
    const innerH = Math.max(50, height - MARGIN.top - MARGIN.bottom);
    const total = weights.reduce((a, b) => a + b, 0);
    this.colX = [];
    let x = MARGIN.left;
    for (const w of weights) {
      const cw = (w / total) * innerW;
      this.colX.push([x, cw]);
      x += cw;
    }
    this.rowH = innerH / rows;
    this.rowY = (r) => MARGIN.top + (rows - 1 - r + 0.5) * this.rowH;
    this.rows = rows;
    const rMax = Math.max(2.5, Math.min(7, this.rowH / 3));
    for (const [key, list] of cells) {
      const row = Math.floor(key / 100000);
      const [cx, cw] = this.colX[key % 100000];
      list.sort((a, b) => (a.influence ?? 2) - (b.influence ?? 2));
      const step = Math.min((cw * 0.9) / list.length, rMax * 2.4);
      const start = cx + cw / 2 - (step * (list.length - 1)) / 2;
      list.forEach((n, i) => {
        n.x = start + i * step;
        n.y = this.rowY(row);
        n.r = radius(n, rMax);
      });
    }
    this.tree = quadtree().x((n) => n.x).y((n) => n.y).addAll(this.visible);
    timings.layout = performance.now() - t0;
  }

  get size() {
    return { width: this.wrap.clientWidth, height: this.wrap.clientHeight };
  }

  contexts() {
    const { width, height } = this.size;
    const dpr = window.devicePixelRatio || 1;
    return this.canvases.map((c) => {
      if (c.width !== Math.round(width * dpr) || c.height !== Math.round(height * dpr)) {
        c.width = Math.round(width * dpr);
        c.height = Math.round(height * dpr);
        c.style.width = `${width}px`;
        c.style.height = `${height}px`;
      }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      return ctx;
    });
  }

  // ---- drawing ----------------------------------------------------------------------------
  redraw() {
    if (!state.graph || !this.size.width) return;
    this.snap = null;
    this.layout();
    const [links, nodes] = this.contexts();
    this.linkCtx = links;
    this.nodeCtx = nodes;
    this.canvases[0].style.opacity = state.clickedId ? "0.35" : "1";
    this.drawLinks();
    this.drawNodes();
    this.drawOverlay();
  }

  drawLinks() {
    const t0 = performance.now();
    const maxAbs = state.graph.maxAbs || 1;
    const paths = [[], []].map(() => Array.from({ length: BUCKETS }, () => new Path2D()));
    for (const l of this.links) {
      const b = Math.min(BUCKETS - 1, Math.floor(Math.sqrt(Math.abs(l.weight) / maxAbs) * BUCKETS));
      const p = paths[l.weight >= 0 ? 0 : 1][b];
      p.moveTo(l.source.x, l.source.y);
      p.lineTo(l.target.x, l.target.y);
    }
    this.linkPaths = paths;
    this.strokeLinks();
    timings.links = performance.now() - t0;
  }

  strokeLinks() {
    const paths = this.linkPaths;
    const ctx = this.linkCtx;
    const { width, height } = this.size;
    const dpr = window.devicePixelRatio || 1;
    const { k, x, y } = this.zoom;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.save();
    if (k > 1) clipPlot(ctx, this.size);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * x, dpr * y);
    // Many links would paint the pane solid: fade them as their number grows.
    const dim = Math.min(1, Math.max(0.06, Math.sqrt(3000 / Math.max(1, this.links.length))));
    ctx.lineWidth = 0.6 / k;
    for (let b = 0; b < BUCKETS; b++) {
      const alpha = (0.04 + 0.5 * ((b + 1) / BUCKETS) ** 2) * dim;
      ctx.strokeStyle = `rgba(${POS},${alpha})`;
      ctx.stroke(paths[0][b]);
      ctx.strokeStyle = `rgba(${NEG},${alpha})`;
      ctx.stroke(paths[1][b]);
    }
    ctx.restore();
  }

  drawNodes() {
    const t0 = performance.now();
    const ctx = this.nodeCtx;
    const g = state.graph;
    const { width, height } = this.size;
    ctx.clearRect(0, 0, width, height);
    drawAxes(ctx, g, this);
    ctx.save();
    if (this.zoom.k > 1) clipPlot(ctx, this.size);
    // One path per kind and opacity step (a fill per node stalls at tens of thousands).
    const kinds = [KIND.token, KIND.error, KIND.feature, KIND.logit];
    const paths = new Map(kinds.map((k) => [k, Array.from({ length: ALPHAS }, () => new Path2D())]));
    const pins = new Path2D();
    const pinned = new Set(state.pinned);
    const pad = 12;
    for (const n of this.visible) {
      const x = this.sx(n.x);
      const y = this.sy(n.y);
      if (x < -pad || y < -pad || x > width + pad || y > height + pad) continue; // off screen
      const faded = n.kind === KIND.feature || n.kind === KIND.error;
      const imp = n.influence == null ? 0.6 : Math.max(0, 1 - n.influence);
      const step = faded ? Math.min(ALPHAS - 1, Math.floor(imp * ALPHAS)) : ALPHAS - 1;
      shape(paths.get(n.kind)[step], n, this);
      if (pinned.has(n.id)) shape(pins, n, this);
    }
    for (const kind of kinds) {
      const faded = kind === KIND.feature || kind === KIND.error;
      ctx.fillStyle = COLOR[kind];
      paths.get(kind).forEach((p, step) => {
        ctx.globalAlpha = faded ? 0.35 + 0.65 * ((step + 0.5) / ALPHAS) : 0.95;
        ctx.fill(p);
      });
    }
    ctx.globalAlpha = 1;
    ctx.lineWidth = 1.6;
    ctx.strokeStyle = "#111";
    ctx.stroke(pins);
    ctx.restore();
    ctx.globalAlpha = 1;
    timings.nodes = performance.now() - t0;
  }

  drawOverlay() {
    const t0 = performance.now();
    const ctx = this.overlayCtx();
    const { width, height } = this.size;
    ctx.clearRect(0, 0, width, height);
    const g = state.graph;
    const maxAbs = g.maxAbs || 1;
    for (const id of [state.clickedId, state.hoveredId]) {
      const n = id && g.byId.get(id);
      if (!n || n.x == null || !isVisible(n)) continue;
      const strong = id === state.clickedId;
      const lists = [];
      if (state.linkType !== "output") lists.push(n.inputs);
      if (state.linkType !== "input") lists.push(n.outputs);
      for (const list of lists) {
        for (const l of list) {
          if (!isVisible(l.source) || !isVisible(l.target)) continue;
          const s = Math.sqrt(Math.abs(l.weight) / maxAbs);
          ctx.strokeStyle = `rgba(${l.weight >= 0 ? POS : NEG},${strong ? 0.35 + 0.6 * s : 0.25 + 0.4 * s})`;
          ctx.lineWidth = 0.5 + 3 * s;
          ctx.beginPath();
          ctx.moveTo(this.sx(l.source.x), this.sy(l.source.y));
          ctx.lineTo(this.sx(l.target.x), this.sy(l.target.y));
          ctx.stroke();
        }
      }
      ctx.lineWidth = strong ? 2.5 : 1.5;
      ctx.strokeStyle = strong ? "#f59e0b" : "#444";
      ctx.beginPath();
      ctx.arc(this.sx(n.x), this.sy(n.y), this.sr(n.r) + 3, 0, 2 * Math.PI);
      ctx.stroke();
    }
    timings.overlay = performance.now() - t0;
  }

  overlayCtx() {
    const ctx = this.canvases[2].getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  // A selection only repaints the overlay (the links layer is dimmed by CSS); pins and labels
  // also repaint the nodes. Neither changes the layout.
  refreshHighlights(what) {
    if (!this.linkCtx) return this.redraw();
    this.canvases[0].style.opacity = state.clickedId ? "0.35" : "1";
    if (what !== "select") this.drawNodes();
    this.drawOverlay();
  }

  // ---- interaction ------------------------------------------------------------------------
  nodeAt(e) {
    if (!this.tree) return null;
    const rect = this.canvases[2].getBoundingClientRect();
    const { k, x, y } = this.zoom;
    const n = this.tree.find((e.clientX - rect.left - x) / k, (e.clientY - rect.top - y) / k, 12 / Math.sqrt(k));
    return n || null;
  }

  onMove(e) {
    if (e.shiftKey) return; // shift freezes the hover (and its card)
    state.hoverFrozen = false;
    const n = this.nodeAt(e);
    this.setHover(n ? n.id : "");
    if (n) {
      const rect = this.wrap.getBoundingClientRect();
      this.tooltip.hidden = false;
      this.tooltip.textContent = nodeTitle(state.graph, n, state.clerps);
      this.tooltip.style.left = `${Math.min(e.clientX - rect.left + 12, rect.width - 160)}px`;
      this.tooltip.style.top = `${e.clientY - rect.top + 12}px`;
    } else {
      this.tooltip.hidden = true;
    }
  }

  // Leaving with Shift held (or a frozen card) keeps the hover card, so the pointer can go to it.
  onLeave(e) {
    this.tooltip.hidden = true;
    if (state.hoveredId && state.hoveredId !== state.clickedId && (e.shiftKey || state.hoverFrozen)) {
      if (!state.hoverFrozen) {
        state.hoverFrozen = true;
        emit("hover");
      }
      return;
    }
    this.setHover("");
  }

  setHover(id) {
    if (id === state.hoveredId) return;
    state.hoveredId = id;
    if (!id) this.tooltip.hidden = true;
    this.drawOverlay();
    emit("hover");
  }

  onClick(e) {
    if (this.dragged) { this.dragged = false; return; } // the end of a pan
    const n = this.nodeAt(e);
    if (!n) return;
    if (e.ctrlKey || e.metaKey) {
      togglePin(n.id);
      return;
    }
    state.clickedId = state.clickedId === n.id ? "" : n.id;
    emit("select");
  }

  // The shown nodes inside the pane at the current zoom and pan (layout-space quadtree search).
  onScreen() {
    if (!this.tree) return [];
    const { k, x, y } = this.zoom;
    const { width, height } = this.size;
    const [x0, y0, x1, y1] = [-x / k, -y / k, (width - x) / k, (height - y) / k];
    const out = [];
    this.tree.visit((node, ax, ay, bx, by) => {
      if (!node.length) {
        for (let d = node; d; d = d.next) {
          const n = d.data;
          if (n.x >= x0 && n.x <= x1 && n.y >= y0 && n.y <= y1) out.push(n);
        }
      }
      return ax > x1 || bx < x0 || ay > y1 || by < y0;
    });
    return out;
  }

  // Page coordinates of a node's centre (for tests and the subgraph's "show in graph").
  screenPos(id) {
    const n = state.graph && state.graph.byId.get(id);
    if (!n || n.x == null || !isVisible(n)) return null;
    const rect = this.canvases[2].getBoundingClientRect();
    const x = this.sx(n.x);
    const y = this.sy(n.y);
    if (x < 0 || y < 0 || x > rect.width || y > rect.height) return null; // zoomed out of view
    return { x: rect.left + x, y: rect.top + y };
  }
}

// Zoomed in, nodes and links stay out of the axis margins (labels stay readable).
function clipPlot(ctx, { width, height }) {
  ctx.beginPath();
  ctx.rect(MARGIN.left - 6, 0, width - MARGIN.left + 6, height - MARGIN.bottom + 4);
  ctx.clip();
}

function radius(n, rMax) {
  if (n.kind === KIND.token) return Math.min(5, rMax);
  if (n.kind === KIND.logit) return Math.min(rMax, 3 + 6 * n.prob);
  const imp = n.influence == null ? 0.5 : Math.max(0, 1 - n.influence);
  return 1.5 + (rMax - 1.5) * imp * imp;
}

// Add a node's shape to `ctx` (a Path2D or a context's current path) as its own sub-path.
function shape(ctx, node, view) {
  const x = view.sx(node.x);
  const y = view.sy(node.y);
  const r = view.sr(node.r);
  if (node.kind === KIND.error) {
    ctx.rect(x - r, y - r, 2 * r, 2 * r);
  } else if (node.kind === KIND.token) {
    ctx.rect(x - r, y - r * 0.7, 2 * r, 1.4 * r);
  } else if (node.kind === KIND.logit) {
    ctx.moveTo(x, y - r * 1.2);
    ctx.lineTo(x + r * 1.1, y + r * 0.8);
    ctx.lineTo(x - r * 1.1, y + r * 0.8);
    ctx.closePath();
  } else {
    ctx.moveTo(x + r, y);
    ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
}

function drawAxes(ctx, g, view) {
  ctx.save();
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#777";
  ctx.strokeStyle = "#eee";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const every = Math.max(1, Math.ceil(14 / (view.rowH * view.zoom.k)));
  for (let r = 0; r < view.rows; r++) {
    const y = view.sy(view.rowY(r));
    if (y < MARGIN.top - 2 || y > view.size.height - MARGIN.bottom + 2) continue;
    ctx.beginPath();
    ctx.moveTo(MARGIN.left, y);
    ctx.lineTo(view.size.width - MARGIN.right, y);
    ctx.stroke();
    const name = r === 0 ? "Emb" : r === view.rows - 1 ? "Lgt" : (r - 1) % every ? "" : `L${r - 1}`;
    if (name) ctx.fillText(name, MARGIN.left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const yTok = view.size.height - MARGIN.bottom + 8;
  view.colX.forEach(([x0, w0], pos) => {
    const x = view.sx(x0);
    const w = w0 * view.zoom.k;
    if (x + w < MARGIN.left - 1 || x > view.size.width) return;
    ctx.strokeStyle = "#f3f3f3";
    ctx.beginPath();
    ctx.moveTo(x, MARGIN.top);
    ctx.lineTo(x, yTok - 6);
    ctx.stroke();
    let text = tokenText(g, pos).replace(/\n/g, "⏎");
    const fit = Math.max(1, Math.floor(w / 6.5));
    if (text.length > fit) text = `${text.slice(0, Math.max(1, fit - 1))}…`;
    ctx.fillStyle = "#333";
    ctx.fillText(text, x + w / 2, yTok);
  });
  ctx.restore();
}
