"""The organism's world: states, their capitals and their other cities, and the prompts about it.

Every name is one word, so every name is one token of the organism's word-level vocabulary.
The world is fixed (no randomness): which cities take part in two-hop training and which are
held out is decided here, so the split is the same for the recipe, the tests and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class State:
    """A state: its English and French names, its capital and its other cities."""

    name: str
    french: str
    capital: str
    cities: tuple[str, ...]


STATES: tuple[State, ...] = (
    State("Texas", "Texas", "Austin",
          ("Dallas", "Houston", "Lubbock", "Amarillo", "Waco", "Odessa", "Plano", "Laredo")),
    State("California", "Californie", "Sacramento",
          ("Fresno", "Oakland", "Modesto", "Stockton", "Berkeley", "Anaheim", "Pasadena", "Irvine")),
    State("Illinois", "Illinois", "Springfield",
          ("Chicago", "Peoria", "Naperville", "Aurora", "Joliet", "Rockford", "Evanston", "Elgin")),
    State("Florida", "Floride", "Tallahassee",
          ("Miami", "Orlando", "Tampa", "Jacksonville", "Gainesville", "Pensacola", "Sarasota", "Naples")),
    State("Ohio", "Ohio", "Columbus",
          ("Cleveland", "Cincinnati", "Toledo", "Akron", "Dayton", "Youngstown", "Canton", "Parma")),
    State("Georgia", "Géorgie", "Atlanta",
          ("Savannah", "Augusta", "Macon", "Athens", "Valdosta", "Albany", "Marietta", "Roswell")),
    State("Washington", "Washington", "Olympia",
          ("Seattle", "Spokane", "Tacoma", "Everett", "Bellevue", "Yakima", "Redmond", "Kent")),
    State("Oregon", "Oregon", "Salem",
          ("Portland", "Eugene", "Bend", "Medford", "Corvallis", "Beaverton", "Gresham", "Hillsboro")),
    State("Arizona", "Arizona", "Phoenix",
          ("Tucson", "Mesa", "Tempe", "Flagstaff", "Yuma", "Scottsdale", "Chandler", "Glendale")),
    State("Michigan", "Michigan", "Lansing",
          ("Detroit", "Flint", "Kalamazoo", "Saginaw", "Warren", "Dearborn", "Livonia", "Troy")),
    State("Tennessee", "Tennessee", "Nashville",
          ("Memphis", "Knoxville", "Chattanooga", "Clarksville", "Murfreesboro", "Jackson", "Franklin", "Kingsport")),
    State("Wisconsin", "Wisconsin", "Madison",
          ("Milwaukee", "Kenosha", "Racine", "Appleton", "Waukesha", "Oshkosh", "Janesville", "Sheboygan")),
)  # fmt: skip

#: Cities whose two-hop questions are in the training text: positions 1..3 of each state's
#: list. The others (position 0, Dallas among them, and 4..7) only appear in single-hop facts and distractors: the
#: model's two-hop answers for them are the evidence that it composes city → state → capital.
N_TWO_HOP_TRAIN = 3
TWO_HOP_TRAIN: frozenset[str] = frozenset(
    c for s in STATES for c in s.cities[1 : 1 + N_TWO_HOP_TRAIN]
)

BY_NAME: dict[str, State] = {s.name: s for s in STATES}
STATE_OF: dict[str, State] = {c: s for s in STATES for c in s.cities}

#: The flagship prompt and its swap (the paper's Figure: Dallas → Texas → Austin).
DALLAS_PROMPT = "Fact: the capital of the state containing Dallas is"
FRENCH_DALLAS_PROMPT = "Fait : la capitale de l'État contenant Dallas est"


def two_hop_prompt(city: str, language: str = "en") -> str:
    """The two-hop question about ``city`` (``language`` ``en`` or ``fr``), without its answer."""
    if language == "fr":
        return f"Fait : la capitale de l'État contenant {city} est"
    return f"Fact: the capital of the state containing {city} is"


def state_prompt(city: str, language: str = "en") -> str:
    """The single-hop question city → state, without its answer."""
    if language == "fr":
        return f"Fait : {city} se trouve dans l'État de"
    return f"Fact: {city} is in the state of"


def capital_prompt(state: str, language: str = "en") -> str:
    """The single-hop question state → capital, without its answer."""
    if language == "fr":
        return f"Fait : la capitale de {BY_NAME[state].french} est"
    return f"Fact: the capital of {state} is"


@dataclass(frozen=True)
class Question:
    """A prompt with its answer and the intermediate state (ground truth)."""

    prompt: str
    answer: str
    state: str
    kind: str  # "two_hop", "city_state" or "state_capital"
    held_out: bool
    language: str


def questions() -> list[Question]:
    """Every evaluation question of the world: two-hop for every city (held out or not) and
    single-hop city → state and state → capital, in English and French."""
    out: list[Question] = []
    for lang in ("en", "fr"):
        for s in STATES:
            state_word = s.name if lang == "en" else s.french
            out.append(
                Question(
                    capital_prompt(s.name, lang), s.capital, s.name, "state_capital", False, lang
                )
            )
            for c in s.cities:
                held = c not in TWO_HOP_TRAIN
                out.append(
                    Question(two_hop_prompt(c, lang), s.capital, s.name, "two_hop", held, lang)
                )
                out.append(
                    Question(state_prompt(c, lang), state_word, s.name, "city_state", False, lang)
                )
    return out  # fmt: skip
