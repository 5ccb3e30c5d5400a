// The lab page: loads the graph list and a graph, wires the panes to the shared state.
import { parseGraph } from "./data.js";
import { renderFeatureCard } from "./featurecard.js";
import { GraphView, timings } from "./graphview.js";
import { renderInspector } from "./inspector.js";
import { applyQParams, cancelUrlWrite, emit, on, qParams, state, togglePin, writeUrl } from "./state.js";
import { finishGrouping, grouping, markSubgraphSelection, renderSubgraph } from "./subgraph.js";
import { dropUnsaved, keepUnsaved, mergeQParams, unsavedFor, unsavedSlugs } from "./unsaved.js";
import { setupSteer } from "./steer.js";
import { setupTrace } from "./trace.js";
import { analyseGraph, applyUrl as applyHeadsUrl, hs, moveSelection, setGraph, setupHeads } from "./heads.js";
import { loadFaithfulness, loadValidationList, renderFaithfulness, showDiff, validation } from "./validation.js";
import { el } from "./dom.js";
import { attn, setupAttention } from "./qk.js";
import { setupCircuitView } from "./circuitview.js";
import { attachLod, fetchGraph, setupLod } from "./lod.js";

const $ = (id) => document.getElementById(id);
let info = { features: false, tracing: false, models: [] };
let view;
let graphs = []; // graph-metadata.json's entries
// URL keys that carry a view (a shared link); without them a graph opens as last saved.
const VIEW_KEYS = ["clickedId", "pinnedIds", "supernodes", "clerps", "pruningThreshold"];

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-cache" });
  if (!r.ok) throw Object.assign(new Error(`${url}: ${r.status}`), { status: r.status });
  return r.json();
}

// "slug · prompt" (the prompt clipped; whole in the tooltip).
function graphName(g) {
  const name = g.title_prefix ? `${g.title_prefix} ${g.slug}` : g.slug;
  const prompt = typeof g.prompt === "string" ? g.prompt.replace(/\s+/g, " ").trim() : "";
  if (!prompt) return name;
  return `${name} · ${prompt.length > 60 ? `${prompt.slice(0, 59)}…` : prompt}`;
}

async function loadList(selected) {
  const [meta, files] = await Promise.all([getJSON("data/graph-metadata.json"), loadValidationList()]);
  graphs = meta.graphs;
  const select = $("graph-select");
  const options = graphs.map((g) => el("option", { value: g.slug, title: g.prompt || null }, graphName(g)));
  if (files.diffs.length) {
    options.push(el("optgroup", { label: "diffs (circuitlab compare)" }, ...files.diffs.map((d) =>
      el("option", { value: `diff:${d.file}` }, d.a ? `${d.a} vs ${d.b}` : d.file))));
  }
  select.replaceChildren(...options);
  select.hidden = !options.length;
  if (selected) select.value = selected;
  return graphs;
}

async function openDiff(file) {
  state.diffFile = file;
  showView("diff");
  $("graph-select").value = `diff:${file}`;
  await showDiff(file, { openGraph });
}

function openGraph(slug, clickedId) {
  return navigate(new URLSearchParams(clickedId ? { slug, clickedId } : { slug }));
}

// Each graph (and view) opened is a history entry, so Back and Forward move between them inside
// the lab; the entry left keeps its latest view in its URL, unsaved edits stay in the session.
function navigate(params) {
  writeUrl();
  history.pushState(null, "", `${location.pathname}?${params}`);
  return route(params);
}

// Show what a URL names (after navigate, or Back/Forward): a diff, or a graph in a view.
async function route(url) {
  if (url.get("diff")) return openDiff(url.get("diff"));
  const slug = url.get("slug") || state.slug || (graphs[0] && graphs[0].slug);
  const wanted = url.get("view") === "heads" && info.heads ? "heads" : "graph";
  if (slug && (slug !== state.slug || !state.graph)) {
    if (wanted === "graph") showView("graph");
    await loadGraph(slug, url);
  } else if (state.graph && url.get("clickedId") && state.graph.byId.has(url.get("clickedId"))) {
    state.clickedId = url.get("clickedId");
    emit("select");
  }
  showView(wanted);
}

function setPruning(t) {
  const p = $("prune");
  if (t > Number(p.max)) p.max = String(t);
  p.value = String(t);
  state.pruning = Number(p.value);
  emit("prune", { dirty: true });
}

