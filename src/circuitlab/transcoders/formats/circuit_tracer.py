"""circuit-tracer's on-disk transcoder layout: ``config.yaml`` plus safetensors, read and written.

Per-layer transcoders (``model_kind: transcoder_set``)::

    config.yaml            model_kind, feature_input_hook, feature_output_hook, model_name,
                           activation (relu | jump_relu | topk), k, optional `transcoders:` list
    layer_{i}.safetensors  W_enc [d_t, d], b_enc [d_t], W_dec [d_t, d], b_dec [d],
                           activation_function.threshold [d_t] (JumpReLU), W_skip [d, d] (optional)

A ``transcoders:`` list names one file per layer (index = layer): an absolute path, a path
relative to the config, or ``hf://owner/repo/path?revision=...``. ``.npz`` entries are GemmaScope
files. Cross-layer transcoders (``model_kind: cross_layer_transcoder``)::

    W_enc_{i}.safetensors  W_enc_{i} [d_t, d], b_enc_{i} [d_t], b_dec_{i} [d], threshold_{i} [d_t]
    W_dec_{i}.safetensors  W_dec_{i} [d_t, n_layers - i, d]
    W_skip.safetensors     W_skip [n_layers, d, d]   (circuit-tracer computes x @ W_skip[l])

Saves stage everything in a hidden sibling directory, write ``config.yaml`` last and then rename,
so an interrupted save never leaves a directory that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from ..activations import Activation, JumpReLU, ReLU, TopK, make_activation
from ..base import Transcoders
from ..cross_layer import CrossLayerTranscoder
from ..per_layer import SingleLayerTranscoder, TranscoderSet
from ..rows import Rows, SafetensorsRows
from .gemmascope import read_gemmascope_npz

CONFIG_NAME = "config.yaml"
TRANSCODER_SET = "transcoder_set"
CROSS_LAYER = "cross_layer_transcoder"
_THRESHOLD_KEYS = ("activation_function.threshold", "threshold")
_LAYER_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "k", *_THRESHOLD_KEYS}


# ---- one layer, format-neutral -----------------------------------------------------------------
@dataclass
class LayerWeights:
    """The weights of one per-layer transcoder in circuitlab's orientation.

    ``W_enc``/``W_dec`` ``[d_t, d_model]`` (tensors or lazy ``Rows``), ``b_enc [d_t]``,
    ``b_dec [d_model]``, ``threshold [d_t]`` or None, ``W_skip [d_model, d_model]`` with
    ``skip(x) = x @ W_skip.T`` or None. ``source`` names the file in error messages.
    """

    W_enc: torch.Tensor | Rows
    b_enc: torch.Tensor
    W_dec: torch.Tensor | Rows
    b_dec: torch.Tensor
    threshold: torch.Tensor | None = None
    W_skip: torch.Tensor | None = None
    source: str = ""

    def check_shapes(self) -> None:
        """Raises ValueError naming the file and tensor whose shape does not fit the others."""
        if len(self.W_enc.shape) != 2:
            raise ValueError(
                f"{self.source}: W_enc has shape {list(self.W_enc.shape)}; expected [d_t, d_model]."
            )
        d_t, d = tuple(self.W_enc.shape)
        want: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...]]] = {
            "W_dec": (tuple(self.W_dec.shape), (d_t, d)),
            "b_enc": (tuple(self.b_enc.shape), (d_t,)),
            "b_dec": (tuple(self.b_dec.shape), (d,)),
            "threshold": (_shape(self.threshold), (d_t,)),
            "W_skip": (_shape(self.W_skip), (d, d)),
        }
        for key, (got, expected) in want.items():
            if got is not None and got != expected:
                raise ValueError(
                    f"{self.source}: {key} has shape {list(got)} but W_enc [d_t, d_model] = "
                    f"{[d_t, d]} needs {list(expected)}."
                )


def _shape(t: torch.Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else tuple(t.shape)


def choose_activation(
    kind: str | None, threshold: torch.Tensor | None, k: int | None, source: str
) -> Activation:
    """The activation named by ``kind``; without one, JumpReLU if a threshold exists, else ReLU."""
    if kind is None:
        kind = "jump_relu" if threshold is not None else "relu"
    try:
        return make_activation(kind, threshold=threshold, k=k)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def build_transcoder_set(
    layers: list[LayerWeights], activations: list[Activation], **kwargs: Any
) -> TranscoderSet:
    """A ``TranscoderSet`` after checking that every layer matches layer 0 (errors name both)."""
    for w in layers:
        w.check_shapes()
    first = layers[0]
    kinds = {type(a).__name__ for a in activations}
    for layer, (w, act) in enumerate(zip(layers, activations, strict=True)):
        if tuple(w.W_enc.shape) != tuple(first.W_enc.shape):
            raise ValueError(
                f"Layer {layer} ({w.source}) has W_enc [d_t, d_model] = {list(w.W_enc.shape)} "
                f"but layer 0 ({first.source}) has {list(first.W_enc.shape)}; all layers must "
                "share d_transcoder and d_model."
            )
        if (w.W_skip is None) != (first.W_skip is None):
            raise ValueError(
                f"Layer {layer} ({w.source}) {'lacks' if w.W_skip is None else 'has'} W_skip but "
                "layer 0 does not agree; either every layer has a skip connection or none does."
            )
        if len(kinds) > 1:
            raise ValueError(
                f"Layer {layer} ({w.source}) uses {type(act).__name__} but other layers use "
                f"{sorted(kinds - {type(act).__name__})}; all layers need one activation kind."
            )
    transcoders = [
        SingleLayerTranscoder(w.W_enc, w.b_enc, w.W_dec, w.b_dec, act, w.W_skip)
        for w, act in zip(layers, activations, strict=True)
    ]
    return TranscoderSet(transcoders, **kwargs)


# ---- paths inside config.yaml --------------------------------------------------------------------
@dataclass(frozen=True)
class HfUri:
    """``hf://owner/repo/path/in/repo?revision=rev``."""

    repo_id: str
    path: str
    revision: str | None = None


