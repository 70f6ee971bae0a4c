"""Errors a user can fix, and the one table that turns them into HTTP statuses.

The CLI turns these into one clear line and exit code 2; the Label Studio server, the queue
jobs and the nuclio function into a status from :func:`http_status` and a ``detail`` message,
never a traceback.
"""

from __future__ import annotations


class DextrError(Exception):
    """Base class for errors caused by the caller's input or environment, not by a bug."""


class InputError(DextrError, ValueError):
    """Bad points, a bad image, a malformed request (HTTP 422)."""


class MalformedRequest(InputError):
    """Not JSON at all (HTTP 400), as opposed to JSON with bad content (422)."""


class RequestTooLarge(InputError):
    """A body over ``DEXTR_MAX_BODY_MB`` (HTTP 413)."""


class WeightsError(DextrError):
    """Unknown, missing, corrupt or incompatible weights: the deployment's fault (HTTP 503)."""


class ServiceUnavailable(DextrError):
    """Redis is down or no worker is alive: the request can be retried later (HTTP 503)."""


class ServiceTimeout(DextrError):
    """The request ran out of time, waiting for a worker or in one (HTTP 504)."""


class ReportedError(DextrError):
    """An error a queue worker answered with (:func:`error_payload`), raised again in the API so
    that it is answered, redacted and logged as one raised there: one error path in both modes."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = int(status)

    @classmethod
    def from_payload(cls, payload: dict) -> ReportedError:
        return cls(str(payload.get("error", "the worker failed")), payload.get("status", 422))


# Most specific first: MalformedRequest and RequestTooLarge are InputErrors.
_STATUSES = (
    (MalformedRequest, 400),
    (RequestTooLarge, 413),
    (InputError, 422),
    (ServiceTimeout, 504),
    (ServiceUnavailable, 503),
    (WeightsError, 503),
)


def http_status(exc: BaseException) -> int:
    """The HTTP status of an error: 4xx for the caller's, 503/504 for the service's, 500 for a bug."""
    if isinstance(exc, ReportedError):
        return exc.status
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return status
    return 422 if isinstance(exc, DextrError) else 500


def error_payload(exc: BaseException) -> dict:
    """An error as a queue job's answer: plain data the API turns back into the same status."""
    return {"error": str(exc), "status": http_status(exc), "kind": type(exc).__name__}
