"""Text -> token ids, shared by the backends that tokenize locally (hf, vllm).

One copy, so that every local backend splits context and continuation the same way and renders
chat prompts the same way: their log-likelihoods and generations are then comparable number for
number (the parity tests and benchmarks rely on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalsuite.backends import identity


class LocalTokenization:
    """Mixin: needs `self.tokenizer` (a transformers tokenizer) and `self.add_bos_token`."""

    tokenizer: Any
    add_bos_token: bool

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_bos_token)["input_ids"]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split: trailing context whitespace joins the continuation.

        The continuation's ids are the tail of the whole text's tokenization, so a token that
        straddles the boundary is scored as the model would actually see it (lm-eval does the same).
        """
        if context == "":
            prefix = self.tokenizer.bos_token_id
            prefix = self.tokenizer.eos_token_id if prefix is None else prefix
            return [prefix], self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        context, continuation = identity.shift_whitespace(context, continuation)
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        return ctx, whole[len(ctx) :]

    def render(self, prompt: str | Sequence[dict[str, str]]) -> str:
        """The exact text sent to the model (chat template applied to messages)."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)

    def _turn_end(self) -> tuple[str, ...]:
        """ChatML's end of turn as a stop string, for chat prompts.

        A base model trained on ChatML rendered as plain text (gemma has no `<|im_end|>` token)
        ends its turn with that text, not with its EOS token: without this stop, answers would
        run on into invented user turns. Where the marker is a special token it is EOS anyway.
        """
        return ("<|im_end|>",) if "<|im_end|>" in (self.tokenizer.chat_template or "") else ()

    def _stops(self, request: Any) -> tuple[str, ...]:
        """A generate request's stop strings, plus the end of turn for chat prompts."""
        stop = tuple(request.stop)
        return stop if isinstance(request.prompt, str) else stop + self._turn_end()
