"""``estimate_memory``: the peak memory of an attribution, predicted from shapes alone.

Nothing is loaded: model sizes come from ``config.json`` (and the safetensors headers for the
parameter count), transcoder sizes from ``config.yaml`` and the safetensors headers of the
layer files. The estimate follows the engine's phases (``attribution.attribute``) and counts
what is alive in each:

* **load**: runtime (interpreter, torch, transformers: ``RUNTIME_BYTES``, measured) + model
  weights + resident transcoder matrices (an encoder or decoder read lazily is not resident);
* **forward**: + the forward's transient activations (logits, attention scores, MLP hidden) +
  the capture kept for the sweep (attention patterns ``[layers, heads, pos, pos]``, the largest
  part of a long prompt; transcoder inputs, outputs and errors ``[layers, pos, d]``, logits);
* **sweep**: + sources (each output layer's distinct decoder rows, at most the transcoder's
  features, and one padded slot per active feature; encoder rows of one batch, or the distinct
  rows of every active feature with ``offload``) + the
  edge rows (``n_logits + min(max_feature_nodes, n_active)`` rows in the graph's block layout,
  ``graph.edges``: a feature row keeps the features and errors of earlier layers and the
  tokens, at positions up to its position chunk's end, on average a bit over half of them;
  signed values in ``edge_dtype``; with ``offload="disk"`` they go to a memory-mapped file and
  are not counted) + one batch's temporaries (``[batch, n_cols]`` rows and their block copies,
  gradients ``[batch, pos, d]`` and their ``W_O`` projection, the bounded chunks of
  ``attribution.sources``) + influence vectors; ``offload="disk"`` frees the MLP weights and
  the resident transcoders here and moves the patterns to a mapped file (``"cpu"`` frees
  nothing on a CPU-only machine);
* **graph**: the edge rows (the capture and sources are let go; under a feature cap the
  unselected columns are dropped block by block);
* **scores**: weights + the graph's blocks + one block's float32 work copies and node vectors
  (influence, pruning and scores go block by block).

The peak is the largest phase. The number of active features is unknown before the forward
pass: it is ``l0`` features per layer and non-BOS position (``k`` for TopK transcoders; else
``DEFAULT_L0`` unless given). Accuracy on the fixtures is in ``docs/cli.md`` (benchmark:
``benchmarks/estimate_memory.py``); the unit test allows a factor ``TOLERANCE`` either way.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Resident memory of a process that has imported torch, transformers and circuitlab (Linux,
#: CPU wheels; measured by ``benchmarks/estimate_memory.py``).
RUNTIME_BYTES = 350 * 2**20
#: Active features per layer and (non-BOS) token when the transcoders do not say (TopK ``k``).
DEFAULT_L0 = 64
#: The documented accuracy: measured peaks lie within this factor of the estimate.
TOLERANCE = 2.0

#: ``graph.edges.POSITION_CHUNKS`` (not imported: this module does not need torch).
POSITION_CHUNKS = 16
#: ``attribution.sources.READ_CHUNK_ELEMENTS`` (likewise).
READ_CHUNK_ELEMENTS = 2**24

_DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
_ST_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "U8": 1, "I8": 1}


@dataclass(frozen=True)
class ModelShapes:
    """What the estimate needs to know about the model (from its config)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    vocab_size: int
    n_params: int
    gated_mlp: bool


@dataclass(frozen=True)
class TranscoderShapes:
    """What the estimate needs to know about the transcoders (config + file headers)."""

    kind: str  # "plt" or "clt"
    n_layers: int
    d_model: int
    d_transcoder: int
    skip: bool
    k: int | None  # TopK's k


@dataclass
class MemoryEstimate:
    """Bytes per part, per phase, and the peak (see the module docstring)."""

    parts: dict[str, int]
    phases: dict[str, int]
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: self.phases[k])

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak,
            "peak_phase": self.peak_phase,
            "parts": self.parts,
            "phases": self.phases,
            "assumptions": self.assumptions,
        }

    def report(self) -> str:
        w = max(len(k) for k in [*self.parts, *self.phases])
        lines = [f"predicted peak: {human(self.peak)} ({self.peak:,} bytes) in {self.peak_phase}"]
        lines += ["parts:"] + [f"  {k:<{w}}  {human(v):>10}" for k, v in self.parts.items()]
        lines += ["phases (everything alive at once):"]
        lines += [f"  {k:<{w}}  {human(v):>10}" for k, v in self.phases.items()]
        lines += ["assumptions: " + ", ".join(f"{k}={v}" for k, v in self.assumptions.items())]
        return "\n".join(lines)