def parse_hf_uri(uri: str) -> HfUri:
    """Splits an ``hf://`` URI; raises ValueError naming the expected form."""
    if not uri.startswith("hf://"):
        raise ValueError(f"{uri!r} is not an hf:// URI.")
    body, _, query = uri[len("hf://") :].partition("?")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"{uri!r} needs the form hf://owner/repo[/path][?revision=rev].")
    revision = parse_qs(query).get("revision", [None])[0]
    return HfUri(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), revision)


def resolve_path(entry: str, base: Path, cache_dir: str | None = None) -> Path:
    """A local file for a ``config.yaml`` entry: absolute, relative to ``base``, or ``hf://``."""
    if entry.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        from ...models.hub import hub_fetch

        uri = parse_hf_uri(entry)
        return Path(
            hub_fetch(
                "transcoder file",
                entry,
                hf_hub_download,
                uri.repo_id,
                uri.path,
                revision=uri.revision,
                cache_dir=cache_dir,
            )
        )
    path = Path(entry).expanduser()
    return path if path.is_absolute() else base / path


# ---- reading -------------------------------------------------------------------------------------
def read_config(directory_or_config: str | Path) -> tuple[dict[str, Any], Path]:
    """``(config, config_path)`` for a directory holding ``config.yaml`` or the file itself."""
    path = Path(directory_or_config).expanduser()
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"No {CONFIG_NAME} at {path}. A circuit-tracer transcoder directory needs one, e.g. "
            f"`model_kind: transcoder_set`, `feature_input_hook: mlp.hook_in`, "
            f"`feature_output_hook: hook_mlp_out` next to layer_{{i}}.safetensors."
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(
            f"{path}{_yaml_position(e)}: not valid YAML ({_yaml_problem(e)}). {LAYOUT}"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file. {LAYOUT}") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{path} must hold a YAML mapping (`key: value` lines), got {type(config).__name__}. "
            f"{LAYOUT}"
        )
    check_config(config, path)
    return config, path.resolve()


