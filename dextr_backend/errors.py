"""Errors a user can fix. The CLI and the servers turn these into one clear line, never a traceback."""


class DextrError(Exception):
    """Base class for errors caused by the caller's input or environment, not by a bug."""


class InputError(DextrError, ValueError):
    """Bad points, a bad image, a malformed request."""


class WeightsError(DextrError):
    """Unknown, missing, corrupt or incompatible weights."""


class ServiceUnavailable(DextrError):
    """Redis is down or no worker is alive: the request can be retried later (HTTP 503)."""


class ServiceTimeout(DextrError):
    """A worker did not answer in time (HTTP 504)."""
