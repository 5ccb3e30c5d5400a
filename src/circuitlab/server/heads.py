"""The heads view's backend: head analysis, patching sweeps and path patching streamed over a
websocket.

The page sends one request at a time over ``WS /api/heads/ws``:

* ``{"type": "analysis", "prompt" | "slug" | "probe", "answer"?, "wrong"?, "model"?}``:
  ``heads.stream_analysis`` of a prompt, of a graph's own tokens (``slug``), or of the
  repeated random-token probe (``probe``: its half length) that head classes are calibrated on;
* ``{"type": "patching", "clean", "corrupted", "answer", "wrong"?, "kinds"?, "model"?}``:
  ``heads.stream_patching`` (kinds from ``head``, ``resid``, ``mlp``);
* ``{"type": "path_patching", "clean", "corrupted", "answer", "wrong"?, "receivers", "inputs"?,
  "model"?}``: ``heads.stream_path_patching`` from every head to ``receivers``: ``"logits"`` or
  a list of ``"LAYER.HEAD"`` strings, whose ``inputs`` (letters of ``"qkv"``, the default) carry
  the path;
* ``{"type": "cancel"}`` stops the running stream at its next event.

and receives ``{"type": "heads", "run", "stream", ...event}`` per event of ``heads/stream.py``,
then ``{"type": "end", "run", "status": "done" | "cancelled" | "failed", "error"?}``. A new
request cancels the socket's running one. Each model runs one stream at a time, under the same
lock as tracing and steering when the heads model is a tracing model's language model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from circuitlab.graph.export import check_slug
from circuitlab.heads.patching import Kind

MAX_TOKENS = 128  # patterns are n_heads * n_pos^2 numbers per layer on the wire
MAX_PROMPT_CHARS = 2000
MAX_PROBE = 60


class StreamCancelled(Exception):
    """The page asked to stop (or left)."""


class HeadsLab:
    """Named ``heads.LabModel`` s and a lock per model; builds the event streams for requests."""

    def __init__(
        self,
        models: Mapping[str, Any],
        *,
        locks: Mapping[str, threading.Lock] | None = None,
        graph_dir: Path | None = None,
    ):
        if not models:
            raise ValueError("HeadsLab needs at least one model")
        self.models = dict(models)
        self.locks = {name: (locks or {}).get(name) or threading.Lock() for name in self.models}
        self.graph_dir = graph_dir

    @classmethod
    def from_replacement_models(cls, models: Mapping[str, Any], **kwargs: Any) -> HeadsLab:
        """The language models inside ``ReplacementModel`` s (no copy: same weights)."""
        from circuitlab.heads import LabModel

        labs = {
            name: LabModel(m.model, m.tokenizer, m.adapter, m.spec) for name, m in models.items()
        }
        return cls(labs, **kwargs)

    def model_name(self, name: Any) -> str:
        name = name or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; this server has {sorted(self.models)}")
        return str(name)

    def presets(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every preset with its prompts built for the model's tokenizer and its roles.

        ``fits`` says whether the prompts can run on the model; when not, ``why`` names the
        reason (words outside the vocabulary, answers of several tokens, unequal lengths).
        """
        from circuitlab.heads import PRESETS
        from circuitlab.heads.presets import unfit_reason

        lab = self.models[self.model_name(model)]
        out = []
        for p in PRESETS.values():
            try:
                built = p.build(lab.tokenizer)
                why = unfit_reason(built, lab.tokenizer, lab.spec.vocab_size)
            except Exception as e:  # a tokenizer that cannot build it: list it as unavailable
                reason = f"cannot be built for this tokenizer: {e}"
                out.append({"name": p.name, "title": p.title, "fits": False, "why": reason})
                continue
            out.append(
                {
                    "name": p.name,
                    "title": p.title,
                    "fits": why is None,
                    "why": why,
                    "circuit": p.circuit,
                    "source": p.source,
                    "clean": built.clean,
                    "corrupted": built.corrupted,
                    "answer": built.answer,
                    "wrong": built.wrong,
                    "roles": [
                        {
                            "name": r.name,
                            "component": r.component,
                            "depth": list(r.depth),
                            "evidence": r.evidence,
                            "does": r.does,
                        }
                        for r in p.roles
                    ],
                }
            )
        return out

    def stream(self, request: Any) -> tuple[str, str, Callable[[], Iterator[dict[str, Any]]]]:
        """``(model, kind, make_events)`` for a request; ``ValueError`` names what is wrong."""
        from circuitlab.heads import (
            KINDS,
            Target,
            check_receivers,
            repeated_tokens,
            stream_analysis,
            stream_patching,
            stream_path_patching,
        )

        if not isinstance(request, dict):
            raise ValueError('send {"type": "analysis", "prompt": "..."} or {"type": "patching"}')
        kind = request.get("type")
        name = self.model_name(request.get("model"))
        lab = self.models[name]
        target = Target(_token(request, "answer"), _token(request, "wrong"))
        if target.answer is None and target.wrong is not None:
            raise ValueError("a wrong token needs an answer token")
        if kind == "analysis":
            if request.get("probe"):
                n = request["probe"]
                if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_PROBE:
                    raise ValueError(f"probe must be a length from 2 to {MAX_PROBE}")
                tok = lab.tokenizer
                prompt: Any = repeated_tokens(
                    n, vocab=lab.spec.vocab_size, bos=None if tok is None else tok.bos_token_id
                )
            elif request.get("slug"):
                prompt = self._graph_prompt(str(request["slug"]))
            else:
                prompt = _text(request, "prompt")
            self._check_length(lab, prompt)
            return name, "analysis", lambda: stream_analysis(lab, prompt, target)
        if kind == "patching":
            clean, corrupted = _text(request, "clean"), _text(request, "corrupted")
            self._check_length(lab, clean)
            kinds = request.get("kinds") or ["head", "resid", "mlp"]
            if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(KINDS):
                raise ValueError("kinds must be a non-empty list of 'head', 'resid', 'mlp'")
            picked: tuple[Kind, ...] = tuple(k for k in KINDS if k in kinds)
            return (
                name,
                "patching",
                lambda: stream_patching(lab, clean, corrupted, target, kinds=picked),
            )
        if kind == "path_patching":
            clean, corrupted = _text(request, "clean"), _text(request, "corrupted")
            self._check_length(lab, clean)
            receivers = _receivers(request.get("receivers"))
            inputs = request.get("inputs") or "qkv"
            if not isinstance(inputs, str):
                raise ValueError("inputs must be a string of the letters q, k, v (e.g. 'qkv')")
            check_receivers(lab, receivers, inputs)  # fail before the stream starts
            return (
                name,
                "path_patching",
                lambda: stream_path_patching(
                    lab, clean, corrupted, target, receivers=receivers, inputs=inputs
                ),
            )
        raise ValueError(
            f"unknown request type {kind!r}: use 'analysis', 'patching' or 'path_patching'"
        )

    def run(
        self,
        request: Any,
        send: Callable[[dict[str, Any]], None],
        cancelled: threading.Event,
    ) -> None:
        """Runs a request under its model's lock, calling ``send`` per event (in this thread).

        Raises ``ValueError`` for a bad request and ``StreamCancelled`` once ``cancelled`` is set.
        """
        model, _kind, make_events = self.stream(request)
        with self.locks[model]:
            if cancelled.is_set():
                raise StreamCancelled
            events = make_events()
            try:
                for event in events:
                    if cancelled.is_set():
                        raise StreamCancelled
                    send(event)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()

    def _graph_prompt(self, slug: str) -> Any:
        from circuitlab.server.files import list_graphs
        from circuitlab.server.steering import steering_prompt

        if self.graph_dir is None:
            raise ValueError("this server has no graph folder")
        check_slug(slug)
        meta = next(
            (m for m in list_graphs(self.graph_dir)["graphs"] if m.get("slug") == slug), None
        )
        if meta is None:
            raise ValueError(f"no graph {slug!r}")
        return steering_prompt(self.graph_dir, slug, meta.get("prompt"))

    @staticmethod
    def _check_length(lab: Any, prompt: Any) -> None:
        n = int(lab.tokens(prompt).shape[0])
        if n > MAX_TOKENS:
            raise ValueError(f"the prompt is {n} tokens; the heads view takes up to {MAX_TOKENS}")


def _text(request: dict[str, Any], key: str) -> str:
    v = request.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{key} must be a non-empty string")
    if len(v) > MAX_PROMPT_CHARS:
        raise ValueError(f"{key} is longer than {MAX_PROMPT_CHARS} characters")
    return v


def _token(request: dict[str, Any], key: str) -> str | int | None:
    v = request.get(key)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError(f"{key} must be a token string or id")
    return v


def _receivers(v: Any) -> Any:
    """``"logits"`` or ``[(layer, head), ...]`` from ``"logits"`` or ``["LAYER.HEAD", ...]``."""
    if v is None or v == "logits":
        return "logits"
    bad = ValueError('receivers must be "logits" or a list of "LAYER.HEAD" strings (e.g. "9.6")')
    if not isinstance(v, list) or not v or len(v) > 1024:
        raise bad
    heads = []
    for item in v:
        layer, _, head = item.partition(".") if isinstance(item, str) else ("", "", "")
        if not (layer.isdigit() and head.isdigit()):
            raise bad
        heads.append((int(layer), int(head)))
    return heads
