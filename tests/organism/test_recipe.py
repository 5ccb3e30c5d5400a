"""The recipe runs end to end (a few steps) and writes the layout ``load_organism`` reads."""

from __future__ import annotations

from pathlib import Path

from circuitlab.organism.corpus import texts, words
from circuitlab.organism.facts import STATES, TWO_HOP_TRAIN
from circuitlab.organism.load import load_organism, organism_paths
from circuitlab.organism.recipe import Recipe, build, quick
from circuitlab.organism.tokenizer import build_tokenizer


def test_corpus_is_deterministic_and_holds_out_cities():
    a = [t for t, _ in zip(texts(3), range(2000), strict=False)]
    assert a == [t for t, _ in zip(texts(3), range(2000), strict=False)]
    held_out = {c for s in STATES for c in s.cities} - TWO_HOP_TRAIN
    for t in a:
        if "containing" in t or "contenant" in t:
            assert not any(f" {c} " in t for c in held_out), t


def test_tokenizer_has_one_token_per_word():
    tok = build_tokenizer()
    vocab = set(words())
    for s in STATES:
        for name in (s.name, s.french, s.capital, *s.cities):
            assert name in vocab
            assert len(tok(name, add_special_tokens=False).input_ids) == 1


def test_quick_recipe_builds_a_loadable_organism(tmp_path: Path):
    build(tmp_path, quick(Recipe()), verbose=False)
    paths = organism_paths(tmp_path)
    assert {"recipe", "accuracy", "seconds", "state_features"} <= set(paths.info)
    model = load_organism(tmp_path)
    assert model.n_layers == Recipe().lm.n_layers
    assert (paths.features / "index.json.gz").is_file()
