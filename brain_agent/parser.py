"""A deterministic English grammar for instructions, over the scene's vocabulary.

Sentences (clauses may be joined by "and", "and then", "then", ",", ";" or a sentence end;
"R, ..." names a robot; "please/could you/kindly" at a clause's start and a trailing "please"
are politeness, nowhere else):

* ``bring|deliver|take|carry|fetch|move|get X (and Y) (over) to Z`` and ``... A to Z and B to C``
* ``put|place|drop|set|leave X in|into|on|onto|at Z`` (Z may be a container's kind: "the tray")
* ``go|navigate|drive|walk|move to Y`` (with a robot: ``R, go to Y`` / ``send R to Y``)
* ``pick up|grab|grasp|take X``
* ``hand|give|pass X to R``
* ``cancel|stop|abort task T``

Noun phrases: ``apple``; ``a fruit knife`` (kind ``knife``, "fruit" a modifier); ``two apples``;
``the fruit nearest (to) the cup``; ``all fruit on the kitchen table``; ``it``/``them`` (the
objects named last: "grab the tape and put it on the bench" is one delivery); exclusions
``the fruit, but not the banana`` / ``all fruit except the banana``.

Refusals name what was not understood, each with a code: ``unknown_relation`` ("next to"),
``negation``, ``extra_destination``, ``no_destination``, ``unresolved_pronoun``,
``bad_exclusion``, ``unknown_object``/``unknown_place``/``unknown_robot``, ``ambiguous``,
``no_robot``, ``unparseable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from robobus.brain_agent import parser_lex as lex
from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import CancelTask, Deliver, Goal, GoalSet, GoTo, HandTo, ObjectRef, PickUp
from robobus.brain_agent.requester import REQUESTER, requester_objects
from robobus.brain_agent.vocab import Entity, EntityType, Vocabulary

_CJK = re.compile(r"[\u3400-\u9fff]")
_CANCEL = re.compile(r"^\s*(?:(?:please|kindly|could you|would you|can you)\s+)*(?:cancel|stop|abort)"
                     r"\s+(?:the\s+)?task\s+#?(\S+?)[.!]?(?:\s*,?\s*please)?\s*$", re.IGNORECASE)
_PLURAL: dict[EntityType, str] = {"object": "objects", "kind": "kinds", "place": "places",
                                  "robot": "robots"}


@dataclass(slots=True)
class Clause:
    robot: str | None
    words: list[str]


#: readings remembered per parser (one parser per scene vocabulary)
READINGS_CACHED = 1024
_goals_enc = msgspec.msgpack.Encoder()
_goals_dec = msgspec.msgpack.Decoder(GoalSet)


class SymbolicParser:
    """Parse English instructions into a :class:`GoalSet` using one scene vocabulary."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        # text -> its reading, encoded: a reading depends only on the text and the vocabulary,
        # and an instruction given again (a routine order) was read again at about a third of
        # the brain's CPU per instruction (issue 16, item 2). Kept encoded so that each caller
        # gets its own GoalSet (they are mutable); refusals are not kept.
        self._read: dict[str, bytes] = {}

    def parse(self, text: str) -> GoalSet:
        """Parse ``text``; raise :class:`ParseError` saying what was not understood."""
        hit = self._read.get(text)
        if hit is not None:
            return _goals_dec.decode(hit)
        goals = self._parse(text)
        if len(self._read) >= READINGS_CACHED:
            del self._read[next(iter(self._read))]  # the oldest
        self._read[text] = _goals_enc.encode(goals)
        return goals

    def _parse(self, text: str) -> GoalSet:
        if _CJK.search(text):
            raise ParseError("the symbolic parser understands English only; use --planner llm "
                             "for other languages", "unsupported_language")
        if m := _CANCEL.match(text):
            return GoalSet([CancelTask(m.group(1))])
        return _Reading(self.vocab).read(text)


