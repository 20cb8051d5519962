"""What one request may ask of the server (its `--max-*` and `--body-timeout` flags), and the checks that enforce it."""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.serve.http.errors import ApiError

DEFAULT_MAX_TOKENS = 64


@dataclass(frozen=True)
class Limits:
    """What one request may ask: body bytes, seconds for its body to arrive, rows (texts, or
    prompts × n choices), and new tokens per row."""

    max_body_bytes: int = 1 << 20
    body_timeout: float = 10.0
    max_inputs: int = 64
    max_tokens: int = 512

    def check_rows(self, count: int, field: str) -> None:
        """Refuse (400 too_many_inputs) a request whose `field` has more than `max_inputs` rows."""
        if count > self.max_inputs:
            message = f"{field} has {count} items; this server takes at most {self.max_inputs} per request"
            raise ApiError(400, "too_many_inputs", message)

    def check_choices(self, prompts: int, n: int) -> None:
        """Refuse (400 too_many_inputs) OpenAI choices beyond `max_inputs`: `n` for each of `prompts`."""
        if prompts * n > self.max_inputs:
            message = (
                f"{prompts} prompt(s) × n={n} is {prompts * n} choices; this server takes at most "
                f"{self.max_inputs} per request"
            )
            raise ApiError(400, "too_many_inputs", message)

    def new_tokens(self, requested: int | None, field: str = "max_tokens") -> int:
        """New tokens per row for an OpenAI `max_tokens` (or the `field` that asked them): as
        asked, else 64 (or `max_tokens`, if lower).

        Raises:
            ApiError: 400 max_tokens_too_large, above `max_tokens`.
        """
        new_tokens = requested or min(DEFAULT_MAX_TOKENS, self.max_tokens)
        if new_tokens > self.max_tokens:
            message = f"{field} is {new_tokens}; this server allows at most {self.max_tokens}"
            raise ApiError(400, "max_tokens_too_large", message)
        return new_tokens


DEFAULT_LIMITS = Limits()  # the `lorakit serve` flags' defaults
