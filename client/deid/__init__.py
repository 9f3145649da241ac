"""TriVault client/deid package: DP de-identification of faces and licence plates.

Public entry point: :func:`deidentify` -> :class:`DeidResult`; CLI: ``client.deid.cli.app``.
"""

from .api import MECHANISMS, DeidResult, deidentify
from .detect import Region

__all__ = ["MECHANISMS", "DeidResult", "Region", "deidentify"]
