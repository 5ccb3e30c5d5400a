"""circuit-tracer's ``circuit_tracing_tutorial`` code cells after ``install()``, on the tiny model.

Changed from the notebook: the model (the tiny one on disk, with a tokenizer that knows the
prompts' words), the Neuronpedia URLs (built here from the tiny model's most active features,
at the positions the notebook's URLs name) and the feature ids written in the cells. The
Colab set-up cell is left out. The notebook imports ``graph_visualization``, a drawing helper
that lives in circuit-tracer's ``demos/`` folder, not in its package: here a stand-in with
the same classes reads activations exactly as it does (``activations[feature]`` per feature,
fractions of the default activation) and records each drawing instead of returning an SVG.

What the notebook shows is checked: each supernode's activation fraction, the top outputs of
every intervention, and circuitlab's native ``feature_intervention`` giving the same logits.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest
import torch

from circuitlab.interventions import feature_intervention
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from conftest import WORDS, word_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

# The tutorial's prompts split into these words (the tokenizer's Whitespace pre-tokenizer), so
# each prompt has as many tokens as with Gemma's tokenizer and the notebook's positions hold.
TUTORIAL_WORDS = (
    'Fact : Oakland country Shanghai territory Vancouver The opposite " small Le contraire de '
    "petit est grand Un synonyme 小 的反义词是"
).split()


class Feature(NamedTuple):
    layer: int
    pos: int
    feature_idx: int


class Supernode:
    """The demos' supernode: a named group of features with children to draw arrows to."""

    def __init__(
        self,
        name: str,
        features: list[Any] | None,
        children: list[Supernode] | None = None,
        intervention: str | None = None,
        replacement_node: Supernode | None = None,
    ) -> None:
        self.name = name
        self.features = features
        self.children = children or []
        self.intervention = intervention
        self.replacement_node = replacement_node
        self.activation: float | None = None
        self.default_activations: torch.Tensor | None = None


class InterventionGraph:
    """The demos' drawing state: nodes with their default and current activations."""

    def __init__(self, ordered_nodes: list[list[Supernode]], prompt: str) -> None:
        self.ordered_nodes = ordered_nodes
        self.prompt = prompt
        self.nodes: dict[str, Supernode] = {}

    def initialize_node(self, node: Supernode, activations: torch.Tensor) -> None:
        self.nodes[node.name] = node
        node.default_activations = _read(activations, node.features)

    def set_node_activation_fractions(self, current_activations: torch.Tensor) -> None:
        for node in self.nodes.values():
            now = _read(current_activations, node.features)
            default = node.default_activations
            node.activation = (
                None if now is None or default is None else float((now / default).mean())
            )
            node.intervention = None
            node.replacement_node = None


def _read(activations: torch.Tensor, features: list[Any] | None) -> torch.Tensor | None:
    """``activations[layer, pos, feature]`` at each feature (the demos index by the tuple)."""
    if not features:
        return None
    return torch.tensor([activations[feature] for feature in features])


class Drawing(NamedTuple):
    """What ``create_graph_visualization`` would draw: each node's state and the top outputs."""

    nodes: dict[str, tuple[float | None, str | None, str | None]]
    top_outputs: list[tuple[str, float]]


DRAWINGS: list[Drawing] = []


def create_graph_visualization(
    graph: InterventionGraph, top_outputs: list[tuple[str, float]]
) -> Drawing:
    nodes = {
        name: (
            node.activation,
            node.intervention,
            None if node.replacement_node is None else node.replacement_node.name,
        )
        for name, node in graph.nodes.items()
    }
    drawing = Drawing(nodes, top_outputs)
    DRAWINGS.append(drawing)
    return drawing


