"""The wording of a failed proof inside a malicious-mode query, as a server reports it to the client.

A server whose check of its peers' messages fails (``protocols.dzk.ProofRejected``) ends the
search with gRPC status ``ABORTED`` and details made by :func:`proof_abort_details`::

    server 0: proof failed, suspects (1, 2): the check of server 1's messages failed (...); no result released

Only server ids and the protocol's public reason travel (no share, no value). The client
parses them back with :func:`parse_proof_abort` (``client.search``) and combines the
servers' reports (:func:`combine_reports`).
"""

from __future__ import annotations

import re

_DETAILS = re.compile(r"^server (\d): proof failed, suspects \((\d(?:, \d)*)\)")


def proof_abort_details(reporter: int, reason: str, suspects: tuple[int, ...]) -> str:
    """``ABORTED`` details for a proof that failed at server ``reporter`` (``reason``: the
    ``ProofRejected`` message, which already starts with ``server <reporter>:``)."""
    prefix = f"server {reporter}: "
    why = reason[len(prefix):] if reason.startswith(prefix) else reason
    return f"{prefix}proof failed, suspects ({', '.join(str(int(s)) for s in suspects)}): {why}; no result released"


def parse_proof_abort(details: str) -> tuple[int, tuple[int, ...]] | None:
    """``(reporter, suspects)`` of details made by :func:`proof_abort_details`, else None."""
    m = _DETAILS.match(details or "")
    if m is None:
        return None
    return int(m.group(1)), tuple(int(s) for s in m.group(2).split(", "))


def combine_reports(reports: dict[int, tuple[int, ...]]) -> tuple[int, ...]:
    """The servers to blame, from each reporting server's suspects (ordered: the server whose
    messages failed its check first, then the other verifier of them).

    Each honest server's suspects contain the deviating server, so when one server reports, its
    pair; when two report, the server their pairs share (the deviating one, if both are honest).
    When all three report (a deviating server that also runs its own checks usually rejects the
    messages its victim computed from the corrupted value), the pairs share no server; the
    reports then name the pair whose messages failed the checks (the first suspect of each
    report): for a corrupted protocol message, its sender and its receiver."""
    if not reports:
        return ()
    common = set.intersection(*(set(s) for s in reports.values()))
    if common:
        return tuple(sorted(common))
    return tuple(sorted({s[0] for s in reports.values() if s}))
