"""A local causal LM (transformers + torch) that answers chat prompts under a JSON grammar.

Blocking by design: callers run :meth:`LocalEngine.generate` in a worker thread. One engine
serves one generation at a time (a lock), which is also what two CPU cores can afford.

The fixed prompt prefix (system message and examples) is encoded once and its key/value cache
kept; each call copies it and only runs the scene and the instruction through the model.
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from robobus.brain_agent.llm import models
from robobus.brain_agent.llm.errors import GenerationError, ModelLoadError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Generation:
    """One model answer and what it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    cached_tokens: int = 0
    tokens: tuple[int, ...] = ()

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` -> bfloat16 (2x faster than float32 on the project's CPU, native on GPUs)."""
    import torch

    name = "bfloat16" if dtype == "auto" else dtype
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (use auto, bfloat16, float16, float32)")
    return value


def cache_keyword(model: Any) -> str:
    """The name under which ``model.forward`` takes and returns its key/value cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (in ``forward``, ``generate`` and
    the model outputs) and warns with a FutureWarning on the old name; older releases know only
    the old one. Asking the signature keeps one code path for every supported release.
    """
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class LocalEngine:
    """A loaded model, its tokenizer and its llguidance tokenizer. Build with :meth:`load`."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, device: str) -> None:
        from robobus.brain_agent.llm.constrain import ll_tokenizer

        self.model, self.tokenizer, self.name, self.device = model, tokenizer, name, device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.ll_tokenizer = ll_tokenizer(tokenizer, n_vocab=self.vocab_size)
        self._cache_kw = cache_keyword(model)
        self._lock = threading.Lock()
        self._prefix: tuple[list[int], Any] | None = None

    @classmethod
    def load(cls, model: str = models.DEFAULT_MODEL, *, device: str = "auto", dtype: str = "auto",
             cache_dir: str | Path | None = None) -> LocalEngine:
        """Find (and on first use convert) ``model``, then load it offline on ``device``."""
        models.offline()
        import transformers

        transformers.utils.logging.disable_progress_bar()
        folder = models.resolve(model, models.cache_root(cache_dir))
        dev = pick_device(device)
        started = time.monotonic()
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            # Any: transformers wraps ``to`` with functools.wraps(Module.to), which mypy reads
            # as an unbound function, so ``lm.to(dev)`` would not type-check on the real class.
            lm: Any = transformers.AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=pick_dtype(dtype, dev), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"loading {folder} failed: {exc}") from exc
        lm.to(dev).eval()
        log.info("llm_loaded", model=model, folder=str(folder), device=dev,
                 seconds=round(time.monotonic() - started, 2))
        return cls(lm, tok, name=model, device=dev)

    def encode(self, messages: list[dict[str, str]], *, generation: bool = True) -> list[int]:
        """Token ids of a chat, through the model's own chat template."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=generation)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def warm_prefix(self, messages: list[dict[str, str]]) -> int:
        """Encode the fixed prompt prefix once and keep its key/value cache; returns its length."""
        import torch

        ids = self.encode(messages, generation=False)
        with self._lock, torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            self._prefix = (ids, out[self._cache_kw])
        return len(ids)

    def generate(self, messages: list[dict[str, str]], grammar: str, *,
                 max_new_tokens: int = 200, temperature: float = 0.0,
                 fast_forward: bool = True, replay: list[int] | None = None) -> Generation:
        """Decode ``messages`` under ``grammar`` (greedy at temperature 0); blocking.

        ``fast_forward`` runs our own decoding loop, which feeds the tokens the grammar forces
        (``{"goals":[{"type":"``, the rest of a unique name) through the model in one forward
        pass instead of one pass each, and stops as soon as the grammar is complete; this cuts
        the forward passes by a third or more. ``False`` uses transformers' ``generate``.

        ``replay`` (benchmarks only) takes these tokens instead of the model's choice, with the
        same forward passes and grammar masking, to time recorded answers on other hardware.
        """
        import torch

        from robobus.brain_agent.llm.constrain import GrammarLogitsProcessor, new_matcher

        ids = self.encode(messages)
        matcher = new_matcher(self.ll_tokenizer, grammar)
        processor = GrammarLogitsProcessor(matcher, 0, self.vocab_size)
        # inference_mode is per thread: generate runs in a worker thread, so enter it here.
        with self._lock, torch.inference_mode():
            started = time.monotonic()
            past, cached = self._cache_for(ids)
            try:
                if fast_forward or replay is not None:
                    new = self._decode(ids, cached, past, processor, max_new_tokens, temperature,
                                       replay)
                else:
                    new = self._hf_generate(ids, cached, past, processor, max_new_tokens,
                                            temperature)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"generation failed: {exc}") from exc
            seconds = time.monotonic() - started
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text, len(ids), len(new), seconds, cached, tuple(new))

    def _cache_for(self, ids: list[int]) -> tuple[Any, int]:
        """A private copy of the prefix cache when ``ids`` starts with the cached prefix."""
        if self._prefix is not None and ids[:len(self._prefix[0])] == self._prefix[0]:
            return copy.deepcopy(self._prefix[1]), len(self._prefix[0])
        return None, 0

    def _decode(self, ids: list[int], cached: int, past: Any, processor: Any,
                max_new_tokens: int, temperature: float, replay: list[int] | None) -> list[int]:
        import torch

        out: list[int] = []
        pending = ids[cached:]
        eos = self.tokenizer.eos_token_id
        while len(out) < max_new_tokens and not processor.matcher.is_stopped():
            step = self.model(input_ids=torch.tensor([pending], device=self.device),
                              use_cache=True, **{self._cache_kw: past})
            past = step[self._cache_kw]
            scores = processor(torch.tensor([out], dtype=torch.long),
                               step.logits[:, -1, :].float())
            token = choose(scores, temperature)
            if replay is not None:
                token = replay[len(out)] if len(out) < len(replay) else eos
            if token == eos:
                break
            processor.advance([*out, token])
            pending = [token, *processor.matcher.compute_ff_tokens()]
            out.extend(pending)
            processor.advance(out)
        return out

    def _hf_generate(self, ids: list[int], cached: int, past: Any, processor: Any,
                     max_new_tokens: int, temperature: float) -> list[int]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        eos = self.tokenizer.eos_token_id
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
            if temperature > 0 else {"do_sample": False}
        config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=eos,
                                  pad_token_id=eos, **sampling)
        processor.prompt_len = len(ids)
        input_ids = torch.tensor([ids], device=self.device)
        kwargs = {self._cache_kw: past} if past is not None else {}
        out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  generation_config=config,
                                  logits_processor=LogitsProcessorList([processor]), **kwargs)
        return [t for t in out[0, len(ids):].tolist() if t != eos]


def choose(scores: Any, temperature: float) -> int:
    """The next token: argmax at temperature 0, else a sample from the tempered softmax."""
    import torch

    if temperature <= 0:
        return int(scores[0].argmax())
    probs = torch.softmax(scores[0] / temperature, dim=-1)
    return int(torch.multinomial(probs, 1))
