"""Errors of the language-model backends, rooted in the brain's hierarchy.

They derive from :class:`brain_agent.errors.BrainError`, so the brain reports them on the task
topic with their ``reason`` like any other planning failure.
"""

from __future__ import annotations

from robobus.brain_agent.errors import BrainError


class LlmError(BrainError):
    """Base of every language-model backend error."""

    code = "llm"


class ModelNotFound(LlmError):
    """The model's weights are not installed (no weight package, no such local path)."""

    code = "model_not_found"


class ModelIntegrityError(LlmError):
    """The joined weight file does not have the pinned sha256."""

    code = "model_corrupt"


class ModelLoadError(LlmError):
    """transformers / torch could not load or convert the model."""

    code = "model_load"


class GenerationError(LlmError):
    """The model produced no complete, decodable answer under the grammar."""

    code = "llm_output"


class EndpointError(LlmError):
    """An OpenAI-compatible endpoint refused the request or answered nonsense."""

    code = "llm_endpoint"
