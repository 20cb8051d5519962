"""Request bodies of the HTTP API (pydantic), checked before anything reaches the engine.

Shapes follow OpenAI's where an OpenAI endpoint exists (`/v1/completions`, `/v1/chat/completions`),
so OpenAI clients work unchanged. Fields OpenAI has and this server cannot honour (`n` > 1, `stop`)
are refused by name rather than ignored; other unknown fields are ignored, as OpenAI does, except
on lorakit's own endpoints, which refuse them (a typo there must not pass silently).
Limits that depend on the server's flags (inputs per request, max_tokens) are checked by `limits.Limits`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class SamplingRequest(BaseModel):
    """What both OpenAI generation endpoints share. temperature 0 is greedy decoding."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)  # None: 64, or the server's limit if lower
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None  # sampling: the same seed, the same text
    stream: bool = False
    n: Literal[1] = 1
    stop: None = None


class CompletionRequest(SamplingRequest):
    """`POST /v1/completions`: one prompt or a list of them, read as is (no chat template)."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return prompt

    @property
    def prompts(self) -> list[str]:
        """The prompt(s) as a list: one choice each."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    """One turn of a chat: who speaks, and what."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(SamplingRequest):
    """`POST /v1/chat/completions`: a conversation, rendered with the tokenizer's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)


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
