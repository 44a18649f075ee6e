from __future__ import annotations


class Permanent(Exception):
    """Raise from a handler to fail the delivery for good.

    The result's outcome is FAILED: the event goes to the plugin's dead
    letters and is not retried. ``raise Permanent("bad input")`` or
    ``raise Permanent(err) from err``. Any other exception means RETRY.
    """


class RetryAfter(Exception):
    """Raise from a handler to have the event retried no sooner than ``seconds``.

    The result's outcome is RETRY with ``retry_after`` set; the core may wait
    longer. ``raise RetryAfter(30, "rate limited")``.
    """

    def __init__(self, seconds: float, message: str = "") -> None:
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError(f"RetryAfter: seconds must be >= 0, got {seconds}")
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = seconds


def classify(exc: BaseException) -> BaseException | None:
    """The Permanent or RetryAfter in exc's ``raise ... from`` chain, if any
    (like Go's errors.As on the wrap chain)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, (Permanent, RetryAfter)):
            return e
        seen.add(id(e))
        e = e.__cause__
    return None