#: What a circuit-tracer ``config.yaml`` holds, for error messages.
LAYOUT = (
    "Expected circuit-tracer's layout: `model_kind: transcoder_set` (or cross_layer_transcoder), "
    "`feature_input_hook: mlp.hook_in`, `feature_output_hook: hook_mlp_out`, optional "
    "`model_name: <hub id or path>`, `activation: relu | jump_relu | topk`, `k: <int>` and "
    "`transcoders: [<file per layer>, ...]`."
)
_REQUIRED_KEYS = ("model_kind", "feature_input_hook", "feature_output_hook")
_KEY_TYPES: dict[str, tuple[type, str]] = {
    "model_kind": (str, "a string"),
    "feature_input_hook": (str, "a hook name"),
    "feature_output_hook": (str, "a hook name"),
    "model_name": (str, "a hub id or a path"),
    "activation": (str, "relu, jump_relu or topk"),
    "k": (int, "an integer"),
    "transcoders": (list, "a list of per-layer files"),
}


def check_config(config: dict[str, Any], path: Path) -> None:
    """Missing required keys and keys of the wrong type, named with the expected layout."""
    missing = [k for k in _REQUIRED_KEYS if config.get(k) in (None, "")]
    if missing:
        raise ValueError(f"{path} has no {', '.join(f'`{k}`' for k in missing)}. {LAYOUT}")
    for key, (kind, words) in _KEY_TYPES.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(
                f"{path}: `{key}` must be {words}, got {type(value).__name__} {value!r}. {LAYOUT}"
            )
    bad = [e for e in config.get("transcoders") or [] if not isinstance(e, str)]
    if bad:
        raise ValueError(
            f"{path}: every `transcoders:` entry must be a file path or hf:// URI, got {bad[0]!r}. "
            f"{LAYOUT}"
        )


