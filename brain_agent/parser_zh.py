"""A deterministic Chinese grammar for instructions, over the scene's vocabulary (issue 15).

The same forms as the English grammar (``parser.py``), into the same :class:`GoalSet`:

* ``把X拿到/送到/放进/放到Y`` (also ``X放到Y``, ``拿X到Y``, ``拿起X放到Y``): deliver X to Y;
* ``把X交给/递给R`` / ``递给R X``: hand X to robot R; ``给我``/``拿来``/``拿过来``: to the requester;
* ``递送/送X`` with no place: deliver X to the requester; ``递送X到Y``: to Y;
* ``R去Y`` / ``让R去Y`` / ``R，去Y`` (R may be a Latin name: ``realman_1，去餐桌``); ``R过来``;
* ``R拿起X`` / ``拿X``: pick X up (``帮我拿X``, ``给我拿X``: deliver X to the requester);
* ``取消任务T``: cancel task T.

Clauses are joined by 然后/并/再/接着/，/；; a robot named alone or at a clause's start does the
clauses after it. Noun phrases: ``苹果``; ``一把水果刀``/``两个苹果`` (counts with classifiers);
``离杯子最近的水果``, ``最靠近杯子的水果``, ``杯子旁边的水果``; ``Y上所有的X``, ``Y上的所有X``;
``Y上的X``; ``X和Y``. "我"/"这里" is the requester (:mod:`robobus.brain_agent.requester`).
Tokens come from :mod:`robobus.brain_agent.segment_zh`; reasons are English, quoting the text.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import (
    CancelTask,
    Deliver,
    Goal,
    GoalSet,
    GoTo,
    HandTo,
    ObjectRef,
    PickUp,
)
from robobus.brain_agent.requester import REQUESTER
from robobus.brain_agent.segment_zh import Token, segment
from robobus.brain_agent.vocab import Entity, EntityType, Vocabulary

_TOWARDS = {"put", "to", "go", "give", "bring"}
_VERBS = _TOWARDS | {"pick", "deliver", "come", "want"}
_TRAILING = {"on", "beside", "de", "come", "go", "polite"}
_FORMS = ("expected 把X放到Y, 把X交给R, 递送X, 拿起X, R去Y or 取消任务T")


@functools.cache
def load_lexicon() -> dict[str, tuple[str, ...]]:
    """The shipped Chinese lexicon (``lexicon_zh.yaml``): English word or phrase -> words."""
    text = resources.files("robobus.brain_agent").joinpath("lexicon_zh.yaml").read_text("utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster, once a process
    data: dict[str, Any] = yaml.load(text, Loader=loader) or {}
    return {str(k): tuple(str(w) for w in v) for k, v in data.items()}


def _text(tokens: list[Token]) -> str:
    return "".join(t.text for t in tokens)


def _role(tokens: list[Token], i: int) -> str:
    return tokens[i].role if 0 <= i < len(tokens) else ""


class ChineseParser:
    """Parse Chinese (and mixed Chinese/Latin-name) instructions into a :class:`GoalSet`."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def parse(self, text: str) -> GoalSet:
        """Parse ``text``; raise :class:`ParseError` saying what was not understood."""
        return _Reading(self.vocab).read(text)


