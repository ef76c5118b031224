"""The English grammar remembers its readings per scene vocabulary (issue 16, item 2): a text
read again gives an equal reading that is the caller's own, and refusals are not kept."""

from __future__ import annotations

import pytest

from bench import scenes
from robobus.brain_agent import parser
from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import Deliver
from robobus.brain_agent.planners.symbolic import SymbolicPlanner

TEXT = "Bring the fruit nearest the cup and a fruit knife to the office desk"


def test_a_reading_is_remembered_and_each_caller_gets_its_own() -> None:
    grammar = SymbolicPlanner().parser_for(scenes.demo())
    first = grammar.parse(TEXT)
    assert TEXT in grammar._read
    again = grammar.parse(TEXT)
    assert again == first and again is not first
    deliver = first.goals[0]
    assert isinstance(deliver, Deliver)
    deliver.objects.clear()  # a caller changing its reading changes nobody else's
    assert grammar.parse(TEXT) == again
    with pytest.raises(ParseError, match="unknown object 'pear'"):
        grammar.parse("bring the pear to the office desk")
    assert "bring the pear to the office desk" not in grammar._read


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser, "READINGS_CACHED", 2)
    grammar = SymbolicPlanner().parser_for(scenes.demo())
    texts = [f"bring the {obj} to the office desk" for obj in ("apple", "banana", "cup")]
    for text in texts:
        grammar.parse(text)
    assert list(grammar._read) == texts[1:]  # the oldest went first
