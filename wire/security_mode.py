"""The deployment's query protocol, ``[security] mode``: what the servers run and the client expects.

Shared beneath ``servers`` (``servers.config`` reads it from the server config) and ``client``
(``client.local_cluster`` writes it into the configs it generates). Why the default is what it is:
``servers.config``'s module docstring and docs/SECURITY.md.
"""

from __future__ import annotations

SECURITY_MODES = ("malicious", "semi_honest")
DEFAULT_SECURITY_MODE = "semi_honest"  # the one switch: "malicious" once the checked CNN is fast enough
MALICIOUS_IMAGE_QUERIES = 1
"""Image queries per search session in malicious mode (the servers refuse more; the SDK splits a batch into
sessions of this many): each image adds its checked CNN's log to the session's one proof, about 1 GB per
server at 64 px (measured: 12.9 GB peak for three in-process parties with one image, 15.9 GB with two) and
166 s at 96 px (about 100 s since stop 32), so a 16-image session would hold tens of GB and outlast any timeout."""


def security_mode(value: object, where: str = "[security] mode") -> str:
    """``value`` if it is one of :data:`SECURITY_MODES`, else ValueError naming ``where`` and the choices."""
    if value not in SECURITY_MODES:
        raise ValueError(f"{where} must be one of {', '.join(repr(m) for m in SECURITY_MODES)}, got {value!r}")
    return str(value)
