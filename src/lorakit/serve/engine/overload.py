"""Why a request is refused or cut short under load: the queue is full, or its deadline passed.

QueueFull         more rows are waiting than the queue holds (`max_queued`): HTTP 503 with
                  Retry-After, so clients back off instead of piling up behind each other
DeadlineExceeded  the request was not finished within the server's request timeout: HTTP 504;
                  a running row leaves the batch at the next step, a waiting one never runs
"""

from __future__ import annotations

from lorakit.errors import LorakitError


class QueueFull(LorakitError):
    """`limit` rows are already waiting; `retry_after`: whole seconds worth waiting before trying again."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"the server is busy: {limit} rows are already waiting, its queue limit; retry in {retry_after} s"
        )
        self.limit = limit
        self.retry_after = retry_after


class DeadlineExceeded(LorakitError):
    """The request ran longer than the `timeout` (seconds) the server gives each request."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the request took longer than this server's request timeout of {timeout:g} s")
        self.timeout = timeout