@dataclass(slots=True)
class _Reading:
    """One parse: the vocabulary plus what the sentence named so far (for pronouns)."""

    vocab: Vocabulary
    last: list[ObjectRef] = field(default_factory=list)

    def read(self, text: str) -> GoalSet:
        clauses = self._clauses(lex.words_of(text))
        if not clauses:
            raise ParseError(f"nothing to do in {text!r}", "unparseable")
        goals: list[Goal] = []
        for clause in clauses:
            goals.extend(self._clause(clause))
        return GoalSet(_merge_pronoun_picks(goals))

    # -- clauses -------------------------------------------------------------------------
    def _clauses(self, words: list[str]) -> list[Clause]:
        robot, words = self._addressee(lex.strip_polite(words))
        parts: list[list[str]] = [[]]
        for i, w in enumerate(words):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if w == ";" or (w == "then" and parts[-1]) \
                    or (w in ("and", ",") and nxt in lex.VERBS | lex.CLAUSE_STARTERS):
                parts.append([])
                continue
            parts[-1].append(w)
        clauses = [lex.strip_polite([w for w in p if w != "then"]) for p in parts]
        return [Clause(robot, c) for c in clauses if c]

    def _addressee(self, words: list[str]) -> tuple[str | None, list[str]]:
        """``R, do ...`` / ``R: do ...`` / ``R do ...`` -> (R, the rest)."""
        if "," in words:
            head = words[: words.index(",")]
            ent = self._lookup(_strip_det(head), "robot")
            if ent is not None:
                return ent.name, lex.strip_polite(words[words.index(",") + 1:])
        for n in range(min(3, len(words) - 1), 0, -1):
            if words[n] in lex.VERBS and (ent := self._lookup(_strip_det(words[:n]), "robot")):
                return ent.name, words[n:]
        return None, words

    def _clause(self, clause: Clause) -> list[Goal]:
        words, robot = clause.words, clause.robot
        self._refuse_negation(words)
        self._refuse_relation(words)
        words, excluded = self._exclusions(words)
        goals = self._verb(words, robot)
        return _apply_exclusion(goals, excluded) if excluded else goals

    def _verb(self, words: list[str], robot: str | None) -> list[Goal]:
        verb, rest = words[0], words[1:]
        if verb == "send":
            return self._send(rest)
        if verb in lex.GO and rest[:1] == ["to"]:
            if robot is None:
                raise ParseError(f"who should go to {' '.join(rest[1:])!r}? name a robot, "
                                 "e.g. 'g1, go to the desk'", "no_robot")
            return [GoTo(robot, self._place(rest[1:]))]
        if verb in lex.HAND:
            return self._hand(rest)
        if verb in lex.PICK and "to" not in rest:
            rest = rest[1:] if rest[:1] == ["up"] else rest
            rest = rest[:-1] if rest[-1:] == ["up"] else rest
            return [PickUp(ref, robot) for ref in self._refs([rest])]
        if verb in lex.DELIVER | lex.PUT:
            return self._deliver(rest, robot, verb in lex.PUT and verb not in lex.DELIVER)
        raise ParseError(f"I do not understand {' '.join(words)!r}: expected bring/deliver/take, "
                         "put/place, go to, pick up, hand, or cancel task", "unparseable")

    def _refuse_negation(self, words: list[str]) -> None:
        if lex.find_phrase(words[:2], lex.NEGATIONS) is not None:
            said = " ".join(words).replace("don t ", "don't ")
            raise ParseError(f"{said!r} says what not to do; say what to do instead", "negation")

    def _refuse_relation(self, words: list[str]) -> None:
        found = lex.find_phrase(words, lex.RELATIONS)
        if found is not None and words[found[0]] not in self.vocab.words:
            rel = " ".join(words[found[0]:found[0] + found[1]])
            raise ParseError(f"unknown relation {rel!r}: I understand 'nearest/closest (to) X', "
                             "'on/at/in/from X' and 'all K on X'", "unknown_relation")

    def _exclusions(self, words: list[str]) -> tuple[list[str], list[str]]:
        """Take "but not X" / "except X" out of the clause: (the rest, X's object names)."""
        found = lex.find_phrase(words, lex.EXCLUSIONS)
        if found is None:
            return words, []
        i, n = found
        end = len(words)
        for j in range(i + n, len(words)):
            if words[j] in lex.DEST_PREPS and self._lookup(_strip_det(words[j + 1:]), "place",
                                                           "object", "robot", "kind"):
                end = j
                break
        names = []
        for ref in self._np_list([w for w in words[i + n:end] if w != ","]):
            if ref.name is None:
                raise ParseError(f"'{' '.join(words[i:end])}' must name objects to leave out, "
                                 "not a kind", "bad_exclusion")
            names.append(ref.name)
        head = words[:i]
        while head and head[-1] == ",":
            head.pop()
        return head + words[end:], names

    def _send(self, rest: list[str]) -> list[Goal]:
        if "to" not in rest:
            raise ParseError("'send' needs 'send R to PLACE'", "unparseable")
        i = rest.index("to")
        ent = self._lookup(_strip_det(rest[:i]), "robot")
        if ent is None:
            raise ParseError(f"unknown robot {' '.join(rest[:i])!r}{self._hint(('robot',))}",
                             "unknown_robot")
        return [GoTo(ent.name, self._place(rest[i + 1:]))]

    def _hand(self, rest: list[str]) -> list[Goal]:
        if "to" in rest:
            i = len(rest) - 1 - rest[::-1].index("to")
            robot_words, obj_words = rest[i + 1:], rest[:i]
        else:  # "give g1 the apple"
            robot_words, obj_words = rest[:1], rest[1:]
        if robot_words == ["me"]:  # "give me the apple": the requester (issue 15)
            return [Deliver(self._np_list(obj_words), REQUESTER)]
        ent = self._lookup(_strip_det(robot_words), "robot")
        if ent is None:
            raise ParseError(f"unknown robot {' '.join(robot_words)!r} to hand to"
                             f"{self._hint(('robot',))}", "unknown_robot")
        return [HandTo(ref, ent.name) for ref in self._np_list(obj_words)]

    def _deliver(self, rest: list[str], robot: str | None, put: bool) -> list[Goal]:
        """One delivery per destination: "A and B to Z", "A to Z and B to C"."""
        if (mine := requester_objects(rest)) is not None:  # "get me X", "X here" (issue 15)
            return [Deliver(self._np_list(mine), REQUESTER, robot)]
        chunks = _split_groups(rest, ("and", ","))
        goals: list[Goal] = []
        pending: list[list[str]] = []
        for k, chunk in enumerate(chunks):
            final = k == len(chunks) - 1
            split = self._dest_split(chunk, final, put)
            if split is None:
                pending.append(chunk)
                continue
            dest = self._destination(chunk[split + 1:])
            groups = pending + ([chunk[:split]] if chunk[:split] else [])
            if not groups:
                raise ParseError(f"extra destination {dest!r}: nothing is left to bring there "
                                 "(say 'bring A to X and B to Y')", "extra_destination")
            goals.append(Deliver(self._refs(groups), dest, robot))
            pending = []
        if pending:
            self._no_destination(pending, bool(goals), put, rest)
        return goals

    def _no_destination(self, pending: list[list[str]], delivered: bool, put: bool,
                        rest: list[str]) -> None:
        tail = _strip_det(pending[-1])
        ent = self._lookup(tail, "place")
        if delivered and ent is not None:
            raise ParseError(f"extra destination {ent.name!r}: one delivery has one destination "
                             "(say 'bring A to X and B to Y')", "extra_destination")
        verb = "put X in/on Z" if put else "bring X to Z"
        what = " ".join(w for g in pending for w in g)
        raise ParseError(f"where to? no destination for {what!r} (expected '{verb}')",
                         "no_destination")

    def _dest_split(self, chunk: list[str], final: bool, put: bool) -> int | None:
        """Index of the preposition before the destination: the last one whose tail names a place,
        container or robot (so "the fruit on the table to the desk" splits before "desk"). A
        group before "and" ends only at a destination preposition of the verb ("to" for bring)."""
        preps = lex.DEST_PREPS if final or put else lex.BRING_PREPS
        cands = [i for i in range(len(chunk) - 1, -1, -1) if chunk[i] in preps
                 and not (chunk[i] == "to" and i and chunk[i - 1] in lex.NEAREST)]
        for i in cands:
            if self._lookup(_strip_det(chunk[i + 1:]), "place", "object", "robot", "kind"):
                return i
        return cands[0] if cands and final else None

    # -- noun phrases --------------------------------------------------------------------
    def _refs(self, groups: list[list[str]]) -> list[ObjectRef]:
        refs = [ref for g in groups for ref in self._np_list(g)]
        self.last = refs
        return refs

    def _np_list(self, words: list[str]) -> list[ObjectRef]:
        groups = _split_groups(words, ("and", ","))
        if not groups:
            raise ParseError("which object? none named", "no_object")
        refs: list[ObjectRef] = []
        for g in groups:
            refs.extend(self._pronoun(g) if _is_pronoun(g) else [self._np(g)])
        return refs

    def _pronoun(self, words: list[str]) -> list[ObjectRef]:
        if not self.last:
            raise ParseError(f"{words[0]!r} refers to nothing named before it", "unresolved_pronoun")
        return list(self.last) if lex.PRONOUNS[words[0]] == "all" else [self.last[-1]]

    def _np(self, words: list[str]) -> ObjectRef:
        if _is_pronoun(words):
            return self._pronoun(words)[0]
        ref = self._np_plain(_strip_det(words))
        self.last = [ref]
        return ref

    def _np_plain(self, words: list[str]) -> ObjectRef:
        if not words:
            raise ParseError("which object? none named", "no_object")
        count = 1
        if words[0] in ("all", "every", "each"):
            return self._all(words[1:])
        if words[0].isdigit() or words[0] in lex.NUMBERS:
            count = int(words[0]) if words[0].isdigit() else lex.NUMBERS[words[0]]
            words = _strip_det(words[1:])
        for i, w in enumerate(words):
            if w in lex.NEAREST:
                tail = words[i + 1:]
                tail = tail[1:] if tail[:1] == ["to"] else tail
                return ObjectRef(kind=self._kind(words[:i]), nearest_to=self._thing(tail), count=count)
            if w in lex.QUALIFIERS and i:
                return self._qualified(words[:i], words[i + 1:], count)
        return self._named(words, count)

    def _named(self, words: list[str], count: int) -> ObjectRef:
        ent = self._head(words, "object", "kind")
        if ent.type == "object" and count == 1:
            return ObjectRef(name=ent.name)
        kind = ent.name if ent.type == "kind" else self._kind(words)
        return ObjectRef(kind=kind, count=count)

    def _qualified(self, head: list[str], where: list[str], count: int) -> ObjectRef:
        """``the apple on the table`` names the apple; ``a fruit from the table`` the nearest."""
        ref = self._named(head, count)
        if ref.name is not None:
            return ref
        return msgspec.structs.replace(ref, nearest_to=self._thing(where))

    def _all(self, words: list[str]) -> ObjectRef:
        words = _strip_det(words)
        for i, w in enumerate(words):
            if w in ("on", "at", "in", "from", "inside") and i:
                return ObjectRef(kind=self._kind(words[:i]), all_at=self._thing(words[i + 1:]), count=0)
        raise ParseError(f"'all {' '.join(words)}' needs a place: 'all K on/at PLACE'", "no_place")

    def _kind(self, words: list[str]) -> str:
        return self._head(_strip_det(words), "kind").name

    def _thing(self, words: list[str]) -> str:
        return self._head(_strip_det(words), "object", "place", "robot").name

    def _place(self, words: list[str]) -> str:
        return self._head(_strip_det(words), "place", "object", what="place").name

    def _destination(self, words: list[str]) -> str:
        """A place, container, robot, or the kind of a container ("the tray" for med_tray)."""
        return self._head(_strip_det(words), "place", "object", "robot", "kind", what="place").name

    def _head(self, words: list[str], *types: EntityType, what: EntityType | None = None) -> Entity:
        """The entity named by the longest known suffix of ``words`` (earlier words modify it)."""
        words = [self.vocab.singular(w) for w in words if w not in ("of", ",")]
        if not words:
            raise ParseError(f"expected a {'/'.join(types)} name", "no_object")
        for start in range(len(words)):
            ents = [e for e in self.vocab.lookup(tuple(words[start:])) if e.type in types]
            if ents:
                return self._unique(ents, words[start:])
        what = what or types[0]
        shown = tuple(t for t in types if t != "robot") if what == "object" else (what,)
        raise ParseError(f"unknown {what} {' '.join(words)!r}{self._hint(shown)}",
                         "unknown_object" if what in ("object", "kind") else f"unknown_{what}")

    def _hint(self, types: tuple[EntityType, ...]) -> str:
        """"; known places: a, b" — each list holds only the type it says."""
        parts = []
        for type_ in types:
            names = sorted({e.name for ents in self.vocab.phrases.values() for e in ents
                            if e.type == type_})
            if names:
                shown = ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
                parts.append(f"known {_PLURAL[type_]}: {shown}")
        return "; " + "; ".join(parts) if parts else ""

    def _unique(self, ents: list[Entity], words: list[str]) -> Entity:
        best = [e for e in ents if e.type == ents[0].type]
        if len(best) > 1:
            names = " or ".join(sorted(e.name for e in best))
            raise ParseError(f"{' '.join(words)!r} is ambiguous: {names}", "ambiguous")
        return best[0]

    def _lookup(self, words: list[str], *types: EntityType) -> Entity | None:
        words = [self.vocab.singular(w) for w in words if w != ","]
        ents = [e for e in self.vocab.lookup(tuple(words)) if e.type in types]
        return ents[0] if ents else None


