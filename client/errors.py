"""The SDK's errors: each message names the server(s) involved and the reason."""

from __future__ import annotations


class TriVaultError(RuntimeError):
    """A request failed; the message names the server(s) and the reason."""


class TriVaultUnavailable(TriVaultError):
    """One or more servers did not answer (down, unreachable, or refusing the TLS handshake)
    after gRPC's bounded retries. ``servers`` maps each unreachable server's number to its
    address, e.g. ``{1: "127.0.0.1:7001"}``."""

    def __init__(self, message: str, servers: dict[int, str]) -> None:
        super().__init__(message)
        self.servers = dict(servers)


class PartialCommitError(TriVaultError):
    """Server 0 committed (the decision is final) but another server did not answer; it
    completes the transaction by itself when it is back."""


class TriVaultWarning(UserWarning):
    """Something the caller should know that did not stop the request (e.g. k above the
    number of candidates: fewer results than asked for)."""


class UploadInterrupted(TriVaultError):
    """An upload of several transactions (``client.upload_batches``) stopped part-way. The images
    committed are the first ``len(uploaded)`` ones, with ids ``uploaded``; uploading the rest
    again (the CLI: the same folder) completes it."""

    def __init__(self, message: str, uploaded: list[int]) -> None:
        super().__init__(message)
        self.uploaded = list(uploaded)


class MaliciousServerError(TriVaultError):
    """A malicious-mode search aborted because a server's messages failed the servers' proof
    (security with abort, docs/SECURITY.md): no result was released, to anyone.

    ``suspects``: the server(s) to blame, from the servers' reports
    (``wire.proof_abort.combine_reports``): one server when two servers' reports agree on it,
    else the pair that disagreed (one of the two deviated). ``reports`` maps each reporting server
    to the suspects it named (the server whose messages failed its check first)."""

    def __init__(self, message: str, suspects: tuple[int, ...], reports: dict[int, tuple[int, ...]]) -> None:
        super().__init__(message)
        self.suspects = tuple(suspects)
        self.reports = dict(reports)
