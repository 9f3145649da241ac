"""The SDK's errors: each message names the server(s) involved and the reason."""

from __future__ import annotations


class TriVaultError(RuntimeError):
    """A request failed; the message names the server(s) and the reason."""


class PartialCommitError(TriVaultError):
    """Server 0 committed (the decision is final) but another server did not answer; it
    completes the transaction by itself when it is back."""