// Open a graph: its saved view, then the URL's keys, then (unless `session` is false) the
// unsaved edits this tab made to it, which win.
async function loadGraph(slug, url, { session = true } = {}) {
  const t0 = performance.now();
  state.loading = true; // no URL writes for the graph being left while this one loads
  let data;
  try {
    data = await fetchGraph(slug); // big graphs: the strongest links only (lod.js)
  } catch (e) {
    if (e.status === 404) return showMissing(slug);
    throw e;
  } finally {
    state.loading = false;
  }
  $("graph-missing").hidden = true;
  state.missing = "";
  state.slug = slug;
  state.graph = parseGraph(data);
  attachLod(state.graph, data);
  state.graph.attention = data.attention || null; // precomputed attention results (qk.js)
  state.graph.suggestions = data.circuit_suggestions || null; // circuitview.js
  state.hoveredId = "";
  state.hoverFrozen = false;
  applyQParams(state.graph.qParams, url);
  state.base = state.graph.qParams;
  state.version = versionOf(state.graph.qParams);
  const kept = session ? unsavedFor(slug) : null;
  if (kept) {
    applyQParams(kept.qParams, null);
    if (url && url.get("clickedId") && state.graph.byId.has(url.get("clickedId"))) state.clickedId = url.get("clickedId");
    state.base = kept.base || state.base;
    state.version = kept.version ?? state.version;
  }
  timings.parse = performance.now() - t0;
  $("graph-select").value = slug;
  const prune = $("prune");
  prune.max = String(Math.max(state.graph.meta.node_threshold || 0.8, state.pruning, 0.01));
  prune.value = String(state.pruning);
  document.title = `circuitlab · ${slug}`;
  setGraph(slug, state.graph.meta.prompt);
  view.zoom = { k: 1, x: 0, y: 0 };
  emit("graph");
  loadFaithfulness(slug, { setPruning });
  state.dirty = Boolean(kept);
  updateSaveState();
  if (kept) setStatus("unsaved changes (kept from earlier in this tab)");
  if (state.graph.duplicates) setStatus(`${state.graph.duplicates} duplicate node ids ignored (old circuit-tracer file)`);
}

function versionOf(q) {
  const v = q && q.version;
  return Number.isInteger(v) && v >= 0 ? v : 0;
}

// A slug that names no graph: say so, and list the graphs there are.
function showMissing(slug) {
  state.graph = null;
  state.slug = "";
  state.missing = slug;
  state.clickedId = "";
  document.title = "circuitlab · no such graph";
  $("graph-select").value = "";
  $("counts").textContent = "";
  const links = graphs.map((g) => {
    const a = el("a", { href: `?slug=${encodeURIComponent(g.slug)}`, "data-slug": g.slug }, graphName(g));
    a.addEventListener("click", (e) => { e.preventDefault(); openGraph(g.slug, null); });
    return el("li", {}, a);
  });
  $("graph-missing").replaceChildren(
    el("p", {}, "There is no graph ", el("strong", {}, slug), " in this lab's folder."),
    links.length ? el("p", {}, "Open one of these:") : el("p", { class: "muted" }, "It has no graphs yet: trace a prompt or write graph files."),
    el("ul", {}, ...links),
  );
  $("graph-missing").hidden = false;
  renderInspector($("inspector"));
  renderSubgraph($("subgraph"), $("supernodes"));
  renderFeatureCard($("feature"), info.features);
  writeUrl();
}

// The graph and heads views share the page; the graph pane redraws itself when shown again
// (its ResizeObserver sees the size change).
function showView(which) {
  if (which === "heads" && !info.heads) which = "graph";
  state.view = which;
  document.body.classList.toggle("view-heads", which === "heads");
  document.body.classList.toggle("view-diff", which === "diff");
  $("heads-view").hidden = which !== "heads";
  $("diff-view").hidden = which !== "diff";
  $("tab-graph").classList.toggle("on", which === "graph");
  $("tab-heads").classList.toggle("on", which === "heads");
  writeUrl();
}

// Graph <-> heads from the tabs or H: a history entry each, so Back returns to the other view.
function switchView(which) {
  if (which === state.view) return;
  writeUrl();
  history.pushState(null, "", location.href);
  showView(which);
}

function setStatus(text) {
  $("save-state").textContent = text;
}

function updateSaveState() {
  setStatus(state.dirty ? "unsaved changes" : "");
  $("save").classList.toggle("attention", state.dirty);
}

