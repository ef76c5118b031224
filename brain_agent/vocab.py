"""The scene vocabulary: every way an instruction may name an object, kind, place or robot.

Built from the world and the fleet, never from a word list in code: ``officeDesk`` answers to
"office desk" and "officedesk", ``realman_1`` to "realman 1" and "realman_1", a kind ``knife``
to "knife"/"knives", and a trailing word that names exactly one place ("desk") to that place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from robobus.schemas.world import World

EntityType = Literal["object", "kind", "place", "robot"]
#: When one phrase names several things, the first type here wins.
PRECEDENCE: tuple[EntityType, ...] = ("object", "place", "robot", "kind")

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_TOKEN = re.compile(r"[a-z0-9_\-]+|,|;")


def split_name(name: str) -> tuple[str, ...]:
    """``officeDesk`` -> (office, desk); ``realman_1`` -> (realman, 1); ``G1`` -> (g1,)."""
    words: list[str] = []
    for part in re.split(r"[_\-\s]+", name):
        pieces = _CAMEL.findall(part)
        if len(pieces) > 1 and len(pieces[0]) > 1:
            words.extend(p.lower() for p in pieces)
        elif part:
            words.append(part.lower())
    return tuple(words)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (commas and semicolons kept as separators)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, slots=True)
class Entity:
    type: EntityType
    name: str


@dataclass(slots=True)
class Vocabulary:
    """Phrase (tuple of words) -> the entities it may name."""

    phrases: dict[tuple[str, ...], list[Entity]] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)
    max_len: int = 1

    def add(self, phrase: tuple[str, ...], entity: Entity) -> None:
        if not phrase:
            return
        bucket = self.phrases.setdefault(phrase, [])
        if entity not in bucket:
            bucket.append(entity)
        self.words.update(phrase)
        self.max_len = max(self.max_len, len(phrase))

    def add_name(self, name: str, type_: EntityType) -> None:
        ent = Entity(type_, name)
        self.add((name.lower(),), ent)
        self.add(split_name(name), ent)
        compact = "".join(split_name(name))
        self.add((compact,), ent)

    def lookup(self, phrase: tuple[str, ...]) -> list[Entity]:
        """Entities named by ``phrase``, best type first."""
        found = self.phrases.get(phrase) or []
        return sorted(found, key=lambda e: PRECEDENCE.index(e.type))

    def singular(self, word: str) -> str:
        """``knives`` -> ``knife`` when the singular is in the vocabulary; else ``word``."""
        if word in self.words:
            return word
        for suffix, repl in (("ies", "y"), ("ves", "fe"), ("ves", "f"), ("es", ""), ("s", "")):
            if word.endswith(suffix) and (cand := word[: -len(suffix)] + repl) in self.words:
                return cand
        return word


def build_vocabulary(world: World, robots: list[str]) -> Vocabulary:
    """Every name, kind and unambiguous trailing word of the scene."""
    vocab = Vocabulary()
    for name in world.places:
        vocab.add_name(name, "place")
    for obj in world.objects.values():
        vocab.add_name(obj.name, "object")
        vocab.add_name(obj.kind, "kind")
    for name in {*robots, *world.robots}:
        vocab.add_name(name, "robot")
    _add_heads(vocab, world)
    return vocab


def _add_heads(vocab: Vocabulary, world: World) -> None:
    """A place's last word ("desk" for officeDesk) names it when no other place shares it."""
    heads: dict[str, list[str]] = {}
    for name in world.places:
        words = split_name(name)
        if len(words) > 1:
            heads.setdefault(words[-1], []).append(name)
    for head, names in heads.items():
        if (head,) in vocab.phrases:
            continue
        for name in names:
            vocab.add((head,), Entity("place", name))
