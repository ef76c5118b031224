"""The ``llm`` planner: a local model (transformers + torch) writes the goals, under a grammar.

Options (``--model`` on the CLI, or ``BrainConfig.planner_options``), each with an env default:

* ``model`` (``ROBOBUS_LLM_MODEL``): a name from :data:`brain_agent.llm.models.MODELS`
  (default ``qwen2.5-coder-0.5b``), a ``.gguf`` file or a transformers folder;
* ``device`` (``ROBOBUS_LLM_DEVICE``): ``auto`` (CUDA when torch sees one), ``cpu``, ``cuda``;
* ``dtype`` (``ROBOBUS_LLM_DTYPE``): ``auto`` (bfloat16), ``float32``, ...;
* ``cache_dir`` (``ROBOBUS_LLM_CACHE``): where converted models are kept;
* ``max_attempts``: model answers tried per plan (rejections are fed back);
* ``grammar_first`` (default True): the symbolic grammar answers where it reads the text and
  the model is asked only where it does not (see :mod:`brain_agent.llm.planning`).

The model is loaded on first use (or by :meth:`LlmPlanner.warmup`), in a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

import anyio

from robobus.brain_agent.llm import models, prompts
from robobus.brain_agent.llm.planning import ModelPlanner


class LlmPlanner(ModelPlanner):
    """Instruction -> GoalSet by a local causal LM with llguidance-constrained decoding."""

    name = "llm"

    def __init__(self, model: str | None = None, *, device: str | None = None,
                 dtype: str | None = None, cache_dir: str | Path | None = None,
                 max_attempts: int = 3, max_new_tokens: int = 240, grammar_first: bool = True) -> None:
        super().__init__(max_attempts=max_attempts, max_new_tokens=max_new_tokens,
                         grammar_first=grammar_first)
        self.model = model or os.environ.get("ROBOBUS_LLM_MODEL") or models.DEFAULT_MODEL
        self.device = device or os.environ.get("ROBOBUS_LLM_DEVICE") or "auto"
        self.dtype = dtype or os.environ.get("ROBOBUS_LLM_DTYPE") or "auto"
        self.cache_dir = cache_dir
        self._engine: Any = None
        self._load_lock = threading.Lock()
        #: recent (messages, :class:`~brain_agent.llm.engine.Generation`) pairs, newest last
        self.history: deque[tuple[list[dict[str, str]], Any]] = deque(maxlen=16)

    def engine(self) -> Any:
        """The loaded :class:`~brain_agent.llm.engine.LocalEngine` (loads it once). Blocking."""
        with self._load_lock:
            if self._engine is None:
                from robobus.brain_agent.llm.engine import LocalEngine

                engine = LocalEngine.load(self.model, device=self.device, dtype=self.dtype,
                                          cache_dir=self.cache_dir)
                engine.warm_prefix(prompts.prefix_messages())
                self._engine = engine
            return self._engine

    async def warmup(self) -> None:
        """Load (and on first use convert) the model now rather than on the first instruction."""
        await anyio.to_thread.run_sync(self.engine, limiter=self._limiter)

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                 temperature: float = 0.0) -> str:
        from robobus.brain_agent.llm.constrain import grammar_for

        generation = self.engine().generate(messages, grammar_for(schema),
                                            max_new_tokens=self.max_new_tokens,
                                            temperature=temperature)
        self.history.append((messages, generation))
        return generation.text

    @property
    def last(self) -> Any:
        """The last :class:`~brain_agent.llm.engine.Generation`, or None."""
        return self.history[-1][1] if self.history else None
