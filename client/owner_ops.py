"""The data owner's side: register the model, extract features, upload and delete images.

Features are extracted locally with the owner's plaintext model; the index is updated or
rebuilt and re-shared (``client.index_policy``); every change is one two-phase
transaction on the three servers (``client.commit``).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from protocols.ring import DEFAULT_FP
from wire import bundle as bd

from . import owner_model
from .catalog import Catalog, ImageEntry
from .commit import PhaseHook, transact
from .encryption import DEID_METADATA_KEY, deid_function, encrypt_images
from .errors import PartialCommitError, TriVaultError, UploadInterrupted
from .identity import Identity
from .images import ImageInput, load_image_bytes
from .index_policy import IndexUpload, index_bundles
from .owner_state import OwnerState
from .recipes import DEFAULT_PROJECTION, FITTED, build_model
from .transport import Fanout, Sign
from .upload_batches import BATCH_IMAGES, BATCH_PIXELS, plan_batches


class OwnerOps:
    """Model registration, feature extraction, uploads and deletions of one data owner."""

    def __init__(self, fan: Fanout, sign: Sign, identity: Identity, owner: OwnerState, timeout_s: float) -> None:
        self.fan, self.sign, self.identity, self.owner = fan, sign, identity, owner
        self.timeout_s = timeout_s
        self.progress = False
        self.catalog = Catalog(owner.root)
        self.fault_hook: PhaseHook | None = None  # tests: called with a phase of the two-phase commit
        self.last_upload_stats: dict[str, Any] = {}
        self._batch_ids: list[int] = []  # ids of the upload transaction in progress
        self.module: nn.Module | None = None  # the owner's plaintext model, when known in this process

    def transact(self, bundles: list[bd.Bundle], action: str = "upload", collection: str = "default") -> None:
        """One two-phase transaction of ``bundles[i]`` on server ``i``."""
        transact(self.fan, self.sign, bundles, action, collection, self.timeout_s, self.fault_hook)

    def index_bundles(self, feats: np.ndarray, ids: np.ndarray, base_version: int,
                      new_feats: np.ndarray | None = None, new_ids: np.ndarray | None = None,
                      deletes: Sequence[int] = ()) -> IndexUpload:
        """The index change for the new set of features (``client.index_policy.index_bundles``)."""
        return index_bundles(self.owner, feats, ids, base_version, new_feats, new_ids, deletes)

    def register_model(self, model: nn.Module, resolution: int | None = None) -> dict:
        """Split ``model`` into RSS weight pairs and register it on the three servers; returns its arch.

        A model whose recipe asks for a PCA projection (``build_model(..., projection="pca")``)
        is kept pending and registered by the first upload, with the PCA fitted on that
        upload's images (``client.owner_model``); the return value is then
        ``{"pending": True, "recipe": ...}``."""
        from .model import describe_model

        if self.fan.info()["image_ids"]:
            raise TriVaultError("images are already stored with the current model: delete them before replacing it")
        model_res = getattr(model, "resolution", 224)
        res = int(resolution or model_res)
        recipe: dict[str, Any] | None
        if owner_model.wants_fit(model):
            recipe = {**model.recipe, "resolution": res}  # type: ignore[dict-item]  # torch: attrs are Tensor | Module
            owner_model.save_pending(self.owner, recipe)
            self.module = model
            return {"pending": True, "recipe": recipe}
        arch, tensors = model_tensors(model, res)
        txn = str(uuid.uuid4())
        bundles = [bd.Bundle("txn", txn, {"model": {"arch": arch}}, tensors[i]) for i in range(3)]
        self.transact(bundles)
        recipe = getattr(model, "recipe", None)
        if recipe is not None:
            pca = getattr(model, "pca", None)
            if pca is not None:
                owner_model.save_projection(self.owner, pca)
            self.owner.save_recipe(arch, recipe)
        else:
            self.owner.save_model(arch, describe_model(model, [3, res, res])[1])
        owner_model.clear_pending(self.owner)
        self.module = model
        return arch

    def register_pending(self, images: Sequence[ImageInput]) -> np.ndarray | None:
        """First upload with a pending model: fit its PCA on ``images`` (read one batch at a time)
        and register it. Returns the images' features under the fitted model (None when it fell
        back to the random projection)."""
        model = self.module if self.module is not None and owner_model.wants_fit(self.module) else None
        if model is None and (recipe := owner_model.load_pending(self.owner)) is not None:
            model = owner_model.rebuild(self.owner, recipe)
        if model is None:
            raise TriVaultError("no pending model: call register_model first")
        fitted, feats = owner_model.fit_first_upload(model, images, self.progress)  # type: ignore[arg-type]
        self.register_model(fitted, int(fitted.recipe["resolution"]))  # type: ignore[index]
        return feats

    def reindex(self, images: Sequence[ImageInput], image_ids: Sequence[int],
                projection: str = DEFAULT_PROJECTION) -> dict[str, Any]:
        """Refit the projection on ``images`` (of ``image_ids``: every stored image; a lazy sequence
        such as ``client.upload_batches.LazyImages`` is read a batch at a time) and replace the
        model and every feature share in one transaction (ciphertexts and keys stay). Returns the
        new recipe."""
        info = self.fan.info()
        recipe = self.owner.load_recipe()
        if recipe is None or recipe["kind"] not in ("efficientnet", owner_model.PCA_KIND):
            raise TriVaultError("only an efficientnet model registered from a recipe has a projection to refit")
        if len(images) != len(image_ids) or sorted(image_ids) != sorted(info["image_ids"]):
            raise TriVaultError("reindex needs every stored image (the servers' image ids)")
        res, dim = int(recipe["resolution"]), int(recipe["dim"])
        if len(images) <= dim or projection not in FITTED:
            raise TriVaultError(f"a PCA to {dim} dims needs more than {dim} images (have {len(images)}) and "
                                f"projection in {FITTED}")
        ids = np.array(image_ids, dtype=np.int64)
        base = build_model("efficientnet", res, dim, projection)
        if not isinstance(base, nn.Sequential):
            raise TypeError(f"expected the nn.Sequential feature model, got {type(base).__name__}")
        fitted, feats = owner_model.fit_first_upload(base, images, self.progress)
        assert feats is not None  # more than dim images: the PCA was fitted
        arch, tensors = model_tensors(fitted, res)
        self.owner.drop_plain_index()  # a new feature space: k-means from scratch
        imeta, itensors, after = self.index_bundles(feats, ids, info["index_version"])
        txn = str(uuid.uuid4())
        bundles = [bd.Bundle("txn", txn, {"model": {"arch": arch}, "index": imeta},
                             {**tensors[s], **{f"index/{k}": v for k, v in itensors[s].items()}}) for s in range(3)]

        def recorded() -> None:
            owner_model.save_projection(self.owner, fitted.pca)  # type: ignore[arg-type]
            self.owner.save_recipe(arch, fitted.recipe)  # type: ignore[arg-type]
            self.module = fitted
            after(info["index_version"] + 1)

        self._commit_and_record(bundles, "upload", "default", feats, ids, recorded)
        return dict(fitted.recipe)  # type: ignore[arg-type]

    def extract_features(self, images: Sequence[Image.Image], batch: int = 16,
                         progress: bool | None = None) -> np.ndarray:
        """Owner-side plaintext features of decoded images with the registered model (a progress
        bar when ``progress``, default: the client's setting)."""
        from .preprocess import crop_fraction_of, preprocess_batch

        module = self.module
        if module is None and (recipe := self.owner.load_recipe()) is not None:
            module = self.module = owner_model.rebuild(self.owner, recipe)
        saved = None if module is not None else self.owner.load_model()
        if module is None and saved is None:
            raise TriVaultError("no model registered from this owner directory: call register_model first")
        arch = self.owner.load_arch()
        res, crop = int(arch["input_shape"][-1]), crop_fraction_of(arch)
        out = []
        shown = self.progress if progress is None else progress
        for s in tqdm(range(0, len(images), batch), desc="features", unit="batch", disable=not shown):
            x = preprocess_batch(list(images[s:s + batch]), res, crop)
            with torch.no_grad():
                if module is not None:
                    out.append(module.eval()(x).float().numpy())
                else:
                    from .model import plain_forward

                    assert saved is not None  # checked above: a module or a saved model
                    out.append(plain_forward(saved[0], saved[1], x).float().numpy())
        return np.concatenate(out).astype(np.float32)

    def upload(self, images: Sequence[ImageInput], labels: Sequence[str] | None = None, deid: bool = False,
               eps: float = 1.0, collection: str = "default", batch_images: int = BATCH_IMAGES,
               batch_pixels: int = BATCH_PIXELS) -> list[int]:
        """Encrypt and upload images with their features' shares; returns the new image ids.

        The images go in consecutive transactions of at most ``batch_images`` images and
        ``batch_pixels`` decoded pixels (``client.upload_batches``: memory stays bounded); if one
        fails after others committed, :class:`UploadInterrupted` gives the ids of the first images,
        which are stored. The first upload registers a pending model, its PCA fitted on ALL these
        images (read once more, only their features kept). With ``deid``,
        ``last_upload_stats["deid"]`` maps each new id to its copy's de-identification metadata
        (regions changed, privacy spent)."""
        if labels is not None and len(labels) != len(images):
            raise ValueError("labels must match images one to one")
        t0 = time.perf_counter()
        feats_all = None
        if not self.fan.info()["image_ids"] and owner_model.load_pending(self.owner) is not None:
            feats_all = self.register_pending(list(images))  # fit on every image, then register
        batches = plan_batches(images, batch_pixels, batch_images)
        if not batches:
            self.last_upload_stats = {"n": 0, "seconds": 0.0, "transactions": 0, "deid": {}}
            return []
        one = len(batches) == 1
        done: list[int] = []
        stats: list[dict[str, Any]] = []
        with tqdm(total=len(images), desc="upload", unit="img", disable=one or not self.progress) as bar:
            for s, e in batches:
                try:
                    done += self._upload_batch(images[s:e], None if labels is None else labels[s:e], deid, eps,
                                               collection, None if feats_all is None else feats_all[s:e],
                                               one and self.progress)
                except Exception as exc:
                    if isinstance(exc, PartialCommitError):  # decided: this batch is stored too
                        done += self._batch_ids
                    self.last_upload_stats = _merged_stats(stats, len(done), time.perf_counter() - t0)
                    if not done or (isinstance(exc, PartialCommitError) and len(done) == len(images)):
                        raise
                    raise UploadInterrupted(f"upload stopped after {len(done)} of {len(images)} images (ids "
                                            f"{done[0]}..{done[-1]} are stored): {exc}", done) from exc
                stats.append(self.last_upload_stats)
                bar.update(e - s)
        self.last_upload_stats = _merged_stats(stats, len(done), time.perf_counter() - t0)
        return done

    def _upload_batch(self, images: Sequence[ImageInput], labels: Sequence[str] | None, deid: bool, eps: float,
                      collection: str, feats_new: np.ndarray | None, progress: bool) -> list[int]:
        """One upload transaction (see :meth:`upload`); ``feats_new``: the images' features if known."""
        t0 = time.perf_counter()
        info = self.fan.info()
        loaded = [load_image_bytes(x) for x in tqdm(images, desc="read", unit="img", disable=not progress)]
        if feats_new is None:
            feats_new = self.extract_features([im for _, im in loaded], progress=progress)
        old_feats, old_ids = self.owner.load_features()
        if sorted(old_ids.tolist()) != sorted(info["image_ids"]):
            raise TriVaultError("this owner directory does not match the servers' images")
        start = max(info["image_ids"], default=-1) + 1
        new_ids = np.arange(start, start + len(loaded), dtype=np.int64)
        self._batch_ids = new_ids.tolist()  # stored if the commit below is decided, even partially
        feats = feats_new if old_feats is None else np.concatenate([old_feats, feats_new])
        ids = np.concatenate([old_ids, new_ids])
        deid_meta: list[dict] = []
        per_server, metas = encrypt_images(self.identity, loaded, new_ids.tolist(), labels,
                                           recording_deid(deid_meta) if deid else None, eps, progress)
        imeta, itensors, after = self.index_bundles(feats, ids, info["index_version"], feats_new, new_ids)
        txn = str(uuid.uuid4())
        bundles = [bd.Bundle("txn", txn, {"images": metas, "index": imeta},
                             {**per_server[s], **{f"index/{k}": v for k, v in itensors[s].items()}})
                   for s in range(3)]
        t1 = time.perf_counter()
        entries = [ImageEntry(int(i), entry_name(src, None if labels is None else labels[n]), collection,
                              len(data), hashlib.sha256(data).hexdigest(), deid)
                   for n, (i, src, (data, _)) in enumerate(zip(new_ids.tolist(), images, loaded))]

        def recorded() -> None:
            after(info["index_version"] + 1)
            self.catalog.add(entries)

        self._commit_and_record(bundles, "upload", collection, feats, ids, recorded)
        t2 = time.perf_counter()
        self.last_upload_stats = {
            "n": len(loaded), "seconds": t2 - t0, "transfer_seconds": t2 - t1,
            "bytes_per_server": float(bundles[0].nbytes()), "index": "update" if imeta.get("update") else "full",
            "index_bytes_per_server": float(sum(v.numel() * v.element_size() for v in itensors[0].values())),
            "deid": dict(zip(new_ids.tolist(), deid_meta)) if deid else {}}
        return new_ids.tolist()

    def delete(self, image_id: int) -> None:
        """Delete an image everywhere: ciphertexts, key shares and its index entry."""
        info = self.fan.info()
        if int(image_id) not in info["image_ids"]:
            raise TriVaultError(f"unknown image id {image_id}")
        feats, ids = self.owner.load_features()
        if feats is None:
            raise TriVaultError("this owner directory does not match the servers' images")
        keep = ids != int(image_id)
        feats, ids = feats[keep], ids[keep]
        txn = str(uuid.uuid4())
        meta: dict[str, Any] = {"deletes": [int(image_id)]}
        meta["index"], itensors, after = self.index_bundles(feats, ids, info["index_version"],
                                                            deletes=[int(image_id)])
        bundles = [bd.Bundle("txn", txn, meta, {f"index/{k}": v for k, v in itensors[s].items()}) for s in range(3)]

        def recorded() -> None:
            after(info["index_version"] + 1)
            self.catalog.remove([int(image_id)])

        self._commit_and_record(bundles, "delete", "default", feats if len(ids) else None, ids, recorded)

    def _commit_and_record(self, bundles: list[bd.Bundle], action: str, collection: str,
                           feats: np.ndarray | None, ids: np.ndarray, after: Callable[[], None]) -> None:
        """Run the transaction; once server 0 committed (even if another server did not
        answer yet), record the owner's features and plain index for the new version."""
        try:
            self.transact(bundles, action, collection)
        except PartialCommitError:
            self.owner.save_features(feats, ids)
            after()
            raise
        self.owner.save_features(feats, ids)
        after()


def _merged_stats(stats: list[dict[str, Any]], n: int, seconds: float) -> dict[str, Any]:
    """``last_upload_stats`` of an upload made of the transactions ``stats`` (those committed)."""
    return {"n": n, "seconds": seconds, "transactions": len(stats),
            "transfer_seconds": sum(x["transfer_seconds"] for x in stats),
            "bytes_per_server": sum(x["bytes_per_server"] for x in stats),
            "index": stats[-1]["index"] if stats else None,
            "index_bytes_per_server": stats[-1]["index_bytes_per_server"] if stats else 0.0,
            "deid": {k: v for x in stats for k, v in x["deid"].items()}}


def entry_name(source: ImageInput, label: str | None) -> str | None:
    """The owner's name for an uploaded image: its label, else the file name of a path input."""
    if label is not None:
        return str(label)
    if isinstance(source, (str, Path)):
        return Path(source).name
    return None


def recording_deid(out: list[dict]) -> Callable[[np.ndarray, float], bytes]:
    """``encryption.deid_function()`` that also appends each copy's de-identification metadata
    (regions changed, privacy spent: the PNG text chunk it embeds) to ``out``, in upload order."""
    run = deid_function()

    def recorded(arr: np.ndarray, eps: float) -> bytes:
        png = run(arr, eps)
        with Image.open(io.BytesIO(png)) as im:
            out.append(json.loads(im.text.get(DEID_METADATA_KEY, "{}")))
        return png

    return recorded


def model_tensors(model: nn.Module, resolution: int) -> tuple[dict, list[dict[str, torch.Tensor]]]:
    """The model's public arch and, per server, its RSS weight pairs as ``model/<name>`` tensors."""
    from .model import split_model
    from .preprocess import preprocess_spec

    arch, per_server = split_model(model, [3, resolution, resolution], DEFAULT_FP)
    arch["preprocess"] = preprocess_spec()  # the querier preprocesses as the owner did
    tensors: list[dict[str, torch.Tensor]] = [{}, {}, {}]
    for i in range(3):
        for name, pair in per_server[i].items():
            tensors[i].update(bd.pairs_to_tensors(f"model/{name}", pair))
    return arch, tensors
