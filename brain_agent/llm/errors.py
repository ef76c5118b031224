"""Errors of the language-model backends, rooted in the brain's hierarchy.

They derive from :class:`brain_agent.errors.BrainError`, so the brain reports them on the task
topic with their ``reason`` like any other planning failure.
"""

from __future__ import annotations

from robobus.brain_agent.errors import BrainError, ParseError


class LlmError(BrainError):
    """Base of every language-model backend error.

    ``retryable``: whether asking the model again (with the reason fed back) may help; the
    brain's scheduler reads it (``getattr(exc, "retryable", True)``) and fails the task at once
    when it is False.
    """

    code = "llm"
    retryable = True


class ModelNotFound(LlmError):
    """The model's weights are not installed (no weight package, no such local path)."""

    code = "model_not_found"
    retryable = False


class ModelIntegrityError(LlmError):
    """The joined weight file does not have the pinned sha256."""

    code = "model_corrupt"
    retryable = False


class ModelLoadError(LlmError):
    """transformers / torch could not load or convert the model."""

    code = "model_load"
    retryable = False


class GenerationError(LlmError):
    """The model produced no complete, decodable answer under the grammar."""

    code = "llm_output"


class EndpointError(LlmError):
    """An OpenAI-compatible endpoint refused the request or answered nonsense."""

    code = "llm_endpoint"
    retryable = False


class GrammarRefusal(ParseError):
    """The symbolic grammar read the instruction and refused it (or its goals cannot be
    planned): the model is not asked, and asking again would give the same answer."""

    retryable = False

    def __init__(self, exc: BrainError) -> None:
        super().__init__(exc.reason, exc.code)