def _yaml_position(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return "" if mark is None else f" line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None)
    context = getattr(e, "context", None)
    text = " ".join(str(x) for x in (context, problem) if x) or str(e).splitlines()[0]
    return " ".join(text.replace("\t", "\\t").split())  # a tab is shown, not collapsed


def load_circuit_tracer(
    directory_or_config: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
    name: str | None = None,
    cache_dir: str | None = None,
) -> Transcoders:
    """Loads a ``transcoder_set`` or ``cross_layer_transcoder`` from its ``config.yaml``.

    Lazy matrices are read row by row from their files when the engine asks for them; a CLT's
    encoder is always read whole (``lazy_encoder`` applies to per-layer sets only).
    ``name`` defaults to the absolute directory of the config; ``cache_dir`` is the Hugging Face
    cache used for ``hf://`` entries.
    """
    config, config_path = read_config(directory_or_config)
    kind = config.get("model_kind")
    if kind not in (TRANSCODER_SET, CROSS_LAYER):
        raise ValueError(
            f"{config_path}: unknown model_kind {kind!r}; set `model_kind:` to "
            f"{TRANSCODER_SET} or {CROSS_LAYER}."
        )
    common: dict[str, Any] = {
        "input_hook": _required_hook(config, "feature_input_hook", config_path),
        "output_hook": _required_hook(config, "feature_output_hook", config_path),
        "name": name if name is not None else str(config_path.parent),
        "model_name": _model_name(config.get("model_name"), config_path.parent),
    }
    opts = {"dtype": dtype, "device": device}
    if kind == TRANSCODER_SET:
        paths = _layer_paths(config, config_path, cache_dir)
        layers = [
            _read_layer(p, lazy_encoder=lazy_encoder, lazy_decoder=lazy_decoder, **opts)
            for p in paths
        ]
        k = config.get("k", next((w.k for w in layers if w.k is not None), None))
        activations = [
            choose_activation(config.get("activation"), w.weights.threshold, k, w.weights.source)
            for w in layers
        ]
        return build_transcoder_set([w.weights for w in layers], activations, **common)
    if "transcoders" in config:
        raise ValueError(
            f"{config_path}: a `transcoders:` list is only supported for transcoder_set; "
            "a cross_layer_transcoder directory holds W_enc_{i}/W_dec_{i}.safetensors."
        )
    clt = _read_clt(config_path.parent, config, lazy_decoder=lazy_decoder, **opts)
    return CrossLayerTranscoder(**clt, **common)


def _required_hook(config: dict[str, Any], key: str, config_path: Path) -> str:
    """A hook name from the config; guessing one would silently give wrong attributions."""
    value = config.get(key)
    if not value:
        example = "mlp.hook_in" if key == "feature_input_hook" else "hook_mlp_out"
        raise ValueError(
            f"{config_path} has no `{key}`; add the TransformerLens hook name relative to a "
            f"block, e.g. `{key}: {example}`."
        )
    return str(value)


def _model_name(value: Any, base: Path) -> str | None:
    """``model_name`` as given, or an absolute path when it names a path next to the config."""
    if value is None:
        return None
    value = str(value)
    if not value.startswith("hf://") and not Path(value).is_absolute():
        local = base / value
        if value.startswith(".") or local.exists():
            return str(local.resolve())
    return value


def _layer_paths(config: dict[str, Any], config_path: Path, cache_dir: str | None) -> list[Path]:
    """One file per layer, from ``transcoders:`` or from the ``layer_{i}.safetensors`` present."""
    base = config_path.parent
    listed = config.get("transcoders")
    if listed is not None:
        paths = [resolve_path(str(entry), base, cache_dir) for entry in listed]
        missing = [f"layer {i}: {p}" for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{config_path} lists transcoder files that do not exist: {'; '.join(missing)}. "
                "Fix the paths (absolute, relative to config.yaml, or hf://) or add the files."
            )
        if not paths:
            raise ValueError(f"{config_path}: the `transcoders:` list is empty.")
        return paths
    found = _numbered(base, "layer_", ".safetensors")
    if not found:
        raise FileNotFoundError(
            f"No layer_{{i}}.safetensors files next to {config_path}; add them or list the "
            "per-layer files under `transcoders:` in config.yaml."
        )
    _require_contiguous(found, base, "layer_{}.safetensors")
    return [found[i] for i in range(len(found))]


def _numbered(directory: Path, prefix: str, suffix: str) -> dict[int, Path]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    out: dict[int, Path] = {}
    for p in directory.iterdir():
        m = pattern.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def _require_contiguous(found: dict[int, Path], directory: Path, template: str) -> None:
    n = max(found) + 1
    missing = [template.format(i) for i in range(n) if i not in found]
    if missing:
        raise FileNotFoundError(
            f"{directory} is missing {', '.join(missing)} (layers must be 0..{n - 1} without gaps)."
        )


@dataclass
class _ReadLayer:
    weights: LayerWeights
    k: int | None


def _read_layer(
    path: Path,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    lazy_encoder: bool,
    lazy_decoder: bool,
) -> _ReadLayer:
    if path.suffix == ".npz":
        g = read_gemmascope_npz(
            path, dtype=dtype, device=device, lazy_encoder=lazy_encoder, lazy_decoder=lazy_decoder
        )
        return _ReadLayer(
            LayerWeights(g.W_enc, g.b_enc, g.W_dec, g.b_dec, g.threshold, None, str(path)), None
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: unknown transcoder file type; use .safetensors or .npz.")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())

        def get(key: str) -> torch.Tensor:
            return f.get_tensor(key).to(device, dtype)

        def matrix(key: str, lazy: bool) -> torch.Tensor | Rows:
            return SafetensorsRows(path, key, dtype=dtype, device=device) if lazy else get(key)

        _check_keys(path, keys, required=("W_enc", "b_enc", "W_dec", "b_dec"), known=_LAYER_KEYS)
        thr_key = next((k for k in _THRESHOLD_KEYS if k in keys), None)
        k = int(f.get_tensor("k").item()) if "k" in keys else None
        weights = LayerWeights(
            W_enc=matrix("W_enc", lazy_encoder),
            b_enc=get("b_enc"),
            W_dec=matrix("W_dec", lazy_decoder),
            b_dec=get("b_dec"),
            threshold=get(thr_key) if thr_key else None,
            W_skip=get("W_skip") if "W_skip" in keys else None,
            source=str(path),
        )
    return _ReadLayer(weights, k)


def _check_keys(path: Path, keys: set[str], *, required: tuple[str, ...], known: set[str]) -> None:
    missing = [k for k in required if k not in keys]
    unknown = sorted(keys - known)
    if missing or unknown:
        raise ValueError(
            f"{path} does not look like a circuit-tracer transcoder file: "
            + (f"missing {', '.join(missing)}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unexpected {', '.join(unknown)}" if unknown else "")
            + f" (expected {', '.join(sorted(known))})."
        )


def _read_clt(
    directory: Path,
    config: dict[str, Any],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    lazy_decoder: bool,
) -> dict[str, Any]:
    """The constructor arguments of a ``CrossLayerTranscoder`` read from ``directory``."""
    enc_files = _numbered(directory, "W_enc_", ".safetensors")
    if not enc_files:
        raise FileNotFoundError(
            f"No W_enc_{{i}}.safetensors files in {directory}; a cross_layer_transcoder needs "
            "W_enc_{i}.safetensors and W_dec_{i}.safetensors for every layer."
        )
    _require_contiguous(enc_files, directory, "W_enc_{}.safetensors")
    n = len(enc_files)
    dec_files = _numbered(directory, "W_dec_", ".safetensors")
    missing = [f"W_dec_{i}.safetensors" for i in range(n) if i not in dec_files]
    if missing:
        raise FileNotFoundError(
            f"{directory} has {n} W_enc files but is missing {', '.join(missing)}."
        )
    W_enc, b_enc, b_dec, thresholds, W_dec = [], [], [], [], []
    for i in range(n):
        with safe_open(str(enc_files[i]), framework="pt") as f:
            keys = set(f.keys())
            names = (f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}")
            _check_keys(enc_files[i], keys, required=names, known={*names, f"threshold_{i}"})
            W_enc.append(f.get_tensor(names[0]).to(device, dtype))
            b_enc.append(f.get_tensor(names[1]).to(device, dtype))
            b_dec.append(f.get_tensor(names[2]).to(device, dtype))
            thr = f"threshold_{i}"
            thresholds.append(f.get_tensor(thr).to(device, dtype) if thr in keys else None)
        _check_clt_layer(i, enc_files[i], W_enc, b_enc[i], b_dec[i], thresholds[i])
        key = f"W_dec_{i}"
        dec: torch.Tensor | Rows
        if lazy_decoder:
            dec = SafetensorsRows(dec_files[i], key, dtype=dtype, device=device)
        else:
            with safe_open(str(dec_files[i]), framework="pt") as f:
                dec = f.get_tensor(key).to(device, dtype)
        d_t, d = W_enc[0].shape
        if tuple(dec.shape) != (d_t, n - i, d):
            raise ValueError(
                f"{dec_files[i]}: {key} has shape {list(dec.shape)}; a {n}-layer CLT with "
                f"d_t={d_t}, d_model={d} needs {[d_t, n - i, d]}."
            )
        W_dec.append(dec)
    return {
        "W_enc": torch.stack(W_enc),
        "b_enc": torch.stack(b_enc),
        "W_dec": W_dec,
        "b_dec": torch.stack(b_dec),
        "activations": [
            choose_activation(config.get("activation"), t, config.get("k"), str(enc_files[i]))
            for i, t in enumerate(thresholds)
        ],
        "W_skip": _read_clt_skip(directory, n, W_enc[0].shape[1], dtype, device),
    }


def _check_clt_layer(
    i: int,
    path: Path,
    W_enc: list[torch.Tensor],
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    threshold: torch.Tensor | None,
) -> None:
    d_t, d = W_enc[0].shape
    checks = {
        f"W_enc_{i}": (W_enc[i].shape, (d_t, d)),
        f"b_enc_{i}": (b_enc.shape, (d_t,)),
        f"b_dec_{i}": (b_dec.shape, (d,)),
    }
    if threshold is not None:
        checks[f"threshold_{i}"] = (threshold.shape, (d_t,))
    for key, (got, want) in checks.items():
        if tuple(got) != want:
            raise ValueError(
                f"{path}: {key} has shape {list(got)} but layer 0 fixes d_t={d_t}, d_model={d}, "
                f"so it needs {list(want)}."
            )


def _read_clt_skip(
    directory: Path, n: int, d: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor | None:
    path = directory / "W_skip.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        _check_keys(path, set(f.keys()), required=("W_skip",), known={"W_skip"})
        W_skip = f.get_tensor("W_skip")
    if tuple(W_skip.shape) != (n, d, d):
        raise ValueError(f"{path}: W_skip has shape {list(W_skip.shape)}; expected {[n, d, d]}.")
    # circuit-tracer applies x @ W_skip[l]; circuitlab applies x @ W_skip[l].T.
    return W_skip.transpose(1, 2).contiguous().to(device, dtype)


# ---- writing -------------------------------------------------------------------------------------
def save_transcoder_set(
    ts: TranscoderSet, directory: str | Path, *, overwrite: bool = False
) -> None:
    """Writes ``config.yaml`` and ``layer_{i}.safetensors`` (lazy matrices are read in full)."""
    act = ts.activation
    for layer in range(ts.n_layers):
        other = ts._layer(layer).activation
        if other.config() != act.config():
            raise ValueError(
                f"Layer {layer} uses {other.config()} but layer 0 uses {act.config()}; "
                "circuit-tracer's config.yaml holds one activation for all layers."
            )
    with _staging_dir(Path(directory), overwrite) as tmp:
        for layer in range(ts.n_layers):
            t = ts._layer(layer)
            tensors = {"W_enc": t.W_enc, "b_enc": t.b_enc, "W_dec": t.W_dec, "b_dec": t.b_dec}
            if isinstance(t.activation, JumpReLU):
                tensors["activation_function.threshold"] = t.activation.threshold
            if t.W_skip is not None:
                tensors["W_skip"] = t.W_skip
            _save(tensors, tmp / f"layer_{layer}.safetensors")
        _write_config(tmp, TRANSCODER_SET, ts, act)


def save_cross_layer_transcoder(
    clt: CrossLayerTranscoder, directory: str | Path, *, overwrite: bool = False
) -> None:
    """Writes ``config.yaml``, ``W_enc_{i}``/``W_dec_{i}.safetensors`` and ``W_skip.safetensors``."""
    acts = [_as_activation(m) for m in clt.activations]
    if len({str(a.config()) for a in acts}) != 1:
        raise ValueError("All CLT layers need one activation kind to be saved in config.yaml.")
    with _staging_dir(Path(directory), overwrite) as tmp:
        for i in range(clt.n_layers):
            enc = {
                f"W_enc_{i}": clt.W_enc[i],
                f"b_enc_{i}": clt.b_enc[i],
                f"b_dec_{i}": clt.b_dec[i],
            }
            act = acts[i]
            if isinstance(act, JumpReLU):
                enc[f"threshold_{i}"] = act.threshold
            _save(enc, tmp / f"W_enc_{i}.safetensors")
            _save({f"W_dec_{i}": clt.dec[i].full()}, tmp / f"W_dec_{i}.safetensors")
        if clt.W_skip is not None:
            _save({"W_skip": clt.W_skip.transpose(1, 2)}, tmp / "W_skip.safetensors")
        _write_config(tmp, CROSS_LAYER, clt, acts[0])


def _as_activation(module: torch.nn.Module) -> Activation:
    if isinstance(module, (ReLU, JumpReLU, TopK)):
        return module
    raise TypeError(f"{type(module).__name__} cannot be written to config.yaml.")


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))


def _write_config(directory: Path, kind: str, tc: Transcoders, act: Activation) -> None:
    config: dict[str, Any] = {
        "model_kind": kind,
        "feature_input_hook": tc.input_hook,
        "feature_output_hook": tc.output_hook,
    }
    model_name = getattr(tc, "model_name", None)
    if model_name:
        config["model_name"] = model_name
    config["activation"] = act.kind
    if isinstance(act, TopK):
        config["k"] = act.k
    (directory / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def _staging_dir(target: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden sibling directory that replaces ``target`` only when the block succeeds."""
    target = target.expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"{target} exists and is not a directory; choose another path.")
        if any(target.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{target} is not empty; pass overwrite=True to replace its contents or save "
                "into a new directory."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
