"""The lab server's request bodies as typed models: a bad field is a 422 that names it.

Models are strict (no "3" for 3, no 1 for "1", no ``true`` for a number) and ignore unknown
keys (so an older server takes a newer page's extra fields). JSON-level limits (nesting depth,
NaN/Infinity) are checked before these, in ``files.read_json_body``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict

from circuitlab.graph.export import check_slug
from circuitlab.server.files import HTTPProblem, json_path
from circuitlab.server.jobs import MAX_PROMPT_CHARS, MAX_TARGETS
from circuitlab.server.steering import MAX_NEW_TOKENS, MAX_NODES

MAX_STEER_AMOUNT = 1e6
_STRICT = ConfigDict(strict=True, extra="ignore")


class TraceRequest(BaseModel):
    """``POST /api/trace``: ``targets`` may be one token string or a list of them."""

    model_config = _STRICT
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    targets: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    model: str | None = None
    slug: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the prompt is empty")
        return v

    @field_validator("targets", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, str) else v  # "Austin" is one target, not six letters

    @field_validator("targets")
    @classmethod
    def _no_empty_targets(cls, v: list[str]) -> list[str]:
        if not all(v):
            raise ValueError("targets must be non-empty token strings")
        return v

    @field_validator("model", "slug", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return v or None

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str | None) -> str | None:
        return None if v is None else check_slug(v)


class GraphModelRequest(BaseModel):
    """A request about graph ``slug`` (checked as a slug) run with ``model`` (blank: the
    server's own); the base of ``/api/steer`` and ``/api/attention/*``."""

    model_config = _STRICT
    slug: str
    model: str | None = None

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        return check_slug(v)

    @field_validator("model", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return v or None


class SteerRequest(GraphModelRequest):
    """``POST /api/steer``: ``value`` sets the nodes, ``scale`` multiplies them, neither ablates."""

    node_ids: list[str] = Field(min_length=1, max_length=MAX_NODES)
    value: float | None = Field(
        None, allow_inf_nan=False, ge=-MAX_STEER_AMOUNT, le=MAX_STEER_AMOUNT
    )
    scale: float | None = Field(
        None, allow_inf_nan=False, ge=-MAX_STEER_AMOUNT, le=MAX_STEER_AMOUNT
    )
    max_new_tokens: int = Field(12, ge=0, le=MAX_NEW_TOKENS)
    # the mode, as the CLI's --constrained-layers / --no-freeze-attention (steering.SteerMode)
    constrained_layers: str | list[int] | None = Field(None, max_length=1024)
    freeze_attention: bool = True

    @model_validator(mode="after")
    def _one_operation(self) -> SteerRequest:
        if self.value is not None and self.scale is not None:
            raise ValueError("give value or scale, not both")
        return self


class QParams(TypedDict, total=False):
    """A graph's saved view. The keys the lab reads must have these JSON types (circuit-tracer's
    page saves raw URL strings, ours arrays and objects); other keys are kept as they are."""

    __pydantic_config__ = ConfigDict(strict=True, extra="allow")  # type: ignore[misc]
    pinnedIds: list[str] | str
    hiddenIds: list[str] | str
    supernodes: list[list[str]] | str  # [label, ...node_ids] each
    linkType: str
    clickedId: str
    sg_pos: str | dict[str, Any]
    pruningThreshold: float | str | None
    clerps: list[Any] | str
    nodeLabels: dict[str, Any]


class SaveRequest(BaseModel):
    """``POST /save_graph/{slug}``: the view, and the ``version`` of the file it was read from."""

    model_config = _STRICT
    qParams: QParams
    version: int | None = Field(None, ge=0)


M = TypeVar("M", bound=BaseModel)

# Where pydantic's error locations name the member of a union that was tried.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\])$")


def parse_body(model: type[M], body: Any) -> M:
    """``body`` as ``model``; a 422 naming the first bad field (``qParams.supernodes[0]``)."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise HTTPProblem(422, describe(e)) from None


def describe(error: ValidationError) -> str:
    """One line for the first problem: ``field: what is wrong`` (unions: every type allowed)."""
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    tag_at = next(
        (i for i, p in enumerate(loc) if isinstance(p, str) and _UNION_TAG.match(p)), None
    )
    if tag_at is None:
        return f"{json_path(loc) or 'body'}: {msg}"
    field = loc[:tag_at]
    tags = [str(e["loc"][tag_at]) for e in errors if tuple(e["loc"][:tag_at]) == field]
    inner = loc[:tag_at] + loc[tag_at + 1 :]
    kinds = " or ".join(dict.fromkeys(tags))
    return f"{json_path(field) or 'body'}: must be {kinds} ({json_path(inner)}: {msg})"