def _strip_det(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and words[i] in lex.DETERMINERS:
        i += 1
    return words[i:]


def _is_pronoun(words: list[str]) -> bool:
    return len(words) == 1 and words[0] in lex.PRONOUNS


def _split_groups(words: list[str], seps: tuple[str, ...]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for w in words:
        if w in seps:
            groups.append([])
        else:
            groups[-1].append(w)
    return [g for g in groups if g]


def _apply_exclusion(goals: list[Goal], names: list[str]) -> list[Goal]:
    """Every kind reference of the clause leaves ``names`` out; a clause of named objects only
    has nothing to leave them out of."""
    out: list[Goal] = []
    touched = False
    for goal in goals:
        if isinstance(goal, Deliver):
            refs = [_exclude(r, names) for r in goal.objects]
            touched |= refs != goal.objects
            out.append(msgspec.structs.replace(goal, objects=refs))
        elif isinstance(goal, (PickUp, HandTo)):
            ref = _exclude(goal.object, names)
            touched |= ref != goal.object
            out.append(msgspec.structs.replace(goal, object=ref))
        else:
            out.append(goal)
    if not touched:
        raise ParseError(f"nothing to leave {', '.join(names)} out of: name a kind "
                         "('the fruit, but not the banana')", "bad_exclusion")
    return out


def _exclude(ref: ObjectRef, names: list[str]) -> ObjectRef:
    if ref.kind is None:
        return ref
    return msgspec.structs.replace(ref, exclude=sorted({*ref.exclude, *names}))


def _merge_pronoun_picks(goals: list[Goal]) -> list[Goal]:
    """"grab X and put it on Y" is one delivery: a pick-up whose very object a later goal
    moves (through a pronoun) is dropped, its robot passed on."""
    out: list[Goal] = []
    for i, goal in enumerate(goals):
        if isinstance(goal, PickUp):
            later = next((g for g in goals[i + 1:] if _moves(g, goal.object)), None)
            if later is not None:
                if goal.robot and isinstance(later, Deliver) and later.robot is None:
                    later.robot = goal.robot
                continue
        out.append(goal)
    return out


def _moves(goal: Goal, ref: ObjectRef) -> bool:
    if isinstance(goal, Deliver):
        return any(r is ref for r in goal.objects)
    return isinstance(goal, HandTo) and goal.object is ref
