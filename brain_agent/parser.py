"""A deterministic English grammar for instructions, over the scene's vocabulary.

Sentences (clauses may be joined by "and then", "then", ";" or "."; "R, ..." names a robot):

* ``bring|deliver|take|carry|fetch|move|get X (and Y) to Z``
* ``put|place|drop|set|leave X in|into|on|onto|at Z``
* ``go|navigate|drive|walk|move to Y`` (with a robot: ``R, go to Y`` / ``send R to Y``)
* ``pick up|grab|grasp|take X``
* ``hand|give|pass X to R``
* ``cancel|stop|abort task T``

Noun phrases: ``apple``; ``a fruit knife`` (kind ``knife``, "fruit" a modifier); ``two apples``;
``the fruit nearest (to) the cup``; ``all fruit on the kitchen table``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import CancelTask, Deliver, Goal, GoalSet, GoTo, HandTo, ObjectRef, PickUp
from robobus.brain_agent.vocab import Entity, EntityType, Vocabulary, tokenize

_CJK = re.compile(r"[\u3400-\u9fff]")
_CANCEL = re.compile(r"^\s*(?:please\s+)?(?:cancel|stop|abort)\s+(?:the\s+)?task\s+#?(\S+?)[.!]?\s*$",
                     re.IGNORECASE)
_POLITE = ("please", "could", "would", "can", "you", "kindly")
_DETERMINERS = {"the", "a", "an", "some", "any", "one", "my", "that", "this"}
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "ten": 10, "both": 2}
_NEAREST = {"nearest", "closest"}
_QUALIFIERS = {"from", "on", "at", "in", "inside", "near", "by"}
_DELIVER = {"bring", "deliver", "take", "carry", "fetch", "move", "get", "transport"}
_PUT = {"put", "place", "drop", "set", "leave", "store"}
_GO = {"go", "navigate", "drive", "walk", "move", "head", "return"}
_PICK = {"pick", "grab", "grasp", "take", "lift", "hold"}
_HAND = {"hand", "give", "pass"}
_DEST_PREPS = ("to", "into", "onto", "in", "on", "at", "inside")
_VERBS = _DELIVER | _PUT | _GO | _PICK | _HAND | {"send"}


@dataclass(slots=True)
class Clause:
    robot: str | None
    words: list[str]


class SymbolicParser:
    """Parse English instructions into a :class:`GoalSet` using one scene vocabulary."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def parse(self, text: str) -> GoalSet:
        """Parse ``text``; raise :class:`ParseError` saying what was not understood."""
        if _CJK.search(text):
            raise ParseError("the symbolic parser understands English only; use --planner llm "
                             "for other languages", "unsupported_language")
        if m := _CANCEL.match(text):
            return GoalSet([CancelTask(m.group(1))])
        words = [w for w in tokenize(text) if w not in _POLITE]
        if not words:
            raise ParseError(f"nothing to do in {text!r}")
        goals: list[Goal] = []
        for clause in self._clauses(words):
            goals.extend(self._clause(clause))
        return GoalSet(goals)

    # -- clauses -------------------------------------------------------------------------
    def _clauses(self, words: list[str]) -> list[Clause]:
        robot, words = self._addressee(words)
        parts: list[list[str]] = [[]]
        for i, w in enumerate(words):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if w == ";" or (w in ("then",) and parts[-1]) or (w == "and" and nxt in _VERBS | {"then"}):
                parts.append([])
                continue
            if w == "," and nxt in _VERBS | {"then"}:
                parts.append([])
                continue
            parts[-1].append(w)
        return [Clause(robot, [w for w in p if w != "then"]) for p in parts if p]

    def _addressee(self, words: list[str]) -> tuple[str | None, list[str]]:
        """``R, do ...`` / ``R: do ...`` / ``R do ...`` -> (R, the rest)."""
        if "," in words:
            head = words[: words.index(",")]
            ent = self._lookup(self._strip_det(head), "robot")
            if ent is not None:
                return ent.name, words[words.index(",") + 1:]
        for n in range(min(3, len(words) - 1), 0, -1):
            if words[n] in _VERBS and (ent := self._lookup(self._strip_det(words[:n]), "robot")):
                return ent.name, words[n:]
        return None, words

    def _clause(self, clause: Clause) -> list[Goal]:
        words, robot = clause.words, clause.robot
        verb = words[0]
        rest = words[1:]
        if verb == "send":
            return self._send(rest)
        if verb in _GO and rest[:1] == ["to"]:
            if robot is None:
                raise ParseError(f"who should go to {' '.join(rest[1:])!r}? name a robot, "
                                 "e.g. 'g1, go to the desk'", "no_robot")
            return [GoTo(robot, self._place(rest[1:]))]
        if verb in _HAND:
            return self._hand(rest)
        if verb in _PICK and "to" not in rest:
            if rest[:1] == ["up"]:
                rest = rest[1:]
            if rest[-1:] == ["up"]:
                rest = rest[:-1]
            return [PickUp(self._np(rest), robot)]
        if verb in _DELIVER | _PUT:
            return self._deliver(rest, robot, verb in _PUT)
        raise ParseError(f"I do not understand {' '.join(words)!r}: expected bring/deliver/take, "
                         "put/place, go to, pick up, hand, or cancel task", "unparseable")

    def _send(self, rest: list[str]) -> list[Goal]:
        if "to" not in rest:
            raise ParseError("'send' needs 'send R to PLACE'", "unparseable")
        i = rest.index("to")
        ent = self._lookup(self._strip_det(rest[:i]), "robot")
        if ent is None:
            raise ParseError(f"unknown robot {' '.join(rest[:i])!r}", "unknown_robot")
        return [GoTo(ent.name, self._place(rest[i + 1:]))]

    def _hand(self, rest: list[str]) -> list[Goal]:
        if "to" in rest:
            i = len(rest) - 1 - rest[::-1].index("to")
            robot_words, obj_words = rest[i + 1:], rest[:i]
        else:  # "give g1 the apple"
            robot_words, obj_words = rest[:1], rest[1:]
        ent = self._lookup(self._strip_det(robot_words), "robot")
        if ent is None:
            raise ParseError(f"unknown robot {' '.join(robot_words)!r} to hand to", "unknown_robot")
        return [HandTo(ref, ent.name) for ref in self._np_list(obj_words)]

    def _deliver(self, rest: list[str], robot: str | None, put: bool) -> list[Goal]:
        split = self._dest_split(rest)
        if split is None:
            verb = "put X in/on Z" if put else "bring X to Z"
            raise ParseError(f"where to? expected '{verb}' in {' '.join(rest)!r}", "no_destination")
        i = split
        dest = self._destination(rest[i + 1:])
        refs = self._np_list(rest[:i])
        return [Deliver(refs, dest, robot)]

    def _dest_split(self, rest: list[str]) -> int | None:
        """Index of the preposition before the destination: the last one whose tail names a place,
        container or robot (so "the fruit on the table to the desk" splits before "desk")."""
        for i in range(len(rest) - 1, -1, -1):
            if rest[i] in _DEST_PREPS and self._lookup(self._strip_det(rest[i + 1:]),
                                                       "place", "object", "robot"):
                return i
        for i in range(len(rest) - 1, -1, -1):
            if rest[i] in _DEST_PREPS:
                return i
        return None

    # -- noun phrases --------------------------------------------------------------------
    def _np_list(self, words: list[str]) -> list[ObjectRef]:
        groups: list[list[str]] = [[]]
        for w in words:
            if w in ("and", ","):
                groups.append([])
            else:
                groups[-1].append(w)
        groups = [g for g in groups if g]
        if not groups:
            raise ParseError("which object? none named", "no_object")
        return [self._np(g) for g in groups]

    def _np(self, words: list[str]) -> ObjectRef:
        if not words:
            raise ParseError("which object? none named", "no_object")
        words = self._strip_det(words)
        count = 1
        if words[:1] and words[0] in ("all", "every", "each"):
            return self._all(words[1:])
        if words[:1] and (words[0].isdigit() or words[0] in _NUMBERS):
            count = int(words[0]) if words[0].isdigit() else _NUMBERS[words[0]]
            words = self._strip_det(words[1:])
        for i, w in enumerate(words):
            if w in _NEAREST:
                tail = words[i + 1:]
                tail = tail[1:] if tail[:1] == ["to"] else tail
                return ObjectRef(kind=self._kind(words[:i]), nearest_to=self._thing(tail), count=count)
            if w in _QUALIFIERS and i:
                return self._qualified(words[:i], words[i + 1:], count)
        ent = self._head(words, "object", "kind")
        if ent.type == "object" and count == 1:
            return ObjectRef(name=ent.name)
        kind = ent.name if ent.type == "kind" else self._kind(words)
        return ObjectRef(kind=kind, count=count)

    def _qualified(self, head: list[str], where: list[str], count: int) -> ObjectRef:
        """``the apple on the table`` names the apple; ``a fruit from the table`` the nearest."""
        ent = self._head(head, "object", "kind")
        if ent.type == "object" and count == 1:
            return ObjectRef(name=ent.name)
        kind = ent.name if ent.type == "kind" else self._kind(head)
        return ObjectRef(kind=kind, nearest_to=self._thing(where), count=count)

    def _all(self, words: list[str]) -> ObjectRef:
        words = self._strip_det(words)
        for i, w in enumerate(words):
            if w in ("on", "at", "in", "from", "inside") and i:
                return ObjectRef(kind=self._kind(words[:i]), all_at=self._thing(words[i + 1:]), count=0)
        raise ParseError(f"'all {' '.join(words)}' needs a place: 'all K on/at PLACE'", "no_place")

    def _kind(self, words: list[str]) -> str:
        words = self._strip_det(words)
        ent = self._head(words, "kind")
        return ent.name

    def _thing(self, words: list[str]) -> str:
        return self._head(self._strip_det(words), "object", "place", "robot").name

    def _place(self, words: list[str]) -> str:
        return self._head(self._strip_det(words), "place", "object").name

    def _destination(self, words: list[str]) -> str:
        return self._head(self._strip_det(words), "place", "object", "robot").name

    def _head(self, words: list[str], *types: EntityType) -> Entity:
        """The entity named by the longest known suffix of ``words`` (earlier words modify it)."""
        words = [self.vocab.singular(w) for w in words if w not in ("of",)]
        if not words:
            raise ParseError(f"expected a {'/'.join(types)} name", "no_object")
        for start in range(len(words)):
            ents = [e for e in self.vocab.lookup(tuple(words[start:])) if e.type in types]
            if ents:
                return self._unique(ents, words[start:])
        what = types[0]
        raise ParseError(f"unknown {what} {' '.join(words)!r}{self._hint(types)}", _unknown_code(types))

    def _hint(self, types: tuple[EntityType, ...]) -> str:
        names = sorted({e.name for ents in self.vocab.phrases.values() for e in ents if e.type in types})
        shown = ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
        return f"; known: {shown}" if names else ""

    def _unique(self, ents: list[Entity], words: list[str]) -> Entity:
        best = [e for e in ents if e.type == ents[0].type]
        if len(best) > 1:
            names = " or ".join(sorted(e.name for e in best))
            raise ParseError(f"{' '.join(words)!r} is ambiguous: {names}", "ambiguous")
        return best[0]

    def _lookup(self, words: list[str], *types: EntityType) -> Entity | None:
        words = [self.vocab.singular(w) for w in words]
        ents = [e for e in self.vocab.lookup(tuple(words)) if e.type in types]
        return ents[0] if ents else None

    @staticmethod
    def _strip_det(words: list[str]) -> list[str]:
        i = 0
        while i < len(words) and words[i] in _DETERMINERS:
            i += 1
        return words[i:]


def _unknown_code(types: tuple[str, ...]) -> str:
    return "unknown_object" if "object" in types or "kind" in types else f"unknown_{types[0]}"