class _Reading:
    """One sentence being read: the goals so far and the objects named last (它, 放到Y)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.goals: list[Goal] = []
        self.last: list[ObjectRef] = []

    def read(self, text: str) -> GoalSet:
        robot: str | None = None
        for clause in self._clauses(segment(text, self.vocab)):
            who, body = self._addressee(clause)
            robot = who or robot
            if body:
                self.goals.extend(self._clause(body, robot))
        if not self.goals:
            raise ParseError(f"nothing to do in {text!r}: {_FORMS}", "unparseable")
        return GoalSet(self.goals, "zh")

    # -- clauses -----------------------------------------------------------------------------
    @staticmethod
    def _clauses(tokens: list[Token]) -> list[list[Token]]:
        parts: list[list[Token]] = [[]]
        for tok in tokens:
            if tok.role == "sep":
                parts.append([])
            elif tok.role != "polite":
                parts[-1].append(tok)
        return [p for p in parts if p]

    def _addressee(self, clause: list[Token]) -> tuple[str | None, list[Token]]:
        """``R…`` / ``让R…`` -> (R, the rest), when R starts the clause and a verb follows."""
        start = 1 if clause[0].role == "let" else 0
        if start >= len(clause) or not self._is_robot(clause[start]):
            if start:
                raise ParseError(f"who is {clause[0].text!r}-ed? {_text(clause[1:])!r} is not a "
                                 "robot", "unknown_robot")
            return None, clause
        rest = clause[start + 1:]
        if rest and rest[0].role not in _VERBS | {"ba", "cancel", "forme"}:
            return None, clause
        return clause[start].ents[0].name, rest

    @staticmethod
    def _is_robot(tok: Token) -> bool:
        return tok.kind == "ent" and any(e.type == "robot" for e in tok.ents[:1])

    def _clause(self, body: list[Token], robot: str | None) -> list[Goal]:
        forme = any(t.role == "forme" for t in body)
        body = [t for t in body if t.role != "forme"]
        if not body:
            raise ParseError("nothing to do: a clause names no action", "unparseable")
        role = body[0].role
        if role == "cancel":
            return [self._cancel(body[1:])]
        if role == "ba":
            return self._ba(body[1:], robot, forme)
        if role in ("go", "to", "come"):
            return self._goto(body, robot)
        if role == "want":
            return [Deliver(self._np_list(body[1:]), REQUESTER, robot)]
        if role == "give":
            return self._give_first(body[1:], robot)
        if role == "bring":
            return [Deliver(self._np_list(body[1:]), REQUESTER, robot)]
        if role == "put" and self.last:  # "拿起苹果，放进篮子": the object named last
            return self._towards([], body, robot, forme)
        if role in ("pick", "deliver", "put"):
            return self._verb_first(body, robot, forme)
        k = next((i for i, t in enumerate(body) if t.role in _TOWARDS), None)
        if k:  # "苹果放到篮子里": the object first, without 把
            return self._towards(body[:k], body[k:], robot, forme)
        if forme and not any(t.role in _VERBS for t in body):  # "给我一个苹果"
            return [Deliver(self._np_list(body), REQUESTER, robot)]
        raise ParseError(f"I do not understand {_text(body)!r}: {_FORMS}", "unparseable")

    def _cancel(self, rest: list[Token]) -> CancelTask:
        ident = "".join(t.text for t in rest if t.role not in ("task", "de")).lstrip("#")
        if not ident:
            raise ParseError("which task? expected 取消任务T", "no_task")
        return CancelTask(ident)

    def _goto(self, body: list[Token], robot: str | None) -> list[Goal]:
        rest, then = self._cut(body[1:])
        dest = REQUESTER if body[0].role == "come" and not rest else self._place(rest)
        if robot is None:
            raise ParseError(f"who should go to {_text(rest) or '我这里'!r}? name a robot, e.g. "
                             "'g1去餐桌' or 'realman_1，去餐桌'", "no_robot")
        return [GoTo(robot, dest), *(self._clause(then, robot) if then else [])]

    @staticmethod
    def _cut(rest: list[Token]) -> tuple[list[Token], list[Token]]:
        """``餐桌拿苹果`` -> (餐桌, 拿苹果): a verb after a place starts the next clause."""
        k = next((i for i, t in enumerate(rest) if i and t.role in _VERBS | {"ba"}), None)
        return (rest, []) if k is None else (rest[:k], rest[k:])

    def _ba(self, rest: list[Token], robot: str | None, forme: bool) -> list[Goal]:
        k = next((i for i, t in enumerate(rest) if t.role in _VERBS - {"want", "come"}), None)
        if k is None:
            raise ParseError(f"what should be done with {_text(rest)!r}? expected 把X放到Y, "
                             "把X交给R or 把X拿过来", "unparseable")
        return self._towards(rest[:k], rest[k:], robot, forme)

    def _verb_first(self, body: list[Token], robot: str | None, forme: bool) -> list[Goal]:
        k = next((i for i, t in enumerate(body) if i and t.role in _TOWARDS), None)
        if k is not None:
            return self._towards(body[1:k], body[k:], robot, forme)
        refs = self._np_list(body[1:])
        if body[0].role == "deliver" or forme:
            return [Deliver(refs, REQUESTER, robot)]
        if body[0].role == "put":
            raise ParseError(f"where to? expected 把X放到Y in {_text(body)!r}", "no_destination")
        return [PickUp(ref, robot) for ref in refs]

    def _towards(self, obj: list[Token], tail: list[Token], robot: str | None,
                 forme: bool) -> list[Goal]:
        """Objects ``obj`` and a verb phrase ``tail`` (``放到Y``, ``交给R``, ``拿过来``...)."""
        verb, rest = tail[0], tail[1:]
        if verb.role in ("pick", "deliver") and rest and rest[0].role in _TOWARDS:
            verb, rest = rest[0], rest[1:]
        rest, then = self._cut(rest)
        refs = self._np_list(obj) if obj else self._elided()
        goals = self._verb(verb, refs, rest, tail, robot, forme)
        return goals + (self._clause(then, robot) if then else [])

    def _elided(self) -> list[ObjectRef]:
        """The objects of the clause before, which a bare "放进篮子" moves: its pick-ups go."""
        while self.goals and isinstance(self.goals[-1], PickUp) and self.goals[-1].object in self.last:
            self.goals.pop()
        return list(self.last)

    def _verb(self, verb: Token, refs: list[ObjectRef], rest: list[Token], tail: list[Token],
              robot: str | None, forme: bool) -> list[Goal]:
        if verb.role == "give":
            return self._give(refs, rest, robot)
        if verb.role in ("put", "to", "go"):
            if not [t for t in rest if t.role not in _TRAILING]:
                raise ParseError(f"where to? {_text(tail)!r} names no place", "no_destination")
            return [Deliver(refs, self._destination(rest), robot)]
        if verb.role == "bring" or verb.role == "deliver" or forme:
            dest = self._destination(rest) if rest else REQUESTER
            return [Deliver(refs, dest, robot)]
        if verb.role == "pick" and not [t for t in rest if t.role not in _TRAILING]:
            return [PickUp(ref, robot) for ref in refs]
        raise ParseError(f"I do not understand {_text(tail)!r}: {_FORMS}", "unparseable")

    def _give_first(self, rest: list[Token], robot: str | None) -> list[Goal]:
        """``递给R X`` / ``给我X``."""
        if not rest:
            raise ParseError("give what to whom? expected 把X交给R", "unparseable")
        refs = self._elided() if len(rest) == 1 and self.last else self._np_list(rest[1:])
        return self._give(refs, rest[:1], robot)

    def _give(self, refs: list[ObjectRef], who: list[Token], robot: str | None) -> list[Goal]:
        who = [t for t in who if t.role not in _TRAILING]
        if who and all(t.role == "me" for t in who):
            return [Deliver(refs, REQUESTER, robot)]
        ent = self._head(who, "robot", "place", "object")
        if ent.type != "robot":
            return [Deliver(refs, ent.name, robot)]
        return [HandTo(ref, ent.name) for ref in refs]

    # -- noun phrases ------------------------------------------------------------------------
    def _np_list(self, tokens: list[Token]) -> list[ObjectRef]:
        groups: list[list[Token]] = [[]]
        for tok in tokens:
            if tok.role == "and":
                groups.append([])
            elif tok.role != "de" or groups[-1]:
                groups[-1].append(tok)
        groups = [g for g in groups if g]
        if not groups:
            raise ParseError("which object? none named", "no_object")
        if len(groups) == 1 and [t.role for t in groups[0]] == ["it"]:
            if not self.last:
                raise ParseError(f"{groups[0][0].text!r} names nothing said before", "unresolved_pronoun")
            return self._elided()
        self.last = [self._np(g) for g in groups]
        return list(self.last)

    def _np(self, tokens: list[Token]) -> ObjectRef:
        every = any(t.role == "all" for t in tokens)
        count = next((t.count for t in tokens if t.kind == "num"), 1)
        tokens = [t for t in tokens if t.role != "all" and t.kind != "num"]
        roles = [t.role for t in tokens]
        if "near" in roles and "nearest" in roles[roles.index("near"):]:
            i = roles.index("near")
            j = roles.index("nearest", i)
            return ObjectRef(kind=self._kind(tokens[j + 1:]), nearest_to=self._thing(tokens[i + 1:j]),
                             count=count)
        for role in ("nearto", "beside"):
            if role in roles:
                i = roles.index(role)
                ref, head = (tokens[i + 1:], []) if role == "nearto" else (tokens[:i], tokens[i + 1:])
                if role == "nearto":
                    d = next((k for k, t in enumerate(ref) if t.role == "de"), len(ref))
                    ref, head = ref[:d], ref[d + 1:]
                return ObjectRef(kind=self._kind(head), nearest_to=self._thing(ref), count=count)
        split = roles.index("on") if "on" in roles else self._owner_split(tokens)
        if split is not None and split > 0:
            where, head = tokens[:split], tokens[split + 1:]
            if every:
                return ObjectRef(kind=self._kind(head), all_at=self._thing(where), count=0)
            return self._qualified(head, where, count)
        if every:
            raise ParseError(f"'所有{_text(tokens)}' needs a place: 'Y上所有的X'", "no_place")
        return self._plain(tokens, count)

    def _owner_split(self, tokens: list[Token]) -> int | None:
        """``厨房的苹果``: the index of a 的 that follows a place, object or robot."""
        for i, tok in enumerate(tokens):
            if tok.role == "de" and i and tokens[i - 1].kind == "ent" and \
                    tokens[i - 1].ents[0].type in ("place", "object", "robot"):
                return i
        return None

    def _qualified(self, head: list[Token], where: list[Token], count: int) -> ObjectRef:
        """``桌子上的苹果`` names the apple; ``桌子上的一个水果`` the fruit nearest the table."""
        ent = self._head(head, "object", "kind")
        if ent.type == "object" and count == 1:
            return ObjectRef(name=ent.name)
        return ObjectRef(kind=self._kind(head), nearest_to=self._thing(where), count=count)

    def _plain(self, tokens: list[Token], count: int) -> ObjectRef:
        ent = self._head(tokens, "object", "kind")
        if ent.type == "object" and count == 1:
            return ObjectRef(name=ent.name)
        return ObjectRef(kind=self._kind(tokens), count=count)

    def _kind(self, tokens: list[Token]) -> str:
        return self._head(tokens, "kind").name

    def _thing(self, tokens: list[Token]) -> str:
        return self._head(tokens, "object", "place", "robot").name

    def _place(self, tokens: list[Token]) -> str:
        if tokens and all(t.role in ("me", "on", "de") for t in tokens):
            return REQUESTER
        return self._head(tokens, "place", "object").name

    def _destination(self, tokens: list[Token]) -> str:
        tokens = [t for t in tokens if t.role != "to"]
        if any(t.role == "me" for t in tokens) and all(t.role in _TRAILING | {"me"} for t in tokens):
            return REQUESTER
        # a container by its kind ("放进碗里"): resolve.py finds the scene's one container of it
        return self._head(tokens, "place", "object", "robot", "kind").name

    def _head(self, tokens: list[Token], *types: EntityType) -> Entity:
        """The entity the last word names (earlier words joined by 的 modify it: 红色的苹果)."""
        while tokens and tokens[-1].role in _TRAILING:
            tokens = tokens[:-1]
        what = "/".join(types)
        if not tokens:
            raise ParseError(f"expected a {what} name", _unknown_code(types))
        last = tokens[-1]
        ents = [e for e in last.ents if e.type in types]
        # an unknown word glued to a known one is another name ("董事会议室" is no 会议室);
        # a modifier joined by 的 ("红色的苹果") is not
        if last.kind != "ent" or not ents or (len(tokens) > 1 and tokens[-2].kind in ("unk", "word")):
            raise ParseError(f"unknown {types[0]} {_text(tokens)!r}{self._hint(types)}",
                             _unknown_code(types))
        best = [e for e in ents if e.type == ents[0].type]
        if len(best) > 1:
            names = " or ".join(sorted(e.name for e in best))
            raise ParseError(f"{last.text!r} is ambiguous: {names}", "ambiguous")
        return best[0]

    def _hint(self, types: tuple[EntityType, ...]) -> str:
        names = sorted({e.name for ents in self.vocab.labels.values() for e in ents
                        if e.type in types})
        shown = ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
        return f"; known: {shown}" if names else ""


def _unknown_code(types: tuple[str, ...]) -> str:
    """``unknown_place`` for a destination or place, ``unknown_robot``, else ``unknown_object``."""
    return f"unknown_{types[0]}" if types[0] in ("place", "robot") else "unknown_object"
