"""The scene vocabulary: every way an instruction may name an object, kind, place or robot.

Built from the world and the fleet, never from a word list in code: ``officeDesk`` answers to
"office desk" and "officedesk", ``realman_1`` to "realman 1" and "realman_1", a kind ``knife``
to "knife"/"knives", and a trailing word that names exactly one place ("desk") to that place.

Labels (issue 15): a scene's ``labels`` on places, objects and robots, and a lexicon's words for
the English words of names and kinds (``brain_agent/lexicon_zh.yaml``: "cup" -> 杯子), name the
same entities. Words in a script without spaces go to :attr:`Vocabulary.labels`, matched as
written; words in Latin script join the English phrases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Literal

from robobus.schemas.world import World

EntityType = Literal["object", "kind", "place", "robot"]
#: When one phrase names several things, the first type here wins.
PRECEDENCE: tuple[EntityType, ...] = ("object", "place", "robot", "kind")

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_TOKEN = re.compile(r"[a-z0-9_\-]+|,|;")
_LATIN = re.compile(r"^[\x00-\x7f]+$")
#: A lexicon: English word or phrase -> its words in another language, preferred first.
Lexicon = Mapping[str, Sequence[str]]


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
    #: label written without spaces (Chinese) -> the entities it may name; its longest length
    labels: dict[str, list[Entity]] = field(default_factory=dict)
    label_len: int = 1

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

    def add_label(self, label: str, entity: Entity) -> None:
        """``label`` names ``entity``: Latin script joins the phrases, other scripts the labels."""
        label = label.strip()
        if not label:
            return
        if _LATIN.match(label):
            self.add(tuple(tokenize(label)), entity)
            return
        key = "".join(label.split())
        bucket = self.labels.setdefault(key, [])
        if entity not in bucket:
            bucket.append(entity)
        self.label_len = max(self.label_len, len(key))

    def lookup_label(self, label: str) -> list[Entity]:
        """Entities named by a label (no spaces), best type first."""
        return sorted(self.labels.get(label) or [], key=lambda e: PRECEDENCE.index(e.type))

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


def build_vocabulary(world: World, robots: list[str], *, lexicon: Lexicon | None = None,
                     robot_labels: Mapping[str, Sequence[str]] | None = None) -> Vocabulary:
    """Every name, kind and unambiguous trailing word of the scene, and every label: the
    scene's own, ``robot_labels`` (from registrations) and ``lexicon`` words for names."""
    vocab = Vocabulary()
    for name in world.places:
        vocab.add_name(name, "place")
    for obj in world.objects.values():
        vocab.add_name(obj.name, "object")
        vocab.add_name(obj.kind, "kind")
    for name in {*robots, *world.robots}:
        vocab.add_name(name, "robot")
    _add_heads(vocab, world)
    _add_scene_labels(vocab, world, robot_labels or {})
    if lexicon:
        _add_lexicon(vocab, world, {*robots, *world.robots}, lexicon)
    return vocab


def _add_scene_labels(vocab: Vocabulary, world: World,
                      robot_labels: Mapping[str, Sequence[str]]) -> None:
    entries: list[tuple[Iterable[str], Entity]] = []
    entries += [(p.labels, Entity("place", n)) for n, p in world.places.items()]
    entries += [(o.labels, Entity("object", n)) for n, o in world.objects.items()]
    entries += [(r.labels, Entity("robot", n)) for n, r in world.robots.items()]
    entries += [(labels, Entity("robot", n)) for n, labels in robot_labels.items()]
    for labels, ent in entries:
        for label in labels:
            vocab.add_label(label, ent)


def _add_lexicon(vocab: Vocabulary, world: World, robots: Iterable[str], lexicon: Lexicon) -> None:
    """The lexicon's words for every name and kind; a name's last word for every name that
    ends in it, unless something else has that word (the trailing-word rule of English places:
    two tables make "桌子" ambiguous; ``paint_can`` answers to 罐子 where no kind is a can)."""
    named: list[tuple[str, EntityType]] = [(n, "place") for n in world.places]
    named += [(o.name, "object") for o in world.objects.values()]
    named += [(k, "kind") for k in sorted({o.kind for o in world.objects.values()})]
    named += [(r, "robot") for r in robots]
    for name, type_ in named:
        for label in translate(split_name(name), lexicon):
            vocab.add_label(label, Entity(type_, name))
    heads: dict[str, list[Entity]] = {}
    for name, type_ in named:
        words = split_name(name)
        if len(words) > 1 and not words[-1].isdigit():
            for label in lexicon.get(words[-1], ()):
                heads.setdefault(label, []).append(Entity(type_, name))
    for label, ents in heads.items():
        if label not in vocab.labels:  # a whole name's word wins over a last word
            for ent in ents:
                vocab.add_label(label, ent)


def translate(words: tuple[str, ...], lexicon: Lexicon) -> list[str]:
    """A name's words in the lexicon's language: its whole phrase's entry, else every
    combination of each word's first two translations (digits kept: ``shelf_2`` -> 架子2,
    2号架子); [] when a word has none."""
    phrase = " ".join(words)
    if phrase in lexicon:
        return list(lexicon[phrase])
    number = words[-1] if len(words) > 1 and words[-1].isdigit() else None
    stem = words[:-1] if number else words
    if len(stem) > 1 and " ".join(stem) in lexicon:
        options = [list(lexicon[" ".join(stem)])]
    else:
        options = [list(lexicon.get(w) or lexicon.get(w.rstrip("s")) or ())[:2] for w in stem]
    if not stem or not all(options):
        return []
    out = ["".join(combo) for combo in product(*options)]
    if number:
        out = [o + number for o in out] + [f"{number}号{o}" for o in out]
    return out


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
