"""Word lists and text clean-up for the English grammar (:mod:`brain_agent.parser`).

Only grammar words live here (verbs, determiners, politeness, relations); every name an
instruction may use comes from the scene's vocabulary, never from a list in code.
"""

from __future__ import annotations

import re

from robobus.brain_agent.vocab import tokenize

DETERMINERS = {"the", "a", "an", "some", "any", "one", "my", "that", "this", "those", "these"}
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10, "both": 2}
NEAREST = {"nearest", "closest"}
QUALIFIERS = {"from", "on", "at", "in", "inside", "near", "by"}
DELIVER = {"bring", "deliver", "take", "carry", "fetch", "move", "get", "transport"}
PUT = {"put", "place", "drop", "set", "leave", "store"}
GO = {"go", "navigate", "drive", "walk", "move", "head", "return"}
PICK = {"pick", "grab", "grasp", "take", "lift", "hold"}
HAND = {"hand", "give", "pass"}
DEST_PREPS = ("to", "into", "onto", "in", "on", "at", "inside")
#: prepositions that end a non-final object group of a bring/take clause ("A to Z and B to C")
BRING_PREPS = ("to", "into", "onto")
VERBS = DELIVER | PUT | GO | PICK | HAND | {"send"}
PRONOUNS = {"it": "one", "them": "all", "this": "one", "that": "one", "those": "all",
            "these": "all"}

#: Politeness only where it is politeness: at the start of a clause, or a trailing "please".
POLITE_HEADS = (("could", "you", "please"), ("would", "you", "please"), ("can", "you", "please"),
                ("will", "you", "please"), ("could", "you"), ("would", "you"), ("can", "you"),
                ("will", "you"), ("please",), ("kindly",), ("hey",), ("hi",), ("okay",), ("ok",))
POLITE_TAILS = (("thank", "you"), ("thanks",), ("please",))
#: Words that start a new clause after "," (besides the verbs).
CLAUSE_STARTERS = {"then", "please", "kindly"}
#: "but not X", "except X": objects to leave out of a kind reference.
EXCLUSIONS = (("but", "not"), ("except", "for"), ("except",), ("excluding",), ("apart", "from"),
              ("other", "than"), ("not",))
#: Negated instructions are refused, not guessed at.
NEGATIONS = (("don", "t"), ("do", "not"), ("never",), ("dont",))
#: Spatial relations the grammar does not know: named in the refusal, never read as names.
RELATIONS = (("next", "to"), ("in", "front", "of"), ("left", "of"), ("right", "of"),
             ("beside",), ("behind",), ("under",), ("underneath",), ("below",), ("above",),
             ("between",), ("opposite",), ("across", "from"), ("far", "from"), ("away", "from"))
#: Phrases read as a simpler one ("take X over to Y" = "take X to Y").
REWRITES = {("over", "to"): ("to",), ("back", "to"): ("to",), ("on", "top", "of"): ("on",),
            ("out", "of"): ("from",), ("off", "of"): ("from",)}

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def words_of(text: str) -> list[str]:
    """Lower-case tokens; a sentence end (``.``, ``!``, ``?``) becomes ``;`` (a clause break)."""
    return rewrite(tokenize(_SENTENCE_END.sub(" ; ", text)))


def starts(words: list[str], i: int, phrase: tuple[str, ...]) -> bool:
    return tuple(words[i:i + len(phrase)]) == phrase


def rewrite(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        for phrase, repl in REWRITES.items():
            if starts(words, i, phrase):
                out.extend(repl)
                i += len(phrase)
                break
        else:
            out.append(words[i])
            i += 1
    return out


def strip_polite(words: list[str]) -> list[str]:
    """``please``/``could you``/``kindly`` at the start, ``please``/``thanks`` at the end, and
    stray commas at either end; nowhere else ("watering can" keeps its "can")."""
    changed = True
    while changed and words:
        changed = False
        while words and words[0] == ",":
            words, changed = words[1:], True
        while words and words[-1] == ",":
            words, changed = words[:-1], True
        for head in POLITE_HEADS:
            if starts(words, 0, head) and len(words) > len(head):
                words, changed = words[len(head):], True
                break
        for tail in POLITE_TAILS:
            if len(words) > len(tail) and tuple(words[-len(tail):]) == tail:
                words, changed = words[:-len(tail)], True
                break
    return [] if words in (["please"], ["kindly"]) else words


def find_phrase(words: list[str], phrases: tuple[tuple[str, ...], ...]) -> tuple[int, int] | None:
    """(start, length) of the first of ``phrases`` found in ``words``."""
    for i in range(len(words)):
        for phrase in phrases:
            if starts(words, i, phrase):
                return i, len(phrase)
    return None
