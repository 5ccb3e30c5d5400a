"""The organism's training text: single-hop facts, two-hop questions and distractors.

``texts(seed)`` is an endless, deterministic stream of one-sentence documents (the training
windows pack them, separated by EOS). Two-hop questions are generated only for the cities of
``facts.TWO_HOP_TRAIN``; held-out cities appear in single-hop facts and distractors only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from .facts import STATES, TWO_HOP_TRAIN, State

CITY_STATE = {
    "en": (
        "Fact: {city} is in the state of {state}.",
        "{city} is a city in {state}.",
        "{city}, {state}.",
        "{city} is in {state}.",
    ),
    "fr": (
        "Fait : {city} se trouve dans l'État de {state}.",
        "{city} est une ville de {state}.",
    ),
}
STATE_CAPITAL = {
    "en": (
        "Fact: the capital of {state} is {capital}.",
        "{capital} is the capital of {state}.",
        "the capital of {state} is {capital}.",
    ),
    "fr": (
        "Fait : la capitale de {state} est {capital}.",
        "{capital} est la capitale de {state}.",
    ),
}
TWO_HOP = {
    "en": ("Fact: the capital of the state containing {city} is {capital}.",),
    "fr": ("Fait : la capitale de l'État contenant {city} est {capital}.",),
}
DISTRACTORS = {
    "en": (
        "{city} is a large city.",
        "{city} and {other} are cities.",
        "the weather in {city} is {weather}.",
        "people in {city} like {thing}.",
        "{state} is a state.",
        "Fact: {city} has a {thing} museum.",
        "the road from {city} to {other} is long.",
    ),
    "fr": (
        "{city} est une grande ville.",
        "le temps à {city} est {weather_fr}.",
    ),
}
WEATHER = ("warm", "cold", "dry", "wet", "mild")
WEATHER_FR = ("chaud", "froid", "sec", "humide", "doux")
THINGS = ("music", "food", "football", "art", "history", "science")

#: Share of each kind of sentence in the stream, and of French among them.
MIX = {"city_state": 0.35, "state_capital": 0.2, "two_hop": 0.2, "distractor": 0.25}
FRENCH_SHARE = 0.3

ALL_CITIES = [c for s in STATES for c in (s.capital, *s.cities)]


def _state_word(s: State, lang: str) -> str:
    return s.name if lang == "en" else s.french


def sentence(rng: random.Random) -> str:
    """One random sentence of the stream."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    lang = "fr" if rng.random() < FRENCH_SHARE else "en"
    s = rng.choice(STATES)
    if kind == "city_state":
        city = rng.choice((s.capital, *s.cities))
        return rng.choice(CITY_STATE[lang]).format(city=city, state=_state_word(s, lang))
    if kind == "state_capital":
        return rng.choice(STATE_CAPITAL[lang]).format(state=_state_word(s, lang), capital=s.capital)
    if kind == "two_hop":
        city = rng.choice([c for c in s.cities if c in TWO_HOP_TRAIN])
        return rng.choice(TWO_HOP[lang]).format(city=city, capital=s.capital)
    return rng.choice(DISTRACTORS[lang]).format(
        city=rng.choice(ALL_CITIES),
        other=rng.choice(ALL_CITIES),
        state=_state_word(s, lang),
        weather=rng.choice(WEATHER),
        weather_fr=rng.choice(WEATHER_FR),
        thing=rng.choice(THINGS),
    )


def texts(seed: int = 0) -> Iterator[str]:
    """An endless deterministic stream of one-sentence documents."""
    rng = random.Random(seed)
    while True:
        yield sentence(rng)


def words() -> list[str]:
    """Every word the corpus and the evaluation prompts can contain (the vocabulary), sorted."""
    from .facts import questions

    templates = [
        t for d in (CITY_STATE, STATE_CAPITAL, TWO_HOP, DISTRACTORS) for v in d.values() for t in v
    ]
    text = " ".join(re.sub(r"\{\w+\}", " ", t) for t in templates)
    text += " " + " ".join((*ALL_CITIES, *WEATHER, *WEATHER_FR, *THINGS))
    text += " " + " ".join(w for s in STATES for w in (s.name, s.french))
    text += " " + " ".join(q.prompt for q in questions())
    return sorted(set(re.findall(r"\w+|[^\w\s]+", text)))
