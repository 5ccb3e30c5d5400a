"""SAELens transcoders: one directory per layer with ``cfg.json`` + ``sae_weights.safetensors``.

Weights (SAELens orientation): ``W_enc [d_in, d_sae]`` (transposed relative to circuitlab),
``W_dec [d_sae, d_out]``, ``b_enc [d_sae]``, ``b_dec [d_out]``, optional ``threshold [d_sae]``
(or ``log_threshold``) for JumpReLU and ``W_skip [d_out, d_in]`` (``skip(x) = x @ W_skip.T``,
as in circuitlab). ``cfg.json`` names the architecture (``standard``, ``jumprelu``, ``topk``,
``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder``), the activation
(``activation_fn_str``/``activation_fn``, ``k`` or ``activation_fn_kwargs.k`` for TopK) and the
hooks (``hook_name``/``hook_name_out``, at the top level or under ``metadata`` in SAELens 6;
``hook_point``/``hook_point_out`` in old files). A parent directory with one such directory per
layer becomes a ``TranscoderSet``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..activations import Activation, make_activation
from ..per_layer import TranscoderSet
from ..rows import Rows, SafetensorsRows
from .circuit_tracer import LayerWeights, build_transcoder_set

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"

# TransformerLens names relative to a block. ``hook_mlp_in`` is applied to the residual *before*
# ``ln2`` (the same value as ``hook_resid_mid``), so it maps to ``hook_resid_mid``, not to
# ``mlp.hook_in`` (which is after the pre-norm).
_HOOK_ALIASES = {"hook_mlp_in": "hook_resid_mid"}
_TRANSCODER_ARCHS = {"transcoder", "skip_transcoder", "jumprelu_transcoder"}


def is_saelens_dir(path: str | Path) -> bool:
    """True for a SAELens directory or a parent directory of per-layer SAELens directories."""
    return bool(saelens_layer_dirs(path))


def saelens_layer_dirs(path: str | Path) -> list[Path]:
    """The SAELens directories at ``path`` (itself, or its sub-directories holding cfg.json)."""
    path = Path(path)
    if (path / CFG_NAME).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if (p / CFG_NAME).is_file())


def relative_hook(full_name: str, source: str) -> tuple[int, str]:
    """``blocks.{l}.{hook}`` -> ``(l, circuit-tracer's name for hook)``."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", full_name)
    if not m:
        raise ValueError(
            f"{source}: hook {full_name!r} is not a per-block TransformerLens hook "
            "(expected e.g. blocks.3.ln2.hook_normalized)."
        )
    return int(m.group(1)), _HOOK_ALIASES.get(m.group(2), m.group(2))


@dataclass(frozen=True)
class SaeLensCfg:
    """What circuitlab needs from one ``cfg.json``."""

    layer: int
    input_hook: str
    output_hook: str
    activation: str
    k: int | None
    model_name: str | None
    apply_b_dec_to_input: bool


def read_saelens_cfg(directory: Path) -> SaeLensCfg:
    """Parses ``directory/cfg.json``; errors name the file and the unsupported field."""
    path = directory / CFG_NAME
    cfg: dict[str, Any] = json.loads(path.read_text())
    meta: dict[str, Any] = cfg.get("metadata") or {}

    def field(*names: str) -> Any:
        for n in names:
            for d in (cfg, meta):
                if d.get(n) is not None:
                    return d[n]
        return None

    hook_in = field("hook_name", "hook_point")
    if hook_in is None:
        raise ValueError(f"{path}: no hook_name; cannot tell which layer this transcoder reads.")
    layer, input_hook = relative_hook(str(hook_in), str(path))
    if field("hook_layer", "hook_point_layer") is not None:
        layer = int(field("hook_layer", "hook_point_layer"))
    hook_out = field("hook_name_out", "hook_point_out")
    output_hook = "hook_mlp_out"  # an SAE-style file without an output hook writes the MLP out
    if hook_out is not None:
        out_layer, output_hook = relative_hook(str(hook_out), str(path))
        if out_layer != layer:
            raise ValueError(
                f"{path}: reads layer {layer} but writes layer {out_layer}; per-layer "
                "transcoders must write their own layer."
            )
    norm = field("normalize_activations")
    if norm not in (None, "none"):
        raise ValueError(
            f"{path}: normalize_activations={norm!r} rescales inputs at run time, which circuitlab "
            "cannot reproduce; fold the scale into the weights and set it to 'none'."
        )
    kind, k = _activation(cfg, path)
    return SaeLensCfg(
        layer=layer,
        input_hook=input_hook,
        output_hook=output_hook,
        activation=kind,
        k=k,
        model_name=field("model_name"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input"))
        and cfg.get("architecture") not in _TRANSCODER_ARCHS,
    )


def _activation(cfg: dict[str, Any], path: Path) -> tuple[str, int | None]:
    arch = str(cfg.get("architecture") or "standard")
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if "jumprelu" in arch:
        return "jump_relu", None
    if arch == "topk" or fn == "topk":
        if k is None:
            raise ValueError(f"{path}: a TopK transcoder needs `k` (or activation_fn_kwargs.k).")
        return "topk", int(k)
    if arch in ("standard", *_TRANSCODER_ARCHS) and fn == "relu":
        return "relu", None
    raise ValueError(
        f"{path}: architecture {arch!r} with activation {fn!r} is not supported; circuitlab "
        "reads standard/transcoder (ReLU), jumprelu and topk SAELens files."
    )


def read_saelens_layer(
    directory: Path,
    cfg: SaeLensCfg,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    lazy_encoder: bool,
    lazy_decoder: bool,
) -> tuple[LayerWeights, Activation]:
    """One layer's weights (circuitlab orientation) and activation."""
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has {CFG_NAME} but no {WEIGHTS_NAME}.")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in keys]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is not a SAELens weight file.")

        def get(key: str) -> torch.Tensor:
            return f.get_tensor(key).to(device, dtype)

        d_in = int(f.get_slice("W_enc").get_shape()[0])
        d_out = int(f.get_slice("W_dec").get_shape()[1])
        if d_in != d_out:
            raise ValueError(
                f"{path}: W_enc reads d_in={d_in} but W_dec writes d_out={d_out}; a transcoder "
                "must read and write the residual width."
            )
        b_enc = get("b_enc")
        if cfg.apply_b_dec_to_input:  # SAELens encodes (x - b_dec); fold it into b_enc
            b_enc = b_enc - get("b_dec") @ get("W_enc")
        threshold = get("threshold") if "threshold" in keys else None
        if threshold is None and "log_threshold" in keys:
            threshold = get("log_threshold").exp()
        W_enc: torch.Tensor | Rows = (
            SafetensorsRows(path, "W_enc", dtype=dtype, device=device, transpose=True)
            if lazy_encoder
            else get("W_enc").T.contiguous()
        )
        W_dec: torch.Tensor | Rows = (
            SafetensorsRows(path, "W_dec", dtype=dtype, device=device)
            if lazy_decoder
            else get("W_dec")
        )
        weights = LayerWeights(
            W_enc=W_enc,
            b_enc=b_enc,
            W_dec=W_dec,
            b_dec=get("b_dec"),
            threshold=threshold,
            W_skip=get("W_skip") if "W_skip" in keys else None,
            source=str(path),
        )
    try:
        act = make_activation(cfg.activation, threshold=threshold, k=cfg.k)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return weights, act


def load_saelens(
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
    name: str | None = None,
) -> TranscoderSet:
    """Per-layer SAELens transcoders under ``directory`` as one ``TranscoderSet``.

    Layers come from ``hook_layer`` (or the ``blocks.{l}.`` of ``hook_name``) and must cover
    ``0 .. n-1``; all layers must share their hooks.
    """
    root = Path(directory).expanduser().resolve()
    dirs = saelens_layer_dirs(root)
    if not dirs:
        raise FileNotFoundError(
            f"No {CFG_NAME} in {root} or its sub-directories; a SAELens transcoder set is a "
            f"directory with one sub-directory ({CFG_NAME} + {WEIGHTS_NAME}) per layer."
        )
    by_layer: dict[int, tuple[Path, SaeLensCfg]] = {}
    for d in dirs:
        cfg = read_saelens_cfg(d)
        if cfg.layer in by_layer:
            raise ValueError(f"Both {by_layer[cfg.layer][0]} and {d} are layer {cfg.layer}.")
        by_layer[cfg.layer] = (d, cfg)
    missing = [i for i in range(max(by_layer) + 1) if i not in by_layer]
    if missing:
        raise FileNotFoundError(
            f"{root} has SAELens transcoders for layers {sorted(by_layer)} but none for "
            f"{missing}; a transcoder set needs every layer from 0."
        )
    cfgs = [by_layer[i][1] for i in range(len(by_layer))]
    for i, c in enumerate(cfgs):
        if (c.input_hook, c.output_hook) != (cfgs[0].input_hook, cfgs[0].output_hook):
            raise ValueError(
                f"{by_layer[i][0]}: hooks ({c.input_hook}, {c.output_hook}) differ from layer "
                f"0's ({cfgs[0].input_hook}, {cfgs[0].output_hook})."
            )
    read = [
        read_saelens_layer(
            by_layer[i][0],
            c,
            dtype=dtype,
            device=device,
            lazy_encoder=lazy_encoder,
            lazy_decoder=lazy_decoder,
        )
        for i, c in enumerate(cfgs)
    ]
    return build_transcoder_set(
        [w for w, _ in read],
        [a for _, a in read],
        input_hook=cfgs[0].input_hook,
        output_hook=cfgs[0].output_hook,
        name=name if name is not None else str(root),
        model_name=cfgs[0].model_name,
    )
