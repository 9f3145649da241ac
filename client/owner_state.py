"""The data owner's local (plaintext, never uploaded) state: model, features, ids.

Lives in ``owner_dir``: ``model_arch.json`` + ``model_params.npz`` (float64, no pickle),
``features.npy`` [N, d] float32 and ``ids.npy`` [N] int64. Written atomically.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class OwnerState:
    """Owner-side model and feature store."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def save_model(self, arch: dict, params: dict[str, torch.Tensor]) -> None:
        """Keep the owner's plaintext model (to extract features locally)."""
        buf = io.BytesIO()
        np.savez(buf, **{k: v.detach().numpy() for k, v in params.items()})  # type: ignore[arg-type]
        _write(self.root / "model_params.npz", buf.getvalue())
        (self.root / "model_recipe.json").unlink(missing_ok=True)
        _write(self.root / "model_arch.json", json.dumps(arch).encode())

    def save_recipe(self, arch: dict, recipe: dict) -> None:
        """Keep a reproducible recipe instead of the weights (named models)."""
        (self.root / "model_params.npz").unlink(missing_ok=True)
        _write(self.root / "model_recipe.json", json.dumps(recipe).encode())
        _write(self.root / "model_arch.json", json.dumps(arch).encode())

    def load_arch(self) -> dict:
        """The registered model's public architecture description."""
        return json.loads((self.root / "model_arch.json").read_text())

    def load_recipe(self) -> dict | None:
        """The saved recipe, if the model was registered from one."""
        p = self.root / "model_recipe.json"
        return json.loads(p.read_text()) if p.exists() else None

    def load_model(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """(arch, float params) or None if no model was registered from here."""
        a = self.root / "model_arch.json"
        if not a.exists() or not (self.root / "model_params.npz").exists():
            return None
        with np.load(self.root / "model_params.npz", allow_pickle=False) as z:
            params = {k: torch.from_numpy(z[k].copy()) for k in z.files}
        return json.loads(a.read_text()), params

    def load_features(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(features [N,d] or None, ids [N])."""
        f = self.root / "features.npy"
        if not f.exists():
            return None, np.zeros(0, dtype=np.int64)
        return np.load(f), np.load(self.root / "ids.npy")

    def save_features(self, feats: np.ndarray | None, ids: np.ndarray) -> None:
        """Replace the stored features and ids."""
        for name, arr in (("features.npy", feats), ("ids.npy", ids)):
            if arr is None:
                (self.root / name).unlink(missing_ok=True)
                continue
            buf = io.BytesIO()
            np.save(buf, arr)
            _write(self.root / name, buf.getvalue())

    # ---- the owner's plaintext k-means index (for incremental updates) -----------------
    _PLAIN_FIELDS = ("id_bits", "frac_bits", "slack", "spill", "seed", "niter")

    def save_plain_index(self, plain, index_version: int, built_n: int) -> None:
        """Keep the PlainIndex matching server index version ``index_version``."""
        arrays = {"centroids": plain.centroids, "features": plain.features, "ids": plain.ids,
                  "index_version": np.array(index_version), "built_n": np.array(built_n)}
        arrays.update({f: np.array(getattr(plain, f)) for f in self._PLAIN_FIELDS})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _write(self.root / "index_plain.npz", buf.getvalue())

    def load_plain_index(self, index_version: int):
        """(PlainIndex, built_n) if the stored one matches ``index_version``, else None."""
        p = self.root / "index_plain.npz"
        if not p.exists():
            return None
        from index import PlainIndex

        with np.load(p, allow_pickle=False) as z:
            if int(z["index_version"]) != index_version:
                return None
            kw = {f: z[f].item() for f in self._PLAIN_FIELDS}
            plain = PlainIndex(centroids=z["centroids"].copy(), features=z["features"].copy(), ids=z["ids"].copy(),
                               **kw)
            return plain, int(z["built_n"])

    def drop_plain_index(self) -> None:
        """Forget the stored PlainIndex (the next upload rebuilds)."""
        (self.root / "index_plain.npz").unlink(missing_ok=True)

