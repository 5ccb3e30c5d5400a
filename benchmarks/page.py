"""The lab page on a big generated graph, in headless chromium, beside circuit-tracer's page.

    python benchmarks/page.py [--nodes 30000] [--links 1000000] [--runs 2] [--no-peer]

``--runs``: page opens per lab server.

Writes a graph file of that size (features spread over 26 layers x 20 positions, random links,
like ``tests/server/helpers.big_graph``), serves it with circuitlab's lab server, opens it in
Debian's chromium (Playwright) and prints, per run:

* ``first draw``: navigation start to the graph drawn (the page's ``data-ready``). Two lab
  servers in turn: the first finds the file never indexed, so its first run includes parsing
  the JSON and writing the sorted-links sidecar (``graph.link_sidecar``); the second is a fresh
  process that reads the sidecar, as for any big graph ``create_graph_files`` wrote;
* ``hover``: one mousemove over a node, handler to overlay drawn (mean of 20);
* ``select``: one click on a node, handler to inspector drawn; ``select links``: until that
  node's links (all of them, from the server) are merged and drawn;
* ``zoom`` / ``pan``: frames per second while one wheel event (or drag step) arrives per
  animation frame for 60 frames, and the slowest frame.

Then the same file is served by circuit-tracer's own ``local_server`` (in the peer venv,
``benchmarks/peer.py``) and opened the same way; its page loads d3 and its other libraries from
CDNs, so offline it is reported as not opening, with the requests that failed.
Timings are printed, never asserted; figures are in benchmarks/README.md ("Page").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CIRCUITLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
N_LAYERS, N_POS = 26, 20


def write_graph(folder: Path, n_nodes: int, n_links: int, seed: int = 0) -> Path:
    """``{folder}/big.json`` and ``graph-metadata.json``: a graph file of this size."""
    rng = random.Random(seed)

    def node(node_id: str, feature: int, layer: str, pos: int, kind: str, js: str, infl: float):
        return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos,
                "feature_type": kind, "jsNodeId": js, "clerp": "", "influence": infl,
                "activation": 1.0, "token_prob": 0.0, "is_target_logit": False,
                "run_idx": 0, "reverse_ctx_idx": N_POS - 1 - pos}  # fmt: skip

    nodes = [node(f"E_{p}_{p}", p, "E", p, "embedding", f"E_{p}-{p}", 0.0) for p in range(N_POS)]
    n_feat = n_nodes - N_POS - 1
    for i in range(n_feat):
        layer, pos = rng.randrange(N_LAYERS), rng.randrange(N_POS)
        feature = node(f"{layer}_{i}_{pos}", i, str(layer), pos, "cross layer transcoder",
                       f"{layer}_{i}-0", rng.random() * 0.8)  # fmt: skip
        nodes.append(feature)
    logit = node(f"{N_LAYERS + 1}_1_{N_POS - 1}", 1, str(N_LAYERS + 1), N_POS - 1, "logit", "L", 0)
    logit.update(token_prob=0.9, clerp='Output " x" (p=0.900)', is_target_logit=True)
    nodes.append(logit)
    ids = [n["node_id"] for n in nodes]
    parts = []
    for _ in range(n_links):
        s, t = rng.randrange(n_nodes - 1), N_POS + rng.randrange(n_feat + 1)
        if s == t:
            t = n_nodes - 1
        w = round(rng.gauss(0, 1), 5)
        parts.append(f'{{"source":"{ids[s]}","target":"{ids[t]}","weight":{w}}}')
    meta = {"slug": "big", "scan": "synthetic", "prompt": "synthetic",
            "prompt_tokens": [f"t{p}" for p in range(N_POS)], "node_threshold": 0.8,
            "schema_version": 1, "n_layers": N_LAYERS}  # fmt: skip
    head = {"metadata": meta, "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both",
                                          "clickedId": "", "sg_pos": ""}, "nodes": nodes}  # fmt: skip
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',"links":[' + ",".join(parts) + "]}"
    path = folder / "big.json"
    path.write_text(text)
    (folder / "graph-metadata.json").write_text(json.dumps({"graphs": [meta]}))
    return path


READY = """() => { new MutationObserver(() => {
    if (document.body && document.body.dataset.ready && !window.__ready) window.__ready = performance.now();
  }).observe(document, { attributes: true, subtree: true }); }"""

MEASURE = """async () => {
  const lab = window.__lab;
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
  const overlay = document.getElementById('overlay');
  const g = lab.state.graph;
  const n = g.nodes.find((x) => x.kind === 'feature' && lab.screenPos(x.id));
  const p = lab.screenPos(n.id);
  const ev = (type, x, y, extra = {}) => new MouseEvent(type, { clientX: x, clientY: y, bubbles: true, ...extra });
  let t = performance.now();
  for (let i = 0; i < 20; i++) overlay.dispatchEvent(ev('mousemove', p.x + (i % 3), p.y));
  const hover = (performance.now() - t) / 20;
  const before = g.links.length;
  t = performance.now();
  overlay.dispatchEvent(ev('click', p.x, p.y));
  const select = performance.now() - t;
  let selectLinks = null;
  for (let i = 0; i < 600 && g.lod; i++) {
    await frame();
    if (g.links.length > before) { await frame(); selectLinks = performance.now() - t; break; }
  }
  const run = async (step) => {
    const times = [await frame()];
    for (let i = 0; i < 60; i++) { step(i); times.push(await frame()); }
    const gaps = times.slice(1).map((x, i) => x - times[i]);
    return { fps: 1000 / (gaps.reduce((a, b) => a + b, 0) / gaps.length), worst: Math.max(...gaps) };
  };
  const zoom = await run((i) => overlay.dispatchEvent(new WheelEvent('wheel',
    { clientX: p.x, clientY: p.y, deltaY: i < 30 ? -60 : 60, bubbles: true, cancelable: true })));
  overlay.dispatchEvent(new WheelEvent('wheel', { clientX: p.x, clientY: p.y, deltaY: -600, bubbles: true, cancelable: true }));
  await frame();
  overlay.dispatchEvent(ev('mousedown', p.x, p.y, { button: 0 }));
  const pan = await run((i) => window.dispatchEvent(ev('mousemove', p.x + (i < 30 ? i : 60 - i) * 6, p.y + (i % 7))));
  window.dispatchEvent(ev('mouseup', p.x, p.y));
  return { ready: window.__ready, hover, select, selectLinks, zoom, pan,
           links: g.links.length, total: g.lod ? g.lod.links_total : g.links.length,
           repaint: lab.repaint() };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_ours(context: Any, folder: Path, runs: int) -> list[dict[str, Any]]:
    from circuitlab.server import start_server

    out = []
    with start_server(folder) as server:
        for _ in range(runs):
            page = context.new_page()
            page.add_init_script(f"({READY})()")
            page.goto(server.url + "?slug=big&pruningThreshold=1", timeout=120_000)
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            out.append(page.evaluate(MEASURE))
            page.close()
    return out


def measure_peer(context: Any, folder: Path) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from peer import find_peer_python, peer_missing_reason

    python = find_peer_python()
    if python is None:
        return f"not run: {peer_missing_reason()}"
    port = free_port()
    code = ("import sys, time; from circuit_tracer.frontend.local_server import serve; "
            f"serve(sys.argv[1], port={port}); time.sleep(10**6)")  # fmt: skip
    proc = subprocess.Popen([python, "-c", code, str(folder)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        page = context.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        t0 = time.perf_counter()
        page.goto(f"http://localhost:{port}/index.html?slug=big", timeout=120_000)
        drawn = False
        for _ in range(60):  # up to 30 s for any node of the graph to be drawn
            if page.evaluate("document.querySelectorAll('svg circle, svg path.node').length") > 0:
                drawn = True
                break
            page.wait_for_timeout(500)
        waited = time.perf_counter() - t0
        page.close()
    finally:
        proc.terminate()
        proc.wait()
    cdn = [u for u in failed if not u.startswith(f"http://localhost:{port}")]
    if drawn:
        return f"drew its first nodes after {waited:.1f} s"
    return (f"did not open: nothing drawn after {waited:.0f} s; {len(cdn)} requests to CDNs "
            f"failed offline ({', '.join(sorted({u.split('/')[2] for u in cdn}))})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=30_000)
    ap.add_argument("--links", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="circuitlab-page-"))
    t0 = time.perf_counter()
    path = write_graph(folder, args.nodes, args.links)
    size = path.stat().st_size / 1e6
    print(f"graph file: {args.nodes} nodes, {args.links} links, {size:.0f} MB "
          f"(written in {time.perf_counter() - t0:.1f} s); load {os.getloadavg()[0]:.1f}")  # fmt: skip
    profile = tempfile.mkdtemp(prefix="circuitlab-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 800},
        )  # fmt: skip
        print("\ncircuitlab (lab server, level of detail)")
        print("| server, run | first draw | hover | select | select links "
              "| zoom fps (worst frame) | pan fps (worst frame) | full repaint | links loaded |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        # Server 1 finds the file never indexed (as a file from another tool): its first run
        # parses the JSON and writes the sidecar. Server 2 is a fresh process that finds the
        # sidecar, as for every big file create_graph_files writes.
        for server in (1, 2):
            for i, r in enumerate(measure_ours(context, folder, args.runs), 1):
                links = f"{r['links']:,} of {r['total']:,}"
                sel = "-" if r["selectLinks"] is None else f"{r['selectLinks']:.0f} ms"
                print(f"| {server}, {i} | {r['ready'] / 1000:.2f} s | {r['hover']:.2f} ms "
                      f"| {r['select']:.1f} ms | {sel} "
                      f"| {r['zoom']['fps']:.0f} ({r['zoom']['worst']:.0f} ms) "
                      f"| {r['pan']['fps']:.0f} ({r['pan']['worst']:.0f} ms) "
                      f"| {r['repaint']:.0f} ms | {links} |")  # fmt: skip
        if not args.no_peer:
            print(f"\ncircuit-tracer 0.5.0 (its local_server): {measure_peer(context, folder)}")
        context.close()
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
