"""The TriVault Python SDK: ``Client(config)`` talks to the three servers over mutual TLS.

Owner side: ``register_model``, ``upload``, ``delete`` (features are extracted locally with
the owner's plaintext model, the index is rebuilt and re-shared, every upload is one
two-phase transaction on the three servers). Querier side: ``search`` (the preprocessed
image is secret-shared; the servers run secure CNN + secure search; the client
reconstructs the result) and ``retrieve`` (key shares sealed to a fresh X25519 key).
"""

from __future__ import annotations

import io
import json
import time
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from torch import nn
from tqdm import tqdm

from index import PlainIndex, build_index, share_index, share_update
from index.build import PAD_ID
from protocols.ring import DEFAULT_FP
from protocols.sharing import reconstruct, share_fixed
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire import bundle as bd
from wire.audit import Divergence, compare_chains
from wire.identity import PublicIdentity
from wire.key_delivery import KeyDeliveryError, recover_key, split_key
from wire.signing import audience_for_ca, sign_request
from wire.tls import channel_credentials, secure_channel

from . import crypto
from .identity import Identity
from .integrity import open_record, seal_record, sign_image, verify_image
from .owner_state import OwnerState

DEID_METADATA_KEY = "trivault-deid"  # PNG text chunk with the de-identified copy's privacy accounting

ImageInput = str | Path | np.ndarray | Image.Image


class TriVaultError(RuntimeError):
    """A request failed; the message names the server(s) and the reason."""


class PartialCommitError(TriVaultError):
    """Server 0 committed (the decision is final) but another server did not answer; it
    completes the transaction by itself when it is back."""


@dataclass(frozen=True)
class ClientConfig:
    """Server addresses, TLS files, the owner's local state directory and the RPC timeout."""

    servers: list[str]
    ca: Path
    cert: Path
    key: Path
    owner_dir: Path = Path("trivault-owner")
    timeout_s: float = 60.0

    @classmethod
    def load(cls, path: str | Path) -> "ClientConfig":
        """Read a client TOML file (relative paths are relative to it)."""
        path = Path(path)
        raw = tomllib.loads(path.read_text())
        base = path.resolve().parent

        def p(k: str, default: str | None = None) -> Path:
            q = Path(raw.get(k, default))
            return q if q.is_absolute() else base / q

        if len(raw.get("servers", [])) != 3:
            raise ValueError("client config must list exactly three server addresses")
        return cls(list(raw["servers"]), p("ca"), p("cert"), p("key"), p("owner_dir", "trivault-owner"),
                   float(raw.get("timeout_s", 60.0)))


@dataclass
class SearchResult:
    """Reconstructed top-k ids and distances, with timing and per-server communication."""

    ids: list[int]
    distances: list[float]
    seconds: float
    server_seconds: float
    comm: list[dict[str, int]] = field(default_factory=list)
    mode: str = "topk"

    @property
    def bytes_per_party(self) -> float:
        """Mean bytes sent per server during the protocol."""
        return float(np.mean([c["bytes_sent"] for c in self.comm])) if self.comm else 0.0


@dataclass
class Retrieved:
    """A decrypted, integrity-checked image: the uploaded file bytes, its label, which copy
    (``orig``/``deid``) the policy released, and the recipient its watermark names."""

    image_id: int
    data: bytes
    label: str | None
    kind: str = "orig"
    recipient: str = ""
    verified: bool = False

    def marked(self, key: bytes | None = None) -> np.ndarray:
        """The delivered copy: RGB with an invisible watermark naming the recipient (``trivault trace``)."""
        from .watermark import embed

        return embed(self.array(), self.recipient, key)

    def array(self) -> np.ndarray:
        """Decoded RGB uint8 array."""
        with Image.open(io.BytesIO(self.data)) as im:
            return np.asarray(im.convert("RGB"))


