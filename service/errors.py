"""Errors a source raises to say why a mapping cannot run, in AWS's words.

A mapping whose poller fails with a :class:`SourceError` shows ``reason`` as its state
transition reason (``/mappings``, ``esm_state_reason``), as AWS's
EventSourceMappingConfiguration.StateTransitionReason does (EVENT_SOURCE_AUTHN_ERROR,
EVENT_SOURCE_AUTHZ_ERROR, ESM_CONFIG_NOT_VALID, ...); any other exception shows as
``EVENT_SOURCE_ERROR``. The poller is retried with backoff either way: a daemon rides out a
source outage or a rotated password rather than exit.
"""

from __future__ import annotations


class SourceError(Exception):
    """A failure of the event source that the mapping's state reason names."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SourceAuthError(SourceError):
    """The source refused the credentials (wrong password, certificate, token)."""

    def __init__(self, message: str) -> None:
        super().__init__("EVENT_SOURCE_AUTHN_ERROR", message)


#: a running mapping's reason, and one whose poller failed with something else
USER_INITIATED = "USER_INITIATED"
EVENT_SOURCE_ERROR = "EVENT_SOURCE_ERROR"
#: a DocumentDB resume token the cluster no longer has (its change stream log moved past it,
#: or the token is invalid): esmd's own code; the mapping went on from its StartingPosition
RESUME_TOKEN_EXPIRED = "RESUME_TOKEN_EXPIRED"