@pytest.fixture
def graph_visualization(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``import graph_visualization`` finds the stand-in for the demos folder's module."""
    module = ModuleType("graph_visualization")
    for name in ("Feature", "Supernode", "InterventionGraph", "create_graph_visualization"):
        setattr(module, name, globals()[name])
    monkeypatch.setitem(sys.modules, "graph_visualization", module)
    DRAWINGS.clear()
    return module


@pytest.fixture
def words_model_dir(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> str:
    """The tiny model with a tokenizer that knows the tutorial's words."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], model_dir)
    word_tokenizer([*WORDS, *TUTORIAL_WORDS]).save_pretrained(model_dir)  # pyright: ignore[reportCallIssue]
    return str(model_dir)


class Urls:
    """Neuronpedia graph URLs over the tiny model's features (ids ``{layer}_{feature}_{pos}``)."""

    def __init__(self, native: NativeReplacementModel) -> None:
        self.native = native

    def top(self, prompt: str, pos: int, k: int, skip: int = 0) -> list[Feature]:
        """The ``k`` most active features at ``pos`` after the first ``skip``."""
        acts = self.native.get_activations(prompt).dense()[:, pos].float()
        values, flat = acts.flatten().topk(skip + k)
        assert bool((values > 0).all()), f"fewer than {skip + k} active features at {pos}"
        d = acts.shape[1]
        return [Feature(int(i) // d, pos, int(i) % d) for i in flat[skip:]]

    @staticmethod
    def url(supernodes: list[tuple[str, list[Feature]]]) -> str:
        ids = {f"{f.layer}_{f.feature_idx}_{f.pos}": None for _, fs in supernodes for f in fs}
        groups = [
            [name, *(f"{f.layer}_{f.feature_idx}_{f.pos}" for f in fs)] for name, fs in supernodes
        ]
        query = {
            "slug": "tiny",
            "pinnedIds": ",".join(["E_9_9", *ids]),
            "supernodes": json.dumps(groups),
        }
        return "https://www.neuronpedia.org/tiny/graph?" + urlencode(query)


@pytest.mark.usefixtures("installed")
def test_circuit_tracing_tutorial(
    words_model_dir: str,
    tiny_dirs: tuple[Path, Path],
    graph_visualization: ModuleType,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_name, transcoder_name = words_model_dir, str(tiny_dirs[1])
    native = NativeReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16
    )
    u = Urls(native)
    d_prompt = "Fact: the capital of the state containing Dallas is"
    [austin], say_capital = u.top(d_prompt, 10, 1), u.top(d_prompt, 10, 2, skip=1)
    dallas_austin_url = u.url(
        [
            ("capital", u.top(d_prompt, 4, 2)),
            ("state", u.top(d_prompt, 7, 2)),
            ("Texas", u.top(d_prompt, 9, 2)),
            ("preposition followed by place name", u.top(d_prompt, 10, 1, skip=3)),
            ("capital cities / say a capital city", say_capital),
        ]
    )
    o_prompt = "Fact: the capital of the state containing Oakland is"
    [sacramento] = u.top(o_prompt, 10, 1)
    oakland_url = u.url(
        [
            ("capital", u.top(o_prompt, 4, 2)),
            ("capital", u.top(o_prompt, 10, 2, skip=3)),
            ("California", u.top(o_prompt, 10, 2, skip=1)),
            ("Bay Area (say California)", u.top(o_prompt, 9, 1, skip=2)),
            ("California", u.top(o_prompt, 9, 2)),
        ]
    )
    s_prompt = "Fact: the capital of the country containing Shanghai is"
    shanghai_url = u.url(
        [
            ("China", u.top(s_prompt, 9, 2)),
            ("China", u.top(s_prompt, 10, 2)),
            ("capital", u.top(s_prompt, 10, 2, skip=2)),
            ("capital cities (say city)", u.top(s_prompt, 4, 2)),
        ]
    )
    v_prompt = "Fact: the capital of the territory containing Vancouver is"
    victoria, bc = u.top(v_prompt, 10, 2)
    vancouver_url = u.url([("Canada", u.top(v_prompt, 9, 2))])
    fr, en, zh = 'Le contraire de "petit" est "', 'The opposite of "small" is "', '"小"的反义词是"'
    url_fr = u.url(
        [
            ("say big / large", u.top(fr, 8, 2, skip=2)),
            ("too", u.top(fr, 8, 1, skip=4)),
            ("small", u.top(fr, 5, 2)),
            ("size", u.top(fr, 5, 1, skip=2)),
            ("French", u.top(fr, 8, 2)),
            ("opposite", u.top(fr, 2, 2)),
        ]
    )
    url_en = u.url(
        [
            ('Output "big" or "large"', u.top(en, 8, 2)),
            ("say big / huge / large", u.top(en, 8, 2, skip=2)),
            ("opposite", u.top(en, 2, 2)),
            ("small", u.top(en, 5, 2)),
        ]
    )
    url_zh = u.url(
        [
            ("reverse", u.top(zh, 4, 1)),
            ("small", u.top(zh, 2, 1)),
            ("say big / large", u.top(zh, 5, 2, skip=2)),
            ("Chinese", u.top(zh, 5, 2)),
            ("Chinese-related English text", u.top(zh, 1, 1)),
        ]
    )
    fr_rev, fr_syn = 'Le contraire de "grand" est "', 'Un synonyme de "petit" est "'
    [say_small] = u.top(fr_rev, 8, 1)
    url_fr_big_small = u.url([("large / huge", u.top(fr_rev, 5, 2))])
    url_fr_syn = u.url([("synonymy", u.top(fr_syn, 3, 2))])

    # ---- the notebook's cells ----
    from collections import namedtuple

    from circuit_tracer import ReplacementModel  # pyright: ignore[reportMissingImports]
    from circuit_tracer.utils.demo_utils import (  # pyright: ignore[reportMissingImports]
        extract_supernode_features,
    )

    backend = "transformerlens"  # change to 'nnsight' for the nnsight backend!
    model = ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16, backend=backend
    )

    supernode_features = extract_supernode_features(dallas_austin_url)

    from graph_visualization import (  # pyright: ignore[reportMissingImports]
        Feature,
        InterventionGraph,
        Supernode,
        create_graph_visualization,
    )

    # Supernodes that upweight certain outputs.
    say_austin_node = Supernode(
        name="Say Austin",
        features=[Feature(layer=austin.layer, pos=10, feature_idx=austin.feature_idx)],
    )
    say_capital_node = Supernode(
        name="Say a capital",
        features=supernode_features["capital cities / say a capital city"],
        children=[say_austin_node],
    )

    # Intermediate nodes
    texas_node = Supernode(
        name="Texas", features=supernode_features["Texas"], children=[say_austin_node]
    )
    state_node = Supernode(
        name="state", features=supernode_features["state"], children=[say_capital_node, texas_node]
    )
    capital_node = Supernode(
        name="capital", features=supernode_features["capital"], children=[say_capital_node]
    )

    # Embedding nodes
    dallas_node = Supernode(name="Emb: Dallas", features=None, children=[texas_node])
    state_emb_node = Supernode(name="Emb: state", features=None, children=[state_node])
    capital_emb_node = Supernode(name="Emb: capital", features=None, children=[capital_node])

    prompt = "Fact: the capital of the state containing Dallas is"
    ordered_nodes = [
        [capital_emb_node, state_emb_node],
        [capital_node, state_node, dallas_node],
        [say_capital_node, texas_node],
        [say_austin_node],
    ]
    dallas_austin_graph = InterventionGraph(ordered_nodes=ordered_nodes, prompt=prompt)

    logits, dallas_activations = model.get_activations(prompt)

    for node in [
        capital_node,
        state_node,
        dallas_node,
        say_capital_node,
        texas_node,
        say_austin_node,
    ]:
        dallas_austin_graph.initialize_node(node, dallas_activations)

    dallas_austin_graph.set_node_activation_fractions(dallas_activations)

    def get_top_outputs(logits: torch.Tensor, k: int = 5):
        top_probs, top_token_ids = logits.squeeze(0)[-1].softmax(-1).topk(k)
        top_tokens = [model.tokenizer.decode(token_id) for token_id in top_token_ids]
        top_outputs = list(zip(top_tokens, top_probs.tolist()))  # noqa: B905
        return top_outputs

    top_outputs = get_top_outputs(logits)

    create_graph_visualization(dallas_austin_graph, top_outputs)

    Intervention = namedtuple("Intervention", ["supernode", "scaling_factor"])

    def supernode_intervention(intervention_graph, interventions, replacements=None):
        intervention_values = [
            (*feature, scaling_factor * default_act)
            for intervened_supernode, scaling_factor in interventions
            for feature, default_act in zip(  # noqa: B905
                intervened_supernode.features, intervened_supernode.default_activations
            )
        ]
        new_logits, new_activations = model.feature_intervention(
            intervention_graph.prompt, intervention_values
        )
        intervention_graph.set_node_activation_fractions(new_activations)
        top_outputs = get_top_outputs(new_logits)

        for intervened_supernode, scaling_factor in interventions:
            intervened_supernode.activation = None
            intervened_supernode.intervention = f"{scaling_factor}x"

        if replacements is not None:
            for target, replacement in replacements.items():
                intervention_graph.nodes[target].replacement_node = replacement

        return create_graph_visualization(intervention_graph, top_outputs)

    supernode_intervention(dallas_austin_graph, [Intervention(say_capital_node, -2)])
    supernode_intervention(dallas_austin_graph, [Intervention(capital_node, -2)])
    supernode_intervention(dallas_austin_graph, [Intervention(texas_node, -2)])
    supernode_intervention(dallas_austin_graph, [Intervention(state_node, -2)])

    oakland_prompt = "Fact: the capital of the state containing Oakland is"
    _, oakland_activations = model.get_activations(oakland_prompt)

    oakland_supernodes = extract_supernode_features(oakland_url)

    say_sacramento_node = Supernode(
        "Say Sacramento",
        features=[Feature(layer=sacramento.layer, pos=10, feature_idx=sacramento.feature_idx)],
    )
    california_node = Supernode(
        "California",
        features=oakland_supernodes["California"] + oakland_supernodes["California (2)"],
        children=[say_sacramento_node],
    )

    for node in [say_sacramento_node, california_node]:
        dallas_austin_graph.initialize_node(node, oakland_activations)

    oakland_interventions = [Intervention(texas_node, -2), Intervention(california_node, 2)]
    supernode_intervention(
        dallas_austin_graph,
        oakland_interventions,
        {texas_node.name: california_node, say_austin_node.name: say_sacramento_node},
    )

    shanghai_prompt = "Fact: the capital of the country containing Shanghai is"
    _, shanghai_activations = model.get_activations(shanghai_prompt)

    shanghai_supernodes = extract_supernode_features(shanghai_url)

    china_node = Supernode(
        "China", features=shanghai_supernodes["China"] + shanghai_supernodes["China (2)"]
    )

    for node in [china_node]:
        dallas_austin_graph.initialize_node(node, shanghai_activations)

    china_interventions = [Intervention(texas_node, -2), Intervention(china_node, 2)]
    supernode_intervention(dallas_austin_graph, china_interventions, {texas_node.name: china_node})

    vancouver_prompt = "Fact: the capital of the territory containing Vancouver is"
    _, vancouver_activations = model.get_activations(vancouver_prompt)

    vancouver_supernodes = extract_supernode_features(vancouver_url)  # noqa: F841

    say_victoria_node = Supernode(
        "Say Victoria",
        features=[Feature(layer=victoria.layer, pos=10, feature_idx=victoria.feature_idx)],
    )
    bc_node = Supernode(
        "British Columbia",
        features=[Feature(layer=bc.layer, pos=10, feature_idx=bc.feature_idx)],
        children=[say_victoria_node],
    )

    for node in [say_victoria_node, bc_node]:
        dallas_austin_graph.initialize_node(node, vancouver_activations)

    bc_interventions = [Intervention(texas_node, -2), Intervention(bc_node, 2)]
    supernode_intervention(
        dallas_austin_graph,
        bc_interventions,
        {texas_node.name: bc_node, say_austin_node.name: say_victoria_node},
    )

    supernodes_fr = extract_supernode_features(url_fr)
    french_node = Supernode("French", features=supernodes_fr["French"], children=[])
    say_big_node = Supernode("Say big", features=supernodes_fr["say big / large"])
    small_node = Supernode("small", features=supernodes_fr["small"], children=[say_big_node])
    opposite_node = Supernode(
        "opposite", features=supernodes_fr["opposite"], children=[say_big_node]
    )

    supernodes_en = extract_supernode_features(url_en)

    supernodes_zh = extract_supernode_features(url_zh)
    chinese_node = Supernode(
        "Chinese",
        features=supernodes_zh["Chinese"] + supernodes_zh["Chinese-related English text"],
        children=[],
    )

    ordered_nodes_fr = [[french_node, opposite_node, small_node], [say_big_node]]

    prompt_en = 'The opposite of "small" is "'
    prompt_fr = 'Le contraire de "petit" est "'
    prompt_zh = '"小"的反义词是"'

    small_big_graph = InterventionGraph(ordered_nodes=ordered_nodes_fr, prompt=prompt_fr)

    logits_fr, activations_fr = model.get_activations(prompt_fr)

    for node in [say_big_node, small_node, french_node, opposite_node]:
        small_big_graph.initialize_node(node, activations_fr)

    logits_zh, activations_zh = model.get_activations(prompt_zh)
    small_big_graph.initialize_node(chinese_node, activations_zh)

    small_big_graph.set_node_activation_fractions(activations_fr)
    create_graph_visualization(small_big_graph, get_top_outputs(logits_fr))

    french_to_english_interventions = [Intervention(french_node, -2)]
    supernode_intervention(small_big_graph, french_to_english_interventions)

    french_to_chinese_interventions = [Intervention(french_node, -2), Intervention(chinese_node, 2)]
    supernode_intervention(
        small_big_graph,
        french_to_chinese_interventions,
        replacements={french_node.name: chinese_node},
    )

    supernodes_fr_big_small = extract_supernode_features(url_fr_big_small)
    say_small_node = Supernode(
        "Say small",
        features=[Feature(layer=say_small.layer, pos=8, feature_idx=say_small.feature_idx)],
    )
    big_node = Supernode(
        "big", features=supernodes_fr_big_small["large / huge"], children=[say_small_node]
    )

    prompt_fr_rev = 'Le contraire de "grand" est "'
    logits_fr_rev, activations_fr_rev = model.get_activations(prompt_fr_rev)

    for node in [say_small_node, big_node]:
        small_big_graph.initialize_node(node, activations_fr_rev)

    big_to_small_interventions = [Intervention(small_node, -2), Intervention(big_node, 2)]
    supernode_intervention(
        small_big_graph,
        big_to_small_interventions,
        replacements={small_node.name: big_node, say_big_node.name: say_small_node},
    )

    supernodes_fr_syn = extract_supernode_features(url_fr_syn)
    say_small_node2 = Supernode(
        "say small",
        features=[Feature(layer=say_small.layer, pos=8, feature_idx=say_small.feature_idx)],
    )
    synonym_node = Supernode(
        "synonym", features=supernodes_fr_syn["synonymy"], children=[say_small_node2]
    )

    prompt_fr_syn = 'Un synonyme de "petit" est "'
    logits_fr_syn, activations_fr_syn = model.get_activations(prompt_fr_syn)
    print('Top outputs for Un synonyme de "petit" est ": ', get_top_outputs(logits_fr_syn))

    small_big_graph.initialize_node(synonym_node, activations_fr_syn)
    synonym_node.features = [
        Feature(layer=f.layer, pos=f.pos - 1, feature_idx=f.feature_idx)
        for f in synonym_node.features
    ]

    antonym_to_synonym_interventions = [
        Intervention(opposite_node, -2),
        Intervention(synonym_node, 2),
    ]
    supernode_intervention(
        small_big_graph,
        antonym_to_synonym_interventions,
        replacements={opposite_node.name: synonym_node, say_big_node.name: say_small_node},
    )
    # ---- end of cells ----

    # get_activations: circuit-tracer's shapes, circuitlab's numbers
    expected = native.get_activations(prompt)
    assert logits.shape == (1, 11, native.spec.vocab_size)
    assert dallas_activations.shape == (2, 11, native.transcoders.d_transcoder)
    assert dallas_activations.dtype == torch.bfloat16
    torch.testing.assert_close(logits[0], expected.logits)
    torch.testing.assert_close(dallas_activations, expected.dense())
    top = expected.logits[-1].softmax(-1).topk(5)
    tokenizer = native.tokenizer
    assert tokenizer is not None
    assert [t for t, _ in DRAWINGS[0].top_outputs] == [
        tokenizer.decode(int(i)) for i in top.indices
    ]
    # the baseline drawing: every supernode at 100% of its default activation
    baseline = DRAWINGS[0].nodes
    assert baseline["Emb: Dallas"] == (None, None, None)
    for name in ("capital", "state", "Texas", "Say a capital", "Say Austin"):
        assert baseline[name][0] == pytest.approx(1.0)

    # every intervention drawn: the top outputs of native feature_intervention with the values
    # read from native activations of the prompt each supernode came from
    dal, oak, sha, van = d_prompt, o_prompt, s_prompt, v_prompt
    syn_source = [Feature(f.layer, f.pos + 1, f.feature_idx) for f in synonym_node.features]
    steps: list[tuple[str, list[tuple[Supernode, float, str]]]] = [
        (dal, [(say_capital_node, -2, dal)]),
        (dal, [(capital_node, -2, dal)]),
        (dal, [(texas_node, -2, dal)]),
        (dal, [(state_node, -2, dal)]),
        (dal, [(texas_node, -2, dal), (california_node, 2, oak)]),
        (dal, [(texas_node, -2, dal), (china_node, 2, sha)]),
        (dal, [(texas_node, -2, dal), (bc_node, 2, van)]),
        (fr, []),
        (fr, [(french_node, -2, fr)]),
        (fr, [(french_node, -2, fr), (chinese_node, 2, zh)]),
        (fr, [(small_node, -2, fr), (big_node, 2, fr_rev)]),
        (fr, [(opposite_node, -2, fr), (synonym_node, 2, fr_syn)]),
    ]
    assert len(DRAWINGS) == 1 + len(steps)
    for drawing, (target, parts) in zip(DRAWINGS[1:], steps, strict=True):
        values = []
        for node, scale, source in parts:
            acts = native.get_activations(source).dense()
            features = node.features or []
            read_at = syn_source if node is synonym_node else features
            values += [(*f, scale * acts[g]) for f, g in zip(features, read_at, strict=True)]
        probs = feature_intervention(native, target, values).logits[-1].softmax(-1)  # bf16
        assert [p for _, p in drawing.top_outputs] == pytest.approx(probs.topk(5).values.tolist())
        for node, scale, _ in parts:
            assert drawing.nodes[node.name][:2] == (None, f"{scale}x")

    # ablating 'Say a capital' (position 10) changes the output and leaves the earlier
    # positions' 'capital' and 'state' at 100%
    assert DRAWINGS[1].nodes["capital"][0] == pytest.approx(1.0)
    assert DRAWINGS[1].nodes["state"][0] == pytest.approx(1.0)
    assert DRAWINGS[1].top_outputs != DRAWINGS[0].top_outputs
    # swaps drawn with their replacements (supernodes with repeated names were numbered)
    assert DRAWINGS[5].nodes["Texas"] == (None, "-2x", "California")
    assert DRAWINGS[5].nodes["Say Austin"][2] == "Say Sacramento"
    assert DRAWINGS[12].nodes["opposite"] == (None, "-2x", "synonym")
    assert len(california_node.features) == 4 and len(china_node.features) == 4
    assert sorted(supernodes_en) == sorted(
        ['Output "big" or "large"', "say big / huge / large", "opposite", "small"]
    )
    assert (logits_zh.shape[1], logits_fr_rev.shape[1], prompt_en) == (6, 9, en)
    assert 'Top outputs for Un synonyme de "petit" est ":' in capsys.readouterr().out
