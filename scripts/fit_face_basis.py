"""Fit the eigenface basis used by dp_latent and write client/deid/assets/face_basis.npz.

Trained only on scikit-image's bundled ``lfw_subset`` faces (offline, public), never on
images being protected nor on ../shared/data. Usage: ``python scripts/fit_face_basis.py [--k 8] [--bound 2]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.deid.latent import ASSET, fit_default_basis


def main() -> None:
    """Fit and save the basis."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8, help="number of eigenfaces (latent dimension)")
    ap.add_argument("--bound", type=float, default=2.0, help="public clip bound B on each normalised coordinate")
    ap.add_argument("-o", "--out", type=Path, default=ASSET)
    args = ap.parse_args()
    basis = fit_default_basis(args.k, args.bound)
    basis.save(args.out)
    print(
        f"wrote {args.out} (k={basis.k}, bound={basis.bound}, size={basis.size}, L1 sensitivity={basis.l1_sensitivity})"
    )


if __name__ == "__main__":
    main()