function postSave(slug, q, version) {
  return fetch(`save_graph/${encodeURIComponent(slug)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ qParams: q, version }),
  });
}

// Save sends the version of the file the edits were made on. When someone saved in between
// (409), their view and ours are merged (mergeQParams: our changes win where both changed the
// same thing), the page shows the merge, and the save is sent again on their version.
async function save() {
  if (!state.slug) return;
  const slug = state.slug;
  let q = qParams();
  let merged = null;
  for (let attempt = 0; attempt < 4; attempt++) {
    const r = await postSave(slug, q, state.version);
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      if (state.slug !== slug) return dropUnsaved(slug);
      state.version = Number.isInteger(body.version) ? body.version : state.version + 1;
      state.base = q;
      dropUnsaved(slug);
      state.dirty = false;
      updateSaveState();
      setStatus(merged == null ? "saved" : `saved, merged with version ${merged} saved elsewhere`);
      return;
    }
    const theirs = r.status === 409 ? await currentView(slug, body) : null;
    if (!theirs || state.slug !== slug) {
      setStatus(`save failed: ${body.detail || r.status}`);
      return;
    }
    q = mergeQParams(state.base, theirs.qParams, q);
    delete q.version;
    merged = theirs.version;
    state.base = theirs.qParams;
    state.version = theirs.version;
    applyQParams(q, null);
    state.dirty = true;
    emit("pins");
  }
  setStatus("save failed: the file keeps changing; try again");
}

// The file's view and version after a 409: from the answer, else read again (a 409 for a file
// that is not a graph, or whose version is still ours, is no conflict to merge).
async function currentView(slug, body) {
  if (body && body.qParams && typeof body.qParams === "object" && Number.isInteger(body.version)) {
    return { qParams: body.qParams, version: body.version };
  }
  const data = await getJSON(`data/${encodeURIComponent(slug)}.json`).catch(() => null);
  const q = data && data.qParams && typeof data.qParams === "object" ? data.qParams : null;
  if (!q || versionOf(q) === state.version) return null;
  return { qParams: q, version: versionOf(q) };
}

function updateCounts() {
  const g = state.graph;
  if (!g || !view.visible) return;
  const total = g.lod ? g.lod.links_total : g.links.length; // big graphs: not all links loaded
  $("counts").textContent = `${view.visible.length}/${g.nodes.length} nodes · ${view.links.length}/${total} links`;
  $("prune-value").textContent = state.pruning.toFixed(2);
}

function render(what) {
  if (!state.graph) return;
  if (what === "select" && state.hoverFrozen) releaseHover(); // a click in the card moves on
  if (what === "graph" || what === "prune") {
    view.redraw();
  } else if (what === "select" || what === "pins" || what === "labels") {
    view.refreshHighlights(what);
  }
  if (what === "hover") {
    scheduleCard();
  } else if (what !== "layout") {
    renderInspector($("inspector"));
    // a selection only re-marks the subgraph's boxes: rebuilding them would swallow the
    // second click of a double-click (which edits a supernode's label)
    if (what === "select") markSubgraphSelection($("subgraph"));
    else renderSubgraph($("subgraph"), $("supernodes"));
  }
  if (what === "graph" || what === "select") renderFeatureCard($("feature"), info.features);
  if (what === "prune" && validation.faith) renderFaithfulness();
  if (state.dirty && what !== "hover") keepUnsaved(state.slug, qParams(), state.version, state.base);
  updateCounts();
  updateSaveState();
}

// The hover card: the inspector and feature panes show the hovered node while the pointer
// rests on it (50 ms), and the clicked one again when it leaves; Shift freezes the card.
let cardTimer = 0;
function scheduleCard() {
  clearTimeout(cardTimer);
  cardTimer = setTimeout(renderCard, 50);
}

function renderCard() {
  clearTimeout(cardTimer);
  const active = document.activeElement;
  if (active && active.tagName === "INPUT" && $("inspector").contains(active)) return; // typing a label
  renderInspector($("inspector"));
  renderFeatureCard($("feature"), info.features);
}

function releaseHover() {
  state.hoverFrozen = false;
  state.hoveredId = "";
  view.drawOverlay();
  renderCard();
}

function keys() {
  window.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
      e.preventDefault();
      save();
      return;
    }
    if (typing) return;
    if (state.view === "heads" && e.key.startsWith("Arrow") && moveSelection(e.key)) {
      e.preventDefault();
      return;
    }
    const card = state.hoveredId && state.hoveredId !== state.clickedId; // a hover card is up
    if (e.key === "Shift" && card && !state.hoverFrozen) {
      state.hoverFrozen = true;
      renderCard();
    } else if (e.key === "Escape") {
      $("help").hidden = true;
      if (card && state.hoverFrozen) releaseHover();
      else if (state.clickedId) { state.clickedId = ""; emit("select"); }
    } else if (e.key === "g" || e.key === "G") {
      grouping.held = true;
      document.body.classList.add("grouping");
    } else if ((e.key === "p" || e.key === "P") && state.clickedId) {
      togglePin(state.clickedId);
    } else if (e.key === "[" || e.key === "]") {
      const p = $("prune");
      const v = Math.min(Number(p.max), Math.max(Number(p.min), state.pruning + (e.key === "]" ? 0.05 : -0.05)));
      p.value = String(v);
      state.pruning = Number(p.value);
      emit("prune");
    } else if ((e.key === "h" || e.key === "H") && info.heads) {
      switchView(state.view === "heads" ? "graph" : "heads");
    } else if (e.key === "0" && state.view === "graph") {
      view.resetZoom();
    } else if (e.key === "?") {
      $("help").hidden = !$("help").hidden;
    } else if (e.key === "/" && info.tracing) {
      e.preventDefault();
      $("trace-prompt").focus();
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.key === "g" || e.key === "G") {
      document.body.classList.remove("grouping");
      finishGrouping();
    }
  });
  window.addEventListener("blur", () => { grouping.held = false; grouping.picked.clear(); });
}

async function main() {
  view = new GraphView($("graph-wrap"));
  on(render);
  setupCircuitView();
  setupLod(view);
  keys();
  $("save").addEventListener("click", save);
  $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  $("graph-select").addEventListener("change", (e) => {
    const value = e.target.value;
    if (value.startsWith("diff:")) return navigate(new URLSearchParams({ diff: value.slice(5) }));
    openGraph(value, null);
  });
  window.addEventListener("popstate", () => {
    cancelUrlWrite(); // a pending write holds the entry we left
    route(new URLSearchParams(location.search)).catch(showError);
  });
  let pruneTimer = 0;
  $("prune").addEventListener("input", (e) => {
    state.pruning = Number(e.target.value);
    $("prune-value").textContent = state.pruning.toFixed(2);
    cancelAnimationFrame(pruneTimer);
    pruneTimer = requestAnimationFrame(() => emit("prune", { dirty: true }));
  });
  window.addEventListener("beforeunload", (e) => {
    writeUrl();
    if (state.dirty || unsavedSlugs().length) {
      e.preventDefault(); // unsaved annotations: the browser asks before leaving
      e.returnValue = "";
    }
  });
  info = await getJSON("api/info").catch(() => info);
  const url = new URLSearchParams(location.search);
  await loadList(url.get("slug"));
  setupTrace(info, {
    onDone: async (job) => {
      await loadList(job.slug);
      await openGraph(job.slug, null);
    },
  });
  setupSteer(info);
  setupAttention(info);
  if (setupHeads(info, { openGraph: (s) => openGraph(s, null) })) {
    $("tabs").hidden = false;
    $("graph-heads").hidden = false;
    $("tab-graph").addEventListener("click", () => {
      if (!state.graph && graphs[0]) return openGraph(graphs[0].slug, null);
      if (state.slug) $("graph-select").value = state.slug;
      switchView("graph");
    });
    $("tab-heads").addEventListener("click", () => switchView("heads"));
    $("graph-heads").addEventListener("click", () => { switchView("heads"); analyseGraph(); });
  }
  if (url.get("view") === "heads" || (!graphs.length && info.heads && !url.get("diff"))) showView("heads");
  const slug = url.get("slug") || (graphs[0] && graphs[0].slug);
  // A link opened afresh shows the view it carries; a reload or Back/Forward shows this tab's
  // unsaved edits, which are newer.
  const nav = performance.getEntriesByType("navigation")[0];
  const shared = (!nav || nav.type === "navigate") && VIEW_KEYS.some((k) => url.has(k));
  if (url.get("diff")) await openDiff(url.get("diff"));
  else if (slug) await loadGraph(slug, url, { session: !shared });
  if (state.view === "heads") applyHeadsUrl(url);
  else if (!graphs.length && !state.graph && !state.missing && !url.get("diff")) {
    $("inspector").replaceChildren(el("p", { class: "muted" }, "No graphs yet: trace a prompt or write graph files."));
  }
  document.body.dataset.ready = "1";
}

function showError(e) {
  console.error(e);
  $("inspector").replaceChildren(el("p", { class: "error" }, String(e.message || e)));
}

// Hooks for tests and for measuring (read-only use).
window.__lab = {
  state,
  heads: hs,
  attention: attn,
  validation,
  timings,
  screenPos: (id) => view && view.screenPos(id),
  zoom: () => view && { ...view.zoom },
  repaint: () => { const t0 = performance.now(); view.repaint(); return performance.now() - t0; },
  onScreen: () => view.onScreen().length,
  redraw: () => { const t0 = performance.now(); view.redraw(); return performance.now() - t0; },
};

main().catch((e) => {
  showError(e);
  document.body.dataset.ready = "error";
});