def human(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def estimate_memory(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_tokens: int,
    *,
    dtype: str = "float32",
    batch_size: int = 256,
    max_feature_nodes: int | None = 7500,
    max_n_logits: int = 10,
    offload: str | None = None,
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
    l0: float | None = None,
    n_active: int | None = None,
    edge_dtype: str | None = None,
) -> MemoryEstimate:
    """Predicted memory of ``attribute`` on an ``n_tokens`` prompt (BOS included).

    ``n_active`` (the number of active features, once a forward pass has counted them)
    replaces the guess from ``l0``. ``edge_dtype`` as in ``attribute`` (default float32, or
    float64 for float64 models).
    """
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPE_BYTES)}; got {dtype!r}")
    if n_tokens < 1 or batch_size < 1:
        raise ValueError("n_tokens and batch_size must be at least 1")
    if offload not in (None, "cpu", "disk"):
        raise ValueError(f"offload must be None, 'cpu' or 'disk'; got {offload!r}")
    b = _DTYPE_BYTES[dtype]
    edge_dtype = edge_dtype or ("float64" if dtype == "float64" else "float32")
    if edge_dtype not in _DTYPE_BYTES:
        raise ValueError(f"edge_dtype must be one of {', '.join(_DTYPE_BYTES)}; got {edge_dtype!r}")
    eb = _DTYPE_BYTES[edge_dtype]
    L, d, n = model.n_layers, model.d_model, n_tokens
    H, V, F, T = model.n_heads, model.vocab_size, model.d_mlp, transcoders.d_transcoder
    if l0 is None:
        l0 = transcoders.k if transcoders.k is not None else DEFAULT_L0
    if n_active is None:
        n_active = int(min(l0, T) * L * max(n - 1, 0))
    rows = min(max_feature_nodes if max_feature_nodes is not None else n_active, n_active)
    n_logits = max_n_logits
    tail = (L + 1) * n
    n_cols = n_active + tail
    batch = max(1, min(batch_size, max(rows, n_logits)))
    n_out = (L + 1) / 2 if transcoders.kind == "clt" else 1  # decoder rows per feature
    dec_all = T * d * (L * (L + 1) // 2 if transcoders.kind == "clt" else L)

    parts: dict[str, int] = {}
    parts["runtime"] = RUNTIME_BYTES
    parts["model weights"] = model.n_params * b
    enc_lazy = lazy_encoder and transcoders.kind == "plt"
    parts["transcoder encoders" + (" (lazy)" if enc_lazy else "")] = (
        0 if enc_lazy else T * d * L * b
    )
    parts["transcoder decoders" + (" (lazy)" if lazy_decoder else "")] = (
        0 if lazy_decoder else dec_all * b
    )
    parts["transcoder skip + biases"] = ((L * d * d) if transcoders.skip else 0) * b + (
        (2 * T + d) * L * b
    )
    parts["forward activations"] = int(
        (2 * n * V + 3 * H * n * n + 3 * n * F + 10 * n * d + 2 * n * T) * b
    )
    # offload="disk" (on the CPU) writes each layer's pattern to the spill file as the forward
    # computes it: one layer's pattern in memory at a time, the rest in the page cache.
    patterns = L * H * n * n * b
    parts["attention patterns"] = H * n * n * b if offload == "disk" else patterns
    parts["attention patterns in a mapped file"] = patterns if offload == "disk" else 0
    parts["capture (reads, writes, errors)"] = int((3 * L * n * d + n * V) * b)
    # Per output layer: its distinct decoder rows (at most the transcoder's features) and, per
    # active feature, a padded slot (table row, activation, column; padding at most 2x, ~1.5x);
    # encoder rows of one batch, or the distinct rows of all active features before an offload.
    distinct = min(n_active, L * T) * n_out
    enc_rows = min(n_active, L * T) if offload is not None else batch
    slots = n_active * n_out * 1.5 * (16 + b) + n_active * (24 + 4)
    parts["sources (decoder + encoder rows)"] = int((distinct + enc_rows) * d * b + slots)
    # Sources of a feature row: earlier layers' features and errors, and tokens, at positions up
    # to its position chunk's end (graph.edges.POSITION_CHUNKS chunks): on average ~half.
    pos_share = 0.5 + 0.5 / min(n, POSITION_CHUNKS)
    feature_row = (n_active * (L - 1) / (2 * L) + (L - 1) / 2 * n + n) * pos_share
    edge_rows = (n_logits * n_cols + rows * feature_row) * eb
    # offload="disk" writes the blocks to a mapped file: page cache, not the process's memory.
    parts["edge rows"] = 0 if offload == "disk" else int(edge_rows)
    parts["edge rows in a mapped file"] = int(edge_rows) if offload == "disk" else 0
    # One sweep: the rows [batch, n_cols] and their blocks' copies in the edge dtype, the
    # gradient and its W_O projection [batch, pos, d] (+ the skip path's product), and the
    # head-by-head attention and projection temporaries (bounded, attribution.sources).
    grads = (3 if transcoders.skip else 2) * n * d + 2 * n * model.d_head
    chunks = 2 * min(READ_CHUNK_ELEMENTS, batch * n * d) * b  # a gathered gradient + vectors
    parts["sweep batch"] = int(batch * (n_cols * (b + 2 * eb) + grads * b) + chunks)
    parts["influence"] = int(6 * (n_cols + n_logits) * b)
    graph_cols = rows + tail + n_logits
    one_block = edge_rows / eb * 4 / (L * POSITION_CHUNKS)  # float32 copy of a typical block
    parts["graph rows"] = int(one_block * eb / 4) if rows < n_active else 0
    parts["scores / pruning"] = int(2 * one_block + 12 * graph_cols * 8)
    mlp_weights = L * (3 if model.gated_mlp else 2) * d * F * b
    tc_resident = sum(v for k, v in parts.items() if k.startswith("transcoder"))
    # offload="disk" also frees the MLPs, the resident transcoders and the last pattern.
    freed = mlp_weights + tc_resident + parts["attention patterns"]
    parts["offload saving (sweep)"] = -freed if offload == "disk" else 0

    phases = phases_of(parts)
    assumptions = {
        "n_tokens": n_tokens,
        "l0": l0,
        "n_active": n_active,
        "feature_rows": rows,
        "n_logits": n_logits,
        "dtype": dtype,
        "batch_size": batch_size,
        "offload": offload,
        "edge_dtype": edge_dtype,
    }
    return MemoryEstimate(parts, phases, assumptions)


def phases_of(parts: dict[str, int]) -> dict[str, int]:
    """Everything alive in each phase, from the parts (a part missing or zeroed counts 0).

    The capture and the sources are let go once the last row is computed, so the graph and
    scores phases hold the edge rows only."""
    get = parts.get
    tc_resident = sum(v for k, v in parts.items() if k.startswith("transcoder"))
    base = get("runtime", 0) + get("model weights", 0) + tc_resident
    capture = get("attention patterns", 0) + get("capture (reads, writes, errors)", 0)
    edges = get("edge rows", 0)
    return {
        "load": base,
        "forward": base + get("forward activations", 0) + capture,
        "sweep": base
        + capture
        + get("sources (decoder + encoder rows)", 0)
        + edges
        + get("sweep batch", 0)
        + get("influence", 0)
        + get("offload saving (sweep)", 0),
        "graph": base + edges + get("graph rows", 0),
        "scores": base + edges + get("scores / pruning", 0),
    }


# ---- shapes from files --------------------------------------------------------------------------
def safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names -> dtype, shape), read without the data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 * 2**20:
            raise ValueError(f"{path} is not a safetensors file (header size {size})")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def _numel(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def model_shapes(ref: str | Path) -> ModelShapes:
    """Shapes of a model directory, ``.gguf`` file, hub id or packaged name (``smollm2``), from
    its config only."""
    from ..models.hub import hub_kwargs, resolve_model_ref

    path = Path(resolve_model_ref(str(ref))).expanduser()
    files: list[Path] = []
    if path.suffix == ".gguf":
        from transformers import AutoConfig

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        cfg: Any = AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; pass a Hugging Face model folder")
        cfg = json.loads((path / "config.json").read_text())
        files = sorted(path.glob("*.safetensors"))
    else:
        from huggingface_hub import hf_hub_download

        try:
            cfg = json.loads(
                Path(hf_hub_download(str(ref), "config.json", **hub_kwargs())).read_text()
            )
        except Exception as e:  # offline, unknown repo
            raise OSError(
                f"model {ref!r}: not a local folder and its config.json could not be fetched "
                f"from the hub ({type(e).__name__}); pass a local model folder"
            ) from None
    return shapes_from_config(cfg, n_params=_n_params(files))


def shapes_from_config(cfg: Any, n_params: int | None = None) -> ModelShapes:
    """Shapes of a model from its ``config.json`` dict (``n_params`` estimated when not given)."""
    cfg = cfg.get("text_config") or cfg
    d = int(cfg.get("hidden_size") or cfg.get("n_embd"))
    n_layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer"))
    n_heads = int(cfg.get("num_attention_heads") or cfg.get("n_head"))
    n_kv = int(cfg.get("num_key_value_heads") or n_heads)
    d_head = int(cfg.get("head_dim") or d // n_heads)
    d_mlp = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * d)
    vocab = int(cfg["vocab_size"])
    gated = cfg.get("model_type") != "gpt2"
    if n_params is None:
        per_layer = d * (n_heads + 2 * n_kv) * d_head + n_heads * d_head * d
        per_layer += (3 if gated else 2) * d * d_mlp + 4 * d
        tied = cfg.get("tie_word_embeddings", True)
        n_params = n_layers * per_layer + vocab * d * (1 if tied else 2) + d
    return ModelShapes(n_layers, d, n_heads, n_kv, d_head, d_mlp, vocab, n_params, gated)


def transcoder_shapes(ref: str | Path) -> tuple[TranscoderShapes, str | None]:
    """Shapes of a circuit-tracer transcoder directory and its ``model_name``."""
    from ..transcoders.formats.circuit_tracer import CROSS_LAYER, read_config, resolve_path

    config, config_path = read_config(ref)
    base = config_path.parent
    model_name = config.get("model_name")
    if model_name and not str(model_name).startswith("hf://"):
        local = base / str(model_name)
        model_name = str(local.resolve()) if local.exists() else str(model_name)
    k = config.get("k")
    if config.get("model_kind") == CROSS_LAYER:
        enc = sorted(base.glob("W_enc_*.safetensors"))
        if not enc:
            raise FileNotFoundError(f"no W_enc_{{i}}.safetensors in {base}")
        header = safetensors_header(enc[0])
        t, dm = next(v["shape"] for key, v in header.items() if key.startswith("W_enc"))
        skip = (base / "W_skip.safetensors").is_file()
        return TranscoderShapes("clt", len(enc), dm, t, skip, k), model_name
    listed = config.get("transcoders")
    if listed:
        paths = [resolve_path(str(e), base) for e in listed]
    else:
        paths = sorted(
            base.glob("layer_*.safetensors"),
            key=lambda p: int(re.sub(r"\D", "", p.stem) or 0),
        )
    if not paths:
        raise FileNotFoundError(f"no layer_{{i}}.safetensors next to {config_path}")
    if paths[0].suffix != ".safetensors":
        raise ValueError(f"{paths[0]}: estimate-memory reads safetensors transcoder files only")
    header = safetensors_header(paths[0])
    if "W_enc" not in header:
        raise ValueError(f"{paths[0]} has no W_enc; not a circuit-tracer transcoder file")
    t, dm = header["W_enc"]["shape"]
    return TranscoderShapes("plt", len(paths), dm, t, "W_skip" in header, k), model_name


def _n_params(files: list[Path]) -> int | None:
    """Parameters in the model's safetensors files (None without files)."""
    if not files:
        return None
    return sum(_numel(t["shape"]) for f in files for t in safetensors_header(f).values())


def shapes_json(model: ModelShapes, transcoders: TranscoderShapes) -> dict[str, Any]:
    return {"model": asdict(model), "transcoders": asdict(transcoders)}
