"""Privacy accounting: epsilon per region and the image total by sequential composition."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .detect import Region

#: Mechanisms that give no formal guarantee (their epsilon is recorded as None = infinite).
NON_PRIVATE = frozenset({"blur", "mosaic"})


@dataclass
class RegionCharge:
    """What was released for one region and at which privacy cost."""

    region: Region
    mechanism: str
    eps: float | None  # None: no DP guarantee (baseline); 0.0: output independent of the region
    guarantee: str
    released_text: str | None = None

    def as_dict(self) -> dict:
        """Metadata form (box, kind, mechanism, eps, guarantee)."""
        d = asdict(self)
        d["region"] = self.region.as_dict()
        if d["released_text"] is None:
            del d["released_text"]
        return d


@dataclass
class PrivacyLedger:
    """Accumulates per-region charges; totals by sequential composition (sum)."""

    noise_source: str
    charges: list[RegionCharge] = field(default_factory=list)

    def charge(self, item: RegionCharge) -> None:
        """Record one region's release."""
        self.charges.append(item)

    @property
    def eps_total(self) -> float | None:
        """Sum of per-region eps (sequential composition); None if any region is not DP."""
        if any(c.eps is None for c in self.charges):
            return None
        return float(math.fsum(c.eps for c in self.charges if c.eps is not None))

    @property
    def eps_max_region(self) -> float | None:
        """Largest per-region eps: the bound for one person/vehicle if regions are disjoint."""
        if any(c.eps is None for c in self.charges):
            return None
        return max((c.eps for c in self.charges if c.eps is not None), default=0.0)

    def metadata(self, mechanism: str, eps_requested: float, message: str) -> dict:
        """The accounting dict stored with the de-identified copy."""
        return {
            "schema": "trivault.deid/1",
            "mechanism": mechanism,
            "eps_per_region_requested": None if mechanism in NON_PRIVATE else eps_requested,
            "eps_per_region": [c.eps for c in self.charges],
            "eps_total": self.eps_total,
            "eps_max_region": self.eps_max_region,
            "composition": "sequential (sum over regions)",
            "dp": mechanism not in NON_PRIVATE,
            "noise_source": self.noise_source,
            "n_regions": len(self.charges),
            "regions": [c.as_dict() for c in self.charges],
            "unchanged": not self.charges,
            "message": message,
        }
