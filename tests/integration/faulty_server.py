"""Test-only server entry point: a normal TriVault server with ONE corrupted behaviour.

``python tests/integration/faulty_server.py FAULT --id N --config FILE [...]`` takes the
arguments of ``python -m servers`` after the fault's name and builds the production
server from a subclass that overrides one small method (``LocalCluster`` puts the
repository on ``PYTHONPATH``):

* ``key-share``: the server seals a wrong key-share pair (``VaultServicer.key_share``);
* ``ignore-policy``: the server releases its key share to anyone (``Acl.decide``);
* ``skip-mask``: the server runs the result-masking protocol with its peers but outputs
  its unmasked shares (``VaultServicer.mask_results``).

Production code has no switch for any of these: it only exposes the overridable steps.
"""

from __future__ import annotations

import sys

from protocols.party import Party
from protocols.sharing import SharePair
from servers.__main__ import main
from servers.acl import Acl
from servers.app import Components
from servers.policy import Outcome
from servers.request_auth import VerifiedRequest
from servers.vault import VaultServicer


class LyingKeyShare(VaultServicer):
    """Seals ``(lo + 1, hi)`` instead of its stored key-share pair."""

    def key_share(self, image_id: int, deid: bool) -> tuple[bytes, SharePair]:
        ct, (lo, hi) = super().key_share(image_id, deid)
        return ct, (lo + 1, hi)


class SkipsMask(VaultServicer):
    """Runs the masking protocol (the peers wait for it) but outputs the unmasked shares."""

    def mask_results(self, party: Party, outs: dict[str, SharePair], hidden: list[int]) -> dict[str, SharePair]:
        super().mask_results(party, outs, hidden)
        return outs


class IgnoresPolicy(Acl):
    """Decides ORIGINAL for everyone (a corrupted server releasing keys to anyone)."""

    def decide(self, req: VerifiedRequest, image_id: int) -> Outcome:
        return Outcome.ORIGINAL


FAULTS = {
    "key-share": Components(vault=LyingKeyShare),
    "skip-mask": Components(vault=SkipsMask),
    "ignore-policy": Components(acl=IgnoresPolicy),
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: faulty_server.py {{{','.join(FAULTS)}}} --id N --config FILE")
    main(sys.argv[2:], FAULTS[sys.argv[1]])
