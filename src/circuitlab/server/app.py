"""The lab's FastAPI application: the page, graph files, feature files, annotations, tracing.

Routes (all relative, so the page also works behind a path prefix or in a notebook iframe):

* ``GET /`` the page; ``GET /assets/{file}`` its bundle (``circuitlab/web/dist``).
* ``GET /data/{file}.json`` (alias ``/graph_data/``): graph files, gzip when accepted;
  ``graph-metadata.json`` is built from the graph files when it is missing.
* ``GET /api/features/{slug}``: which dashboard store serves that graph (``dashboards.py``:
  only a store of the graph's transcoder set); ``GET /feature_stores/{key}/{path}``: that
  store's files, with HTTP byte ranges; ``GET /features/{path}``: the store, when there is one.
* ``POST /save_graph/{slug}``: ``{"qParams": {...}, "version"?: n}`` (or the bare ``qParams``)
  replaces the file's ``qParams`` atomically and answers ``{"saved", "version"}`` with an
  ``ETag: "version"``. ``version`` (or ``If-Match: "n"``) is the ``qParams.version`` the page
  read (0 when absent); if another save came since, the answer is 409 ``{"detail", "version",
  "qParams"}`` with the file's current view, for the page to merge (then save with that
  version) or ask. A save without a version always replaces (circuit-tracer's page sends none).
* ``GET /api/lod/{slug}?links=N`` (the strongest links only) and ``POST /api/lod/{slug}/edges``
  (links of a node set above a weight): big graphs by level of detail (``lod.py``).
* ``GET /api/validation``: the faithfulness and diff files beside the graphs (served as graph
  files are, ``GET /data/{slug}.faithfulness.json``, ``/data/{a}__vs__{b}.diff.json``).
* ``GET /api/info``; with a ``Tracer``: ``POST /api/trace``, ``GET /api/jobs``,
  ``DELETE /api/jobs/{id}``, ``WS /api/ws`` (job updates as they happen), and
  ``POST /api/steer`` (set/scale nodes of a graph: top logits and continuations, before/after,
  in the CLI's intervention modes: ``constrained_layers``, ``freeze_attention``).
  A trace never overwrites: a ``slug`` in use (a graph file, or a queued or running job) is 409
  ``{"detail", "slug"}``; without one the job gets a fresh slug. 503 (``Retry-After``) when
  ``Tracer.max_pending`` jobs wait; 422 for a prompt longer than the model's context.
* Bodies are typed (``server/requests.py``): a field that does not fit is 422 with ``detail``
  ``"field.path: what is wrong"``; NaN, Infinity and nesting past 32 levels are 422 anywhere.
* ``POST /api/attention/loadings|qk|flows`` (with a ``Tracer``): head loadings and QK
  attributions of a graph, cached per graph (``server/attention.py``).
* With a ``HeadsLab``: ``GET /api/heads/presets``, ``WS /api/heads/ws`` (head analysis and
  patching sweeps, streamed layer by layer; see ``server/heads.py``).

Safety (docs/security.md): paths are resolved under their root (no ``..``, no hidden files, no
symlink escapes); request bodies are capped; writes need ``Content-Type: application/json``;
every request and websocket passes ``guard.Guard`` (allowed ``Host``, same-origin ``Origin``,
the token when there is one); error answers name files relative to their folder only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from circuitlab.atomic import remove_stale_temporaries
from circuitlab.graph.export import check_slug
from circuitlab.server.attention import register_attention_routes
from circuitlab.server.dashboards import DashboardStores, FeatureDirs
from circuitlab.server.files import (
    AnnotationStore,
    GzipCache,
    HTTPProblem,
    file_response,
    if_match_version,
    list_graphs,
    list_validation,
    range_response,
    read_json_body,
    resolve_under,
)
from circuitlab.server.guard import LOOPBACK_HOSTS, Guard, public_text
from circuitlab.server.heads import HeadsLab, StreamCancelled
from circuitlab.server.jobs import PromptRefused, SlugTaken, Tracer, TracerBusy
from circuitlab.server.lod import register_lod_routes
from circuitlab.server.requests import SaveRequest, SteerRequest, TraceRequest, parse_body

WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
DEFAULT_MAX_BODY = 8 * 1024 * 1024
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}


def create_app(
    graph_file_dir: str | Path,
    features_dir: FeatureDirs = None,
    *,
    tracer: Tracer | None = None,
    heads: HeadsLab | None = None,
    allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    max_body: int = DEFAULT_MAX_BODY,
    token: str | None = None,
    allowed_origins: Iterable[str] = (),
) -> FastAPI:
    """The lab application over ``graph_file_dir``.

    ``allowed_hosts``: the ``Host`` names accepted (``None``: any, only with a ``token``);
    ``token``: when set, every request and websocket must carry it (``guard.Guard``);
    ``allowed_origins``: pages of other origins let in (a notebook proxy's, ``notebook.py``).
    """
    graph_dir = Path(graph_file_dir)
    if not graph_dir.is_dir():
        raise NotADirectoryError(f"graph file directory {graph_dir} does not exist")
    stores = DashboardStores.open(features_dir)  # one or more; served per graph
    feature_roots = [s.root for s in stores.stores]
    guard = Guard.make(allowed_hosts, token, allowed_origins)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if tracer is not None:
            tracer.close()

    app = FastAPI(title="circuitlab lab", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.graph_dir = graph_dir
    app.state.tracer = tracer
    app.state.heads = heads
    gzip_cache = GzipCache()
    annotations = AnnotationStore(graph_dir)
    remove_stale_temporaries(graph_dir)  # left by writers killed mid-save

    @app.exception_handler(HTTPProblem)
    async def _problem(_request: Request, exc: HTTPProblem) -> Response:
        detail = public_text(exc.detail, (graph_dir, *feature_roots, WEB_DIST))
        return JSONResponse(
            {**exc.body(), "detail": detail}, status_code=exc.status, headers=exc.headers
        )

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]):
        problem = guard.check(request)
        if problem is None and request.method not in ("GET", "HEAD"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_body:
                problem = HTTPProblem(413, f"body larger than {max_body} bytes")
        if problem is not None:
            return JSONResponse({"detail": problem.detail}, status_code=problem.status)
        response = await call_next(request)
        guard.remember(request, response)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    # ---- the page ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = WEB_DIST / "index.html"
        if not page.is_file():
            raise HTTPProblem(
                500, "the page bundle is missing; see docs/web-lab.md (npm run build)"
            )
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/assets/{name:path}", include_in_schema=False)
    def asset(name: str) -> Response:
        path = resolve_under(WEB_DIST, name)
        return FileResponse(path, media_type=_MEDIA.get(path.suffix, "application/octet-stream"))

    # ---- graph files ------------------------------------------------------------------------
    def graph_file(name: str, request: Request) -> Response:
        if name == "graph-metadata.json":
            return JSONResponse(list_graphs(graph_dir), headers={"Cache-Control": "no-cache"})
        if not name.endswith(".json"):
            raise HTTPProblem(404, "not found")
        return file_response(
            resolve_under(graph_dir, name), request, "application/json", gzip_cache
        )

    @app.get("/data/{name:path}")
    def data(name: str, request: Request) -> Response:
        return graph_file(name, request)

    @app.get("/graph_data/{name:path}")
    def graph_data(name: str, request: Request) -> Response:
        return graph_file(name, request)

    register_lod_routes(app, graph_dir)  # /api/lod/{slug}: links by level of detail

    @app.get("/api/validation")
    def validation_files() -> dict[str, Any]:
        return list_validation(graph_dir)

    @app.get("/api/features/{slug}")
    def graph_features(slug: str) -> dict[str, Any]:
        try:
            check_slug(slug)
        except ValueError as e:
            raise HTTPProblem(400, str(e)) from None
        return stores.match(list_graph_meta(slug)).public()

    @app.get("/feature_stores/{key}/{name:path}")
    def feature_store_file(key: str, name: str, request: Request) -> Response:
        store = stores.by_key.get(key)
        if store is None:
            raise HTTPProblem(404, f"no dashboard store {key!r}")
        path = resolve_under(store.root, name)
        return range_response(path, request, "application/octet-stream")

    @app.get("/features/{name:path}")
    def features(name: str, request: Request) -> Response:
        if len(stores) != 1:
            raise HTTPProblem(
                404,
                "this server has no --features_dir"
                if not stores
                else "several dashboard stores: ask /api/features/{slug} which serves a graph",
            )
        path = resolve_under(stores.stores[0].root, name)
        return range_response(path, request, "application/octet-stream")

    @app.post("/save_graph/{slug}")
    async def save_graph(slug: str, request: Request) -> Response:
        body = await read_json_body(request, max_body)
        if not (isinstance(body, dict) and "qParams" in body):
            body = {"qParams": body}  # the bare view, as circuit-tracer's page posts it
        save = parse_body(SaveRequest, body)
        version = if_match_version(request.headers.get("if-match"))
        new = annotations.save(
            slug, dict(save.qParams), save.version if version is None else version
        )
        return JSONResponse({"saved": slug, "version": new}, headers={"ETag": f'"{new}"'})

    # ---- tracing ----------------------------------------------------------------------------
    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from circuitlab._version import __version__

        return {
            "version": __version__,
            "features": len(stores) > 0,
            "feature_stores": stores.public(),
            "tracing": tracer is not None,
            "models": sorted(tracer.models) if tracer else [],
            "steering": tracer is not None and _can_steer(tracer),
            "heads": heads is not None,
            "heads_models": sorted(heads.models) if heads else [],
            "attention": tracer is not None,
        }

    def need_tracer() -> Tracer:
        if tracer is None:
            raise HTTPProblem(
                404, "this server traces nothing; start it with --model and --transcoders"
            )
        return tracer

    @app.get("/api/jobs")
    def jobs() -> dict[str, Any]:
        return {"jobs": need_tracer().jobs()}

    @app.post("/api/trace")
    async def trace(request: Request) -> dict[str, Any]:
        t = need_tracer()
        req = parse_body(TraceRequest, await read_json_body(request, 64 * 1024))
        try:
            job = await asyncio.to_thread(
                t.submit, req.prompt, req.targets, model=req.model, slug=req.slug
            )
        except TracerBusy as e:
            raise HTTPProblem(503, str(e), headers={"Retry-After": "10"}) from None
        except SlugTaken as e:
            raise HTTPProblem(409, str(e), extra={"slug": req.slug}) from None
        except PromptRefused as e:
            raise HTTPProblem(422, f"prompt: {e}") from None
        except (ValueError, TypeError) as e:
            raise HTTPProblem(400, str(e)) from None
        return {"job": job.public()}

    @app.post("/api/steer")
    async def steer_route(request: Request) -> dict[str, Any]:
        t = need_tracer()
        req = parse_body(SteerRequest, await read_json_body(request, 256 * 1024))
        return await asyncio.to_thread(run_steer, t, req)

    def run_steer(t: Tracer, req: SteerRequest) -> dict[str, Any]:
        from circuitlab.server.steering import steer, steering_prompt

        try:
            meta = list_graph_meta(req.slug)
            prompt = steering_prompt(graph_dir, req.slug, meta.get("prompt"))
            return t.run_exclusive(
                req.model,
                lambda model: steer(
                    model,
                    prompt,
                    req.node_ids,
                    value=req.value,
                    scale=req.scale,
                    max_new_tokens=req.max_new_tokens,
                    constrained_layers=req.constrained_layers,
                    freeze_attention=req.freeze_attention,
                ),
            )
        except (ValueError, TypeError, IndexError) as e:
            raise HTTPProblem(400, str(e)) from None

    def list_graph_meta(slug: str) -> dict[str, Any]:
        for m in list_graphs(graph_dir)["graphs"]:
            if m.get("slug") == slug:
                return m
        raise HTTPProblem(404, f"no graph {slug!r}")

    @app.delete("/api/jobs/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        try:
            return {"job": need_tracer().cancel(job_id).public()}
        except KeyError:
            raise HTTPProblem(404, f"no job {job_id}") from None

    @app.websocket("/api/ws")
    async def ws(socket: WebSocket) -> None:
        if guard.check(socket) is not None or tracer is None:
            await socket.close(code=1008)
            return
        await socket.accept()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        unsubscribe = tracer.subscribe(lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
        try:
            await socket.send_json({"type": "jobs", "jobs": tracer.jobs()})
            receiver = asyncio.ensure_future(socket.receive_text())
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when="FIRST_COMPLETED")
                if receiver in done:
                    getter.cancel()
                    receiver.result()  # raises WebSocketDisconnect on close
                    receiver = asyncio.ensure_future(socket.receive_text())
                    continue
                await socket.send_json({"type": "job", "job": getter.result()})
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            unsubscribe()

    register_attention_routes(app, graph_dir, tracer)  # /api/attention/*: server/attention.py

    # ---- heads ------------------------------------------------------------------------------
    @app.get("/api/heads/presets")
    def heads_presets(model: str | None = None) -> dict[str, Any]:
        if heads is None:
            raise HTTPProblem(
                404, "this server has no model for the heads view; start it with --model"
            )
        try:
            return {"presets": heads.presets(model)}
        except ValueError as e:
            raise HTTPProblem(400, str(e)) from None

    @app.websocket("/api/heads/ws")
    async def heads_ws(socket: WebSocket) -> None:
        if guard.check(socket) is not None or heads is None:
            await socket.close(code=1008)
            return
        await socket.accept()
        await serve_heads(socket, heads)

    return app


async def serve_heads(socket: WebSocket, heads: HeadsLab) -> None:
    """One page's heads requests: each runs in a thread; a new one (or cancel) stops the last."""
    loop = asyncio.get_running_loop()
    current = threading.Event()
    tasks: set[asyncio.Future[None]] = set()
    run_id = 0

    async def run_one(rid: int, request: Any, stop: threading.Event) -> None:
        kind = request.get("type") if isinstance(request, dict) else None

        def send(event: dict[str, Any]) -> None:
            msg = {"type": "heads", "run": rid, "stream": kind, **event}
            asyncio.run_coroutine_threadsafe(socket.send_json(msg), loop).result()

        end: dict[str, Any] = {"type": "end", "run": rid, "stream": kind, "status": "done"}
        try:
            await asyncio.to_thread(heads.run, request, send, stop)
        except StreamCancelled:
            end["status"] = "cancelled"
        except (ValueError, TypeError) as e:  # bad input: one line for the page
            end.update(status="failed", error=public_text(str(e), [heads.graph_dir]))
        except Exception as e:  # reported to the page; the socket stays open
            error = public_text(f"{type(e).__name__}: {e}", [heads.graph_dir])
            end.update(status="failed", error=error)
        with contextlib.suppress(Exception):
            await socket.send_json(end)

    try:
        while True:
            text = await socket.receive_text()
            current.set()  # any message stops the running stream
            try:
                request = json.loads(text)
            except ValueError:
                request = None
            if isinstance(request, dict) and request.get("type") == "cancel":
                continue
            run_id += 1
            current = threading.Event()
            await socket.send_json({"type": "accepted", "run": run_id})
            task = asyncio.ensure_future(run_one(run_id, request, current))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        current.set()


def _can_steer(tracer: Tracer) -> bool:
    return all(hasattr(m, "feature_intervention") for m in tracer.models.values())