def load_image_bytes(item: ImageInput) -> tuple[bytes, Image.Image]:
    """File bytes (PNG for arrays) and the decoded RGB image; clear errors for bad files."""
    if isinstance(item, (str, Path)):
        data = Path(item).read_bytes()
        name = str(item)
    elif isinstance(item, Image.Image):
        buf = io.BytesIO()
        item.convert("RGB").save(buf, format="PNG", compress_level=1)
        data, name = buf.getvalue(), "<PIL image>"
    elif isinstance(item, np.ndarray):
        from .preprocess import to_pil

        buf = io.BytesIO()
        to_pil(item).save(buf, format="PNG", compress_level=1)
        data, name = buf.getvalue(), "<array>"
    else:
        raise TypeError(f"unsupported image input {type(item).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return data, im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not an image file") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{name}: corrupt or truncated image ({exc})") from None


def _rpc_error(i: int, exc: grpc.RpcError) -> str:
    return f"server {i}: {exc.code().name}: {exc.details()}"


class Client:
    """SDK entry point: ``Client(config)`` where config is a ClientConfig or a TOML path."""

    def __init__(self, config: ClientConfig | str | Path, progress: bool = True,
                 identity: Identity | str | Path | None = None, passphrase: bytes | None = None) -> None:
        self.cfg = config if isinstance(config, ClientConfig) else ClientConfig.load(config)
        self.identity = self._load_identity(identity, passphrase)
        self.audience = audience_for_ca(Path(self.cfg.ca).read_bytes())
        creds = channel_credentials(self.cfg.ca, self.cfg.cert, self.cfg.key)
        self._channels = [secure_channel(a, creds) for a in self.cfg.servers]
        self._stubs = [pbg.VaultStub(c) for c in self._channels]
        self._pool = ThreadPoolExecutor(max_workers=9, thread_name_prefix="trivault-client")
        self.owner = OwnerState(self.cfg.owner_dir)
        self.progress = progress
        self.last_upload_stats: dict[str, float] = {}
        self._module: nn.Module | None = None  # the owner's plaintext model, when known in this process
        self.fault_hook: Callable[[str], None] | None = None  # fault injection for tests: called with a phase

    def close(self) -> None:
        """Close the channels."""
        for c in self._channels:
            c.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- identity and signed requests ------------------------------------------------
    def _load_identity(self, identity: Identity | str | Path | None, passphrase: bytes | None) -> Identity:
        """The user's keys: given, loaded from a directory, or ``owner_dir/identity`` (created if absent)."""
        if isinstance(identity, Identity):
            return identity
        d = Path(identity) if identity is not None else Path(self.cfg.owner_dir) / "identity"
        if (d / "identity.json").exists():
            return Identity.load(d, passphrase)
        if identity is not None:
            raise TriVaultError(f"no identity in {d}: create one with `trivault keys new`")
        ident = Identity.create()
        ident.save(d, passphrase)
        return ident

    def sign(self, action: str, params: dict[str, Any]) -> bytes:
        """A signed request (Ed25519, fresh nonce and timestamp) for this deployment."""
        return sign_request(self.identity, action, params, self.audience).to_bytes()

    def _manage(self, action: str, params: dict[str, Any]) -> dict:
        auth = self.sign(action, params)  # the SAME signed request goes to all three servers
        outs = self._all(lambda i: json.loads(self._stubs[i].Manage(pb.SignedCall(auth=auth), timeout=10).meta_json))
        return outs[0]

    def register_user(self, user: PublicIdentity, attributes: dict[str, str] | None = None) -> str:
        """Owner: register a user's public identity with owner-attested attributes; returns its id."""
        self._manage("register", {"user": user.to_dict(), "attributes": dict(attributes or {})})
        return user.user_id

    def bootstrap(self) -> str:
        """First use of a deployment without ``owner_identity`` in its config: become its owner."""
        return self._manage("register", {"user": self.identity.public().to_dict(), "bootstrap": True})["user"]

    def grant(self, user_id: str, collection: str = "default", outcome: str = "ORIGINAL",
              expires: float | None = None, purposes: Sequence[str] | None = None, image_id: int | None = None,
              search: bool = True) -> None:
        """Owner: give ``user_id`` at least ``outcome`` on a collection (or one image) until ``expires``."""
        self._manage("grant", {"user": user_id, "collection": collection, "outcome": outcome.upper(),
                               "expires_ms": None if expires is None else int(expires * 1000),
                               "purposes": None if purposes is None else list(purposes), "image": image_id,
                               "search": bool(search)})

    def revoke(self, user_id: str, collection: str = "default", image_id: int | None = None) -> None:
        """Owner: revoke every grant and membership of ``user_id`` (effective at the next key release)."""
        self._manage("revoke", {"user": user_id, "collection": collection, "image": image_id})

    def audit_exports(self) -> dict[int, list[dict]]:
        """Each answering server's exported audit chain."""
        outs = self._all(lambda i: json.loads(self._stubs[i].Audit(pb.InfoRequest(), timeout=30).meta_json),
                         tolerate=True)
        return {i: o["entries"] for i, o in enumerate(outs) if o is not None}

    def audit(self) -> Divergence:
        """Fetch the three logs and compare them (``wire.audit.Divergence``: ok, suspects, summary)."""
        return compare_chains(self.audit_exports())

    def owner_identity(self) -> PublicIdentity:
        """The deployment owner's public identity, as at least two servers report it."""
        infos = self._all(lambda i: json.loads(self._stubs[i].Info(pb.InfoRequest(), timeout=10).meta_json),
                          tolerate=True)
        votes: dict[str, int] = {}
        for x in infos:
            if x and x.get("owner"):
                k = json.dumps(x["owner"], sort_keys=True)
                votes[k] = votes.get(k, 0) + 1
        best = [k for k, n in votes.items() if n >= 2]
        if not best:
            raise TriVaultError("the servers do not agree on the deployment owner")
        return PublicIdentity.from_dict(json.loads(best[0]))

    # ---- plumbing -----------------------------------------------------------------
    def _all(self, fn: Callable[[int], Any], servers: Sequence[int] = (0, 1, 2), tolerate: bool = False,
             fail_fast: bool = True) -> list[Any]:
        """Run ``fn(i)`` for each server in parallel; raise one clear error on failure (at the first
        one, without waiting for slower servers, if ``fail_fast``) unless ``tolerate``."""
        futs = {self._pool.submit(fn, i): i for i in servers}
        out: list[Any] = [None] * 3
        errs: list[str] = []
        pending = set(futs)
        while pending and not (errs and fail_fast and not tolerate):
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                i = futs[f]
                try:
                    out[i] = f.result()
                except grpc.RpcError as exc:
                    errs.append(_rpc_error(i, exc))
                except bd.BundleError as exc:
                    errs.append(f"server {i}: {exc}")
        if errs and not tolerate:
            raise TriVaultError("; ".join(sorted(errs)))
        return out

    def info(self) -> dict[str, Any]:
        """Public state of the deployment; checks that the three servers agree."""
        infos = self._all(lambda i: json.loads(self._stubs[i].Info(pb.InfoRequest(), timeout=10).meta_json))
        for key in ("index_version", "model_version", "image_ids"):
            vals = {json.dumps(x[key]) for x in infos}
            if len(vals) != 1:
                pend = {i: x["pending"] for i, x in enumerate(infos) if x["pending"]}
                raise TriVaultError(f"servers disagree on {key} (an upload is being recovered: {pend}); retry shortly")
        out = dict(infos[0])
        out["pending"] = sorted({t for x in infos for t in x["pending"]})  # on any server
        return out

    def _transact(self, bundles: list[bd.Bundle], action: str = "upload", collection: str = "default") -> None:
        """Two-phase commit: prepare on all three, then commit on server 0 (the decision), then 1 and 2.

        The owner signs one request naming the transaction, its image ids, deletions and model
        flag; each server checks it against what it staged before voting."""
        txn = bundles[0].session_id
        m = bundles[0].meta
        auth = self.sign(action, {"txn": txn, "collection": collection, "model": "model" in m,
                                  "images": [int(im["id"]) for im in m.get("images", [])],
                                  "deletes": [int(i) for i in m.get("deletes", [])]})
        for b in bundles:
            b.auth = auth
        if self.fault_hook is not None:
            self.fault_hook("before_prepare")
        try:
            self._all(lambda i: self._stubs[i].Prepare(bd.encode(bundles[i]), timeout=self.cfg.timeout_s * 10),
                      fail_fast=False)
        except TriVaultError as exc:
            self._all(lambda i: self._stubs[i].Abort(pb.TxnRequest(txn_id=txn), timeout=10), tolerate=True)
            raise TriVaultError(f"upload aborted, nothing stored: {exc}") from None
        if self.fault_hook is not None:
            self.fault_hook("after_prepare")
        try:
            self._stubs[0].Commit(pb.TxnRequest(txn_id=txn), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # server 0 refused: the decision is abort
                self._all(lambda i: self._stubs[i].Abort(pb.TxnRequest(txn_id=txn), timeout=10), servers=(1, 2),
                          tolerate=True)
                raise TriVaultError(f"upload not committed ({_rpc_error(0, exc)}); nothing stored") from None
            # Server 0 may or may not have committed before failing: servers 1 and 2 follow
            # whatever it decided once it is back (never abort them here).
            raise TriVaultError(f"upload outcome unknown ({_rpc_error(0, exc)}): servers 1 and 2 follow server "
                                f"0's decision when it is back; retry the upload after checking info()") from None
        try:
            self._all(lambda i: self._stubs[i].Commit(pb.TxnRequest(txn_id=txn), timeout=30), servers=(1, 2))
        except TriVaultError as exc:
            raise PartialCommitError(f"upload committed by server 0; {exc}; that server completes it when it is back")

    # ---- model owner ----------------------------------------------------------------
    def register_model(self, model: nn.Module, resolution: int | None = None) -> dict:
        """Split ``model`` into RSS weight pairs and register it on the three servers; returns its arch."""
        from .model import describe_model, split_model

        if self.info()["image_ids"]:
            raise TriVaultError("images are already stored with the current model: delete them before replacing it")
        res = int(resolution or getattr(model, "resolution", 224))
        arch, per_server = split_model(model, [3, res, res], DEFAULT_FP)
        txn = str(uuid.uuid4())
        bundles = []
        for i in range(3):
            tensors: dict[str, torch.Tensor] = {}
            for name, pair in per_server[i].items():
                tensors.update(bd.pairs_to_tensors(f"model/{name}", pair))
            bundles.append(bd.Bundle("txn", txn, {"model": {"arch": arch}}, tensors))
        self._transact(bundles)
        recipe = getattr(model, "recipe", None)
        if recipe is not None:
            self.owner.save_recipe(arch, recipe)
        else:
            self.owner.save_model(arch, describe_model(model, [3, res, res])[1])
        self._module = model
        return arch

    def extract_features(self, images: Sequence[Image.Image], batch: int = 16) -> np.ndarray:
        """Owner-side plaintext features of decoded images with the registered model."""
        from .preprocess import preprocess_batch

        module = self._module
        if module is None and (recipe := self.owner.load_recipe()) is not None:
            from .recipes import from_recipe

            module = self._module = from_recipe(recipe)
        saved = None if module is not None else self.owner.load_model()
        if module is None and saved is None:
            raise TriVaultError("no model registered from this owner directory: call register_model first")
        res = int(self.owner.load_arch()["input_shape"][-1])
        out = []
        for s in tqdm(range(0, len(images), batch), desc="features", unit="batch", disable=not self.progress):
            x = preprocess_batch(list(images[s:s + batch]), res)
            with torch.no_grad():
                if module is not None:
                    out.append(module.eval()(x).float().numpy())
                else:
                    from .model import plain_forward

                    out.append(plain_forward(saved[0], saved[1], x).float().numpy())
        return np.concatenate(out).astype(np.float32)

    # ---- index --------------------------------------------------------------------
    def _index_bundles(self, feats: np.ndarray, ids: np.ndarray, base_version: int,
                       new_feats: np.ndarray | None = None, new_ids: np.ndarray | None = None,
                       deletes: Sequence[int] = ()) -> tuple[dict, list[dict], Callable[[int], None]]:
        """Public index meta, one dict of tensors per server, and a callback to run once committed.

        Inserts and deletes re-share only the touched records (``share_update``) when the
        owner's PlainIndex matches the servers' version; otherwise (first upload, size
        doubled since the last build, or a bucket overflowed) the index is rebuilt and
        re-shared. An index with no items is an IVF index whose buckets hold only padding.
        """
        d = int(feats.shape[1])
        got = self.owner.load_plain_index(base_version)
        if got is not None and len(ids) < 2 * got[1]:
            plain, built_n = got
            upd = plain.delete(np.asarray(deletes, dtype=np.int64)) if len(deletes) else \
                plain.insert(new_feats, new_ids)
            if not upd.rebuilt:
                ups = share_update(plain, upd, DEFAULT_FP)
                imeta = {"format": "ivf", "update": True, "base_version": base_version,
                         "n_centroids": int(plain.n_centroids), "bucket_size": int(plain.bucket_size), "dim": d}
                per = [{"slots": u.slots, "records.lo": u.records[0], "records.hi": u.records[1],
                        "n_items": torch.tensor(int(u.n_items), dtype=torch.int64)} for u in ups]
                return imeta, per, lambda v: self.owner.save_plain_index(plain, v, built_n)
        elif len(ids):
            n_centroids = max(1, min(int(round(np.sqrt(len(ids)))), len(ids) // 39))  # faiss: >= 39 per centroid
            plain = build_index(feats.astype(np.float32), ids.astype(np.int64), n_centroids)
            built_n = len(ids)
        else:  # no items: one centroid at the origin, one padding slot
            plain = PlainIndex(np.zeros((1, d), np.float32), np.zeros((1, 1, d), np.float32),
                               np.full((1, 1), PAD_ID, np.int64), id_bits=8)
            built_n = 0
        shares = share_index(plain, DEFAULT_FP)
        imeta = {"format": "ivf", "base_version": base_version, "n_centroids": int(plain.n_centroids),
                 "bucket_size": int(plain.bucket_size), "dim": d}
        return imeta, [s.to_tensors() for s in shares], lambda v: self.owner.save_plain_index(plain, v, built_n)

    # ---- data owner ---------------------------------------------------------------
    def upload(self, images: Sequence[ImageInput], labels: Sequence[str] | None = None, deid: bool = False,
               eps: float = 1.0, collection: str = "default") -> list[int]:
        """Encrypt and upload images with their features' shares; returns the new image ids."""
        if labels is not None and len(labels) != len(images):
            raise ValueError("labels must match images one to one")
        t0 = time.perf_counter()
        info = self.info()
        loaded = [load_image_bytes(x) for x in tqdm(images, desc="read", unit="img", disable=not self.progress)]
        feats_new = self.extract_features([im for _, im in loaded])
        old_feats, old_ids = self.owner.load_features()
        if sorted(old_ids.tolist()) != sorted(info["image_ids"]):
            raise TriVaultError("this owner directory does not match the servers' images")
        start = max(info["image_ids"], default=-1) + 1
        new_ids = np.arange(start, start + len(loaded), dtype=np.int64)
        feats = feats_new if old_feats is None else np.concatenate([old_feats, feats_new])
        ids = np.concatenate([old_ids, new_ids])
        txn = str(uuid.uuid4())
        per_server: list[dict[str, torch.Tensor]] = [{}, {}, {}]
        metas = []
        deid_fn = _deid_function() if deid else None
        for n, ((data, im), i) in enumerate(tqdm(list(zip(loaded, new_ids.tolist())), desc="encrypt", unit="img",
                                                 disable=not self.progress)):
            copies = [(False, data)]
            if deid_fn is not None:
                copies.append((True, deid_fn(np.asarray(im), eps)))
            for is_deid, blob in copies:
                key = crypto.new_key()
                ct = torch.frombuffer(bytearray(crypto.encrypt(key, blob, crypto.image_aad(i, is_deid))),
                                      dtype=torch.uint8)
                kp = split_key(key)
                sfx = ".deid" if is_deid else ""
                rec = seal_record(sign_image(self.identity, i, blob, "deid" if is_deid else "orig"), key,
                                  crypto.encrypt)
                for s in range(3):
                    per_server[s][f"img/{i}{sfx}"] = ct
                    per_server[s][f"rec/{i}{sfx}"] = torch.frombuffer(bytearray(rec), dtype=torch.uint8)
                    per_server[s].update(bd.pairs_to_tensors(f"key/{i}{sfx}", kp[s]))
            metas.append({"id": i, "label": None if labels is None else str(labels[n]), "deid": deid_fn is not None})
        imeta, itensors, after = self._index_bundles(feats, ids, info["index_version"], feats_new, new_ids)
        bundles = []
        for s in range(3):
            t = dict(per_server[s])
            t.update({f"index/{k}": v for k, v in itensors[s].items()})
            bundles.append(bd.Bundle("txn", txn, {"images": metas, "index": imeta}, t))
        t1 = time.perf_counter()
        try:
            self._transact(bundles, "upload", collection)
        except PartialCommitError:
            self.owner.save_features(feats, ids)
            after(info["index_version"] + 1)
            raise
        self.owner.save_features(feats, ids)
        after(info["index_version"] + 1)
        t2 = time.perf_counter()
        self.last_upload_stats = {
            "n": len(loaded), "seconds": t2 - t0, "transfer_seconds": t2 - t1,
            "bytes_per_server": float(bundles[0].nbytes()), "index": "update" if imeta.get("update") else "full",
            "index_bytes_per_server": float(sum(v.numel() * v.element_size() for v in itensors[0].values()))}
        return new_ids.tolist()

    def delete(self, image_id: int) -> None:
        """Delete an image everywhere: ciphertexts, key shares and its index entry."""
        info = self.info()
        if int(image_id) not in info["image_ids"]:
            raise TriVaultError(f"unknown image id {image_id}")
        feats, ids = self.owner.load_features()
        keep = ids != int(image_id)
        feats, ids = feats[keep], ids[keep]
        txn = str(uuid.uuid4())
        meta: dict[str, Any] = {"deletes": [int(image_id)]}
        meta["index"], itensors, after = self._index_bundles(feats, ids, info["index_version"],
                                                             deletes=[int(image_id)])
        try:
            self._transact([bd.Bundle("txn", txn, meta, {f"index/{k}": v for k, v in itensors[s].items()})
                            for s in range(3)], "delete")
        except PartialCommitError:
            self.owner.save_features(feats if len(ids) else None, ids)
            after(info["index_version"] + 1)
            raise
        self.owner.save_features(feats if len(ids) else None, ids)
        after(info["index_version"] + 1)

    # ---- querier ------------------------------------------------------------------
    def search(self, image: ImageInput, k: int = 10, nprobe: int = 1, collection: str = "default",
               purpose: str | None = None) -> SearchResult:
        """Secure top-k search for one query image."""
        from .preprocess import preprocess

        info = self.info()
        if not info.get("arch"):
            raise TriVaultError("no model registered on the servers")
        res = int(info["arch"]["input_shape"][-1])
        _, im = load_image_bytes(image)
        x = preprocess(im, res).unsqueeze(0).to(torch.float64)
        if not info["image_ids"]:
            raise TriVaultError("no images uploaded yet")
        pairs = share_fixed(x, DEFAULT_FP)
        sid = str(uuid.uuid4())
        meta = {"k": int(k), "nprobe": int(nprobe), "input": "image", "index_version": info["index_version"],
                "model_version": info["model_version"]}
        t0 = time.perf_counter()
        auth = self.sign("search", {"session": sid, "collection": collection, "purpose": purpose, "k": int(k)})

        def one(i: int) -> bd.Bundle:
            b = bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pairs[i]), auth)
            return bd.decode(self._stubs[i].Search(bd.encode(b), timeout=self.cfg.timeout_s))

        with tqdm(total=1, desc="secure search", unit="query", disable=not self.progress, leave=False) as bar:
            outs = self._all(one)
            bar.update(1)
        secs = time.perf_counter() - t0
        f = DEFAULT_FP.frac_bits
        dist = reconstruct([bd.tensors_to_pair(o.tensors, "dist") for o in outs]).to(torch.float64) / (1 << f)
        # checked reconstruction: a server that skipped the masking of hidden ids is named here
        ids = reconstruct([bd.tensors_to_pair(o.tensors, "ids") for o in outs], check=True)[0]
        keep = [j for j, v in enumerate(ids.tolist()) if v >= 0]  # -1: padding or hidden by policy
        ids, d = [int(ids[j]) for j in keep], [float(dist[0][j]) for j in keep]
        return SearchResult(ids, d, secs, max(o.meta["seconds"] for o in outs), [o.meta["comm"] for o in outs],
                            outs[0].meta["result"])

    def retrieve(self, image_id: int, deid: bool = False, purpose: str | None = None) -> Retrieved:
        """Fetch, decrypt and verify an image the policy releases to this user.

        One signed request goes to all three servers; each evaluates the policy itself and
        seals its key-share pair to this user's REGISTERED X25519 key. With all three pairs
        the shares are cross-checked (a lying server is named: ``KeyDeliveryError.suspects``);
        with two, AES-GCM on the ciphertext catches a wrong key. The owner's signed hash
        is then verified (``TamperError`` on mismatch). ``Retrieved.marked()`` is the
        watermarked copy naming this user."""
        auth = self.sign("retrieve", {"image_id": int(image_id), "deid": bool(deid), "purpose": purpose})
        req = pb.ImageRequest(image_id=int(image_id), deid=deid, auth=auth)
        errors: list[str] = [""] * 3

        def one(i: int) -> bd.Bundle | None:
            try:
                return bd.decode(self._stubs[i].Retrieve(req, timeout=self.cfg.timeout_s))
            except grpc.RpcError as exc:
                errors[i] = _rpc_error(i, exc)
                return None

        outs = self._all(one)
        kinds = {i: o.meta.get("kind") for i, o in enumerate(outs) if o is not None}
        best = max(("orig", "deid"), key=lambda kd: sum(v == kd for v in kinds.values()))
        got = [i for i, kd in kinds.items() if kd == best]
        if len(got) < 2:
            why = "; ".join(e for e in errors if e) or f"the servers disagree on which copy to release ({kinds})"
            raise TriVaultError(f"image {image_id}: fewer than two servers release a key: {why}")
        is_deid = best == "deid"
        sealed = [bytes(outs[i].tensors["sealed"].numpy().tobytes()) if i in got else None for i in range(3)]
        key = recover_key(sealed, self.identity.kex_key, int(image_id), is_deid)  # KeyDeliveryError names suspects
        ct = bytes(outs[got[0]].tensors["ciphertext"].numpy().tobytes())
        try:
            data = crypto.decrypt(key, ct, crypto.image_aad(int(image_id), is_deid))
        except ValueError:
            raise KeyDeliveryError(f"image {image_id}: the key does not decrypt the ciphertext from server {got[0]} "
                                   f"(a server sent a wrong share or ciphertext)", tuple(got)) from None
        verified = False
        rec = outs[got[0]].tensors.get("record")
        kind = "deid" if is_deid else "orig"
        if rec is not None:
            record = open_record(bytes(rec.numpy().tobytes()), key, int(image_id), kind, crypto.decrypt)
            verify_image(self.owner_identity(), int(image_id), data, record, kind)  # TamperError
            verified = True
        return Retrieved(int(image_id), data, outs[got[0]].meta.get("label"), kind, self.identity.user_id, verified)


def _deid_function() -> Callable[[np.ndarray, float], bytes]:
    """``client.deid.deidentify`` wrapped to return PNG bytes; clear error if not installed."""
    try:
        from .deid import deidentify  # type: ignore[attr-defined]
    except ImportError as exc:
        raise TriVaultError(f"de-identification is not available: {exc}") from None

    def run(arr: np.ndarray, eps: float) -> bytes:
        res = deidentify(arr, eps)
        out = next((getattr(res, n) for n in ("image", "deidentified", "array", "output")
                    if isinstance(getattr(res, n, None), np.ndarray)), None)
        if out is None:
            raise TriVaultError("deidentify() returned no image array")
        # The privacy accounting (eps per region, total by sequential composition) travels
        # INSIDE the encrypted copy as a PNG text chunk: region boxes are not for servers.
        info = PngInfo()
        info.add_text(DEID_METADATA_KEY, json.dumps(getattr(res, "metadata", {}), default=str))
        buf = io.BytesIO()
        Image.fromarray(np.asarray(out, dtype=np.uint8)).save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()

    return run
