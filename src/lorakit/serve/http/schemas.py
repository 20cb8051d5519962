"""Request bodies of the HTTP API (pydantic), checked before anything reaches the engine.

Shapes follow OpenAI's where an OpenAI endpoint exists (`/v1/completions`, `/v1/chat/completions`),
so OpenAI clients work unchanged. Honoured: `max_tokens` / `max_completion_tokens` (the same limit;
both given must agree), `temperature`, `top_p`, `seed`, `n` (choices per prompt, at most 128; with
a seed, choice j samples from its own seed derived from it), `stop` (a string or up to 4),
`stream` with `stream_options.include_usage`, and log-probabilities: chat's `logprobs` and
`top_logprobs` (0..20), completions' `logprobs` (0..5), OpenAI's own limits. A null value means the
field's default, as at OpenAI.

Fields OpenAI has and this server cannot honour are refused by name with a 400 when set to
anything but their "off" value (`UNSUPPORTED`: penalties, logit_bias, best_of, echo, suffix,
tools and functions, response formats other than text, audio, ...), never ignored. Harmless
metadata (`user`, `metadata`, `store: false`, `service_tier`, prompt-cache hints) and other unknown
fields are ignored, as OpenAI does, except on lorakit's own endpoints, which refuse them (a typo
there must not pass silently). Limits that depend on the server's flags (choices per request,
max_tokens) are checked by `limits.Limits`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lorakit.serve.engine.generate import MAX_TOP_LOGPROBS

MAX_STOPS = 4  # OpenAI's limits
MAX_CHOICES = 128
MAX_COMPLETION_LOGPROBS = 5
INT64 = (-(2**63), 2**63 - 1)

# OpenAI's fields this server cannot honour: field → (the values that leave it off, how to write one)
SHARED_UNSUPPORTED = {
    "frequency_penalty": ((None, 0), "0"),
    "presence_penalty": ((None, 0), "0"),
    "logit_bias": ((None, {}), "{}"),
}
COMPLETION_UNSUPPORTED = {
    "best_of": ((None, 1), "1"),
    "echo": ((None, False), "false"),
    "suffix": ((None, ""), '""'),
}
CHAT_UNSUPPORTED = {
    "tools": ((None, []), "[]"),
    "tool_choice": ((None, "none"), '"none"'),
    "functions": ((None, []), "[]"),
    "function_call": ((None, "none"), '"none"'),
    "parallel_tool_calls": ((None,), "null"),
    "response_format": ((None, {"type": "text"}), '{"type": "text"}'),
    "audio": ((None,), "null"),
    "modalities": ((None, ["text"]), '["text"]'),
    "prediction": ((None,), "null"),
    "reasoning_effort": ((None,), "null"),
    "verbosity": ((None,), "null"),
    "web_search_options": ((None,), "null"),
    "moderation": ((None,), "null"),
    "store": ((None, False), "false"),
}
UNSUPPORTED = SHARED_UNSUPPORTED | COMPLETION_UNSUPPORTED | CHAT_UNSUPPORTED


def refuse_unsupported(value: Any, info: ValidationInfo) -> Any:
    """`value` if it leaves its field (one of `UNSUPPORTED`) off; else the error naming the field."""
    off, example = UNSUPPORTED[info.field_name]
    if value not in off:
        message = "lorakit serve cannot honour {field}; leave it out or send {example}"
        raise PydanticCustomError("unsupported_parameter", message, {"field": info.field_name, "example": example})
    return value


class ClassifyRequest(BaseModel):
    """`POST /v1/classify`: texts (and optional second texts) for one adapter (None: the base)."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = None
    inputs: list[str] = Field(min_length=1)
    text_pairs: list[str] | None = None

    @model_validator(mode="after")
    def _pairs_match_inputs(self) -> ClassifyRequest:
        if self.text_pairs is not None and len(self.text_pairs) != len(self.inputs):
            raise ValueError(f"text_pairs has {len(self.text_pairs)} items but inputs has {len(self.inputs)}")
        return self


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: `include_usage` sends `"usage": null` on every chunk and a last
    chunk with no choices and the request's usage. (`include_obfuscation` is ignored: it pads
    chunks against eavesdroppers on OpenAI's network; this server adds no padding.)"""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingRequest(BaseModel):
    """What both OpenAI generation endpoints share. temperature 0 is greedy decoding."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)  # None: 64, or the server's limit if lower
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)  # JSON readers take Infinity
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=INT64[0], le=INT64[1])  # sampling: the same seed, the same text
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """A null field takes its default (OpenAI's fields are nullable)."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {key: value for key, value in data.items() if value is not None or key not in fields}

    @field_validator(*SHARED_UNSUPPORTED)
    @classmethod
    def _refuse_unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_unsupported(value, info)

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOPS:
            counts = {"count": len(stops), "most": MAX_STOPS}
            raise PydanticCustomError("too_many_stops", "{count} stop strings; send at most {most}", counts)
        if not all(stops):
            raise PydanticCustomError("empty_stop", "a stop string is empty; send non-empty strings", {})
        return stop

    @model_validator(mode="after")
    def _consistent(self) -> SamplingRequest:
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            message = "max_tokens ({a}) and max_completion_tokens ({b}) differ; send one of them"
            raise PydanticCustomError("conflict", message, {"a": self.max_tokens, "b": self.max_completion_tokens})
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("stream_options", "stream_options is only allowed with stream: true", {})
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings (none, one or up to 4)."""
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def token_limit(self) -> tuple[int | None, str]:
        """(new tokens asked per choice, None if not, and the field that asked them)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (`stream_options.include_usage`)."""
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingRequest):
    """`POST /v1/completions`: one prompt or a list of them, read as is (no chat template).

    logprobs: None, or k (0..5): each token's log-probability and a dict of the k likeliest
    tokens' and the drawn one's (OpenAI's legacy shape).
    """

    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None

    @field_validator(*COMPLETION_UNSUPPORTED)
    @classmethod
    def _refuse_unsupported_here(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_unsupported(value, info)

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return prompt

    @property
    def prompts(self) -> list[str]:
        """The prompt(s) as a list: `n` choices each."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def alternatives(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token (`logprobs`)."""
        return self.logprobs


class ChatMessage(BaseModel):
    """One turn of a chat: who speaks, and what."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(SamplingRequest):
    """`POST /v1/chat/completions`: a conversation, rendered with the tokenizer's chat template.

    logprobs: true adds each token's log-probability, and `top_logprobs` (0..20, needs logprobs)
    its likeliest alternatives'.
    """

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    moderation: Any = None
    store: Any = None

    @field_validator(*CHAT_UNSUPPORTED)
    @classmethod
    def _refuse_unsupported_here(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_unsupported(value, info)

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise PydanticCustomError("top_logprobs", "top_logprobs needs logprobs: true", {})
        return self

    @property
    def alternatives(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None


class AdapterLoadRequest(BaseModel):
    """`POST /v1/adapters`: load an adapter of the adapters folder by name (never by path: clients
    must not make the server read arbitrary folders)."""

    model_config = ConfigDict(extra="forbid")

    name: str


class LoraLoadRequest(BaseModel):
    """vLLM's `POST /v1/load_lora_adapter`: adapter `lora_path` (a folder inside the adapters
    folder; a relative path is read from there) served as `lora_name`."""

    model_config = ConfigDict(extra="forbid")

    lora_name: str
    lora_path: str
    load_inplace: bool = False


class LoraUnloadRequest(BaseModel):
    """vLLM's `POST /v1/unload_lora_adapter`: unload `lora_name` (`lora_int_id` is vLLM's own id,
    accepted and unused: names identify adapters here)."""

    model_config = ConfigDict(extra="forbid")

    lora_name: str
    lora_int_id: int | None = None
