"""Constrained decoding with llguidance inside transformers' ``generate``.

:class:`GrammarLogitsProcessor` is a transformers ``LogitsProcessor`` that asks an llguidance
``LLMatcher`` for the allowed-token bitmask and masks the logits with numpy. llguidance's own
torch helper is deliberately not used: importing it triggers a ``torch.compile`` build.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
from transformers import LogitsProcessor

from robobus.brain_agent.llm.errors import GenerationError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions  # a TypedDict of the stub, not exported

#: Compact JSON: no optional whitespace, so no tokens are spent on it.
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ",",
                                    "key_separator": ":"}


def grammar_for(schema: dict[str, Any]) -> str:
    """The llguidance grammar (a serialized top-level grammar) for ``schema``."""
    return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)


def ll_tokenizer(hf_tokenizer: Any, n_vocab: int | None = None) -> Any:
    """An llguidance tokenizer for a fast (Rust-backed) Hugging Face tokenizer.

    Built from the serialized Rust tokenizer, as ``llguidance.hf.from_tokenizer`` does, but
    without its ``isinstance`` check, which transformers 5 renamed its way out of.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GenerationError("constrained decoding needs a fast (Rust) tokenizer")
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return llguidance.LLTokenizer(backend.to_str(), n_vocab=n_vocab,
                                  eos_token=hf_tokenizer.eos_token_id)


def allowed_tokens(bitmask: np.ndarray, vocab_size: int) -> np.ndarray:
    """The boolean allow-list of a little-endian int32 token bitmask, ``vocab_size`` long."""
    bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")
    out = np.zeros(vocab_size, dtype=bool)
    n = min(vocab_size, bits.size)
    out[:n] = bits[:n].astype(bool)
    return out


class GrammarLogitsProcessor(LogitsProcessor):
    """A transformers ``LogitsProcessor``: only tokens the grammar allows keep their logits.

    One instance follows one generation (batch size 1). On each call it feeds the tokens
    sampled since the last call to the matcher, then masks every disallowed token to -inf.
    After the grammar is complete only EOS stays allowed, so generation stops by itself.
    """

    def __init__(self, matcher: Any, prompt_len: int, vocab_size: int) -> None:
        self.matcher = matcher
        self.prompt_len = prompt_len
        self.vocab_size = vocab_size
        self.consumed = 0
        self._words = (vocab_size + 31) // 32
        self._bitmask = np.zeros(self._words, dtype=np.int32)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[0] != 1:
            raise GenerationError("grammar-constrained decoding supports batch size 1 only")
        self.advance(input_ids[0, self.prompt_len:].tolist())
        allow = self.mask()
        width = scores.shape[-1]
        if width > allow.size:  # padded embedding rows are never real tokens
            allow = np.concatenate([allow, np.zeros(width - allow.size, dtype=bool)])
        if scores.device.type == "cpu" and str(scores.dtype) == "torch.float32" \
                and not scores.requires_grad:
            scores.numpy()[0, ~allow[:width]] = -np.inf  # in place, shares memory
            return scores
        import torch

        block = torch.from_numpy(~allow[:width]).to(scores.device)
        return scores.masked_fill(block.unsqueeze(0), float("-inf"))

    def advance(self, generated: list[int]) -> None:
        """Feed the matcher the tokens of ``generated`` (all tokens after the prompt) it has
        not seen yet."""
        new = generated[self.consumed:]
        if new and not self.matcher.consume_tokens(new):
            raise GenerationError(f"grammar rejected token(s) {new}: {self.matcher.get_error()}")
        self.consumed = len(generated)

    def mask(self) -> np.ndarray:
        """The allow-list for the next token (only EOS once the grammar is complete)."""
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if self.matcher.is_error():
            raise GenerationError(f"grammar matcher failed: {self.matcher.get_error()}")
        return allowed_tokens(self._bitmask, self.vocab_size)


def new_matcher(tokenizer: Any, grammar: str) -> Any:
    """A fresh matcher for one generation; a grammar llguidance refuses raises at once."""
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise GenerationError(f"invalid grammar: {matcher.get_error()}")
    return matcher
