"""Identities and access control: ``keys new``, ``bootstrap``, ``register``, ``grant``, ``revoke``,
``audit`` (the owner's merged, cross-checked audit with filters and pages), ``trace``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from .common import (
    CONFIG_OPT,
    IDENTITY_OPT,
    JSON_OPT,
    console,
    fail,
    make_client,
    note,
    print_json,
    sdk_errors,
)

keys_app = typer.Typer(help="User identities (Ed25519 signing + X25519 key delivery).", no_args_is_help=True)
USER_ARG = typer.Argument(..., help="user id, or the user's identity.json (or its folder)")


@keys_app.command("new")
def keys_new(out: Path = typer.Option(Path("trivault-identity"), "--out", "-o", help="folder for the key files"),
             role: str | None = typer.Option(None, "--role", help="claimed role (the owner attests it)"),
             org: str | None = typer.Option(None, "--org", help="claimed organisation"),
             passphrase: bool = typer.Option(False, "--passphrase", help="encrypt the private keys (prompted)"),
             as_json: bool = JSON_OPT) -> None:
    """Create an identity in OUT; its public OUT/identity.json is what the owner registers."""
    from wire.identity import PublicIdentity

    from ..identity import Identity

    attrs = {k: v for k, v in (("role", role), ("organisation", org)) if v}
    pw = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True).encode() if passphrase else None
    with sdk_errors(("exists", "choose another --out, or keep using the identity already there")):
        Identity.create(attrs).save(out, pw)
    pub = PublicIdentity.from_json((out / "identity.json").read_text())
    if as_json:
        print_json({"user_id": pub.user_id, "bundle": str(out / "identity.json"), "claims": dict(pub.attributes)})
        return
    console.print(f"user id {pub.user_id}; private keys in {out} (mode 0600)")
    console.print(f"public bundle {out / 'identity.json'}: the owner runs `trivault register {out / 'identity.json'}`")


def load_bundle(path: Path):
    """A public identity from ``identity.json`` or a folder holding it."""
    from wire.identity import PublicIdentity

    p = path / "identity.json" if path.is_dir() else path
    with sdk_errors():
        return PublicIdentity.from_json(p.read_text())


def user_id(user: str) -> str:
    """A user id given directly, or read from an identity bundle path."""
    p = Path(user)
    return load_bundle(p).user_id if p.exists() else user


def parse_attrs(pairs: list[str]) -> dict[str, str]:
    """``key=value`` pairs; a pair without ``=`` is a usage error."""
    out = {}
    for a in pairs:
        key, sep, value = a.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{a!r} is not key=value (e.g. --attr role=analyst)", param_hint="--attr")
        out[key.strip()] = value.strip()
    return out


@keys_app.command("show")
def keys_show(bundle: Path = typer.Argument(..., exists=True, help="identity.json or its folder"),
              as_json: bool = JSON_OPT) -> None:
    """Print a public identity's user id and claimed attributes."""
    pub = load_bundle(bundle)
    if as_json:
        print_json({"user_id": pub.user_id, "attributes": dict(pub.attributes)})
    else:
        console.print(f"user id {pub.user_id}; claims {dict(pub.attributes)}")


def bootstrap(identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT) -> None:
    """First use of servers started without owner_identity: make your identity their owner."""
    with sdk_errors(), make_client(config, identity) as c:
        uid = c.bootstrap()
    console.print(f"owner of this deployment: {uid}")


def register(bundle: Path = typer.Argument(..., exists=True, help="a user's identity.json (or its folder)"),
             attr: list[str] = typer.Option([], "--attr", help="attribute key=value you attest (repeatable; "
                                                               "adds to or overrides the bundle's claims)"),
             ignore_claims: bool = typer.Option(False, "--ignore-claims", help="attest only the --attr values"),
             identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT) -> None:
    """Owner: register a user, attesting the role/org claimed in their bundle (and any --attr)."""
    extra = parse_attrs(attr)
    pub = load_bundle(bundle)
    attrs = {**({} if ignore_claims else dict(pub.attributes)), **extra}
    with sdk_errors(), make_client(config, identity) as c:
        uid = c.register_user(pub, attrs)
    console.print(f"registered {uid} with attributes {attrs or '{}'}")


def _expires(text: str | None) -> float | None:
    if not text:
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] in unit and text[:-1].isdigit():
        return time.time() + int(text[:-1]) * unit[text[-1]]
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use e.g. 30m, 7d or an ISO date", param_hint="--expires") from None


def grant(user: str = USER_ARG,
          collection: str = typer.Argument("default", help="collection"),
          outcome: str = typer.Option("ORIGINAL", "--outcome", help="ORIGINAL | DEIDENTIFIED | NOTHING"),
          expires: str | None = typer.Option(None, "--expires", help="e.g. 30m, 7d, or an ISO date"),
          purpose: list[str] = typer.Option([], "--purpose", help="allowed purpose (repeatable; default any); "
                                                                  "the user passes the same --purpose"),
          image: int | None = typer.Option(None, "--image", help="only this image"),
          identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT) -> None:
    """Owner: grant USER access to COLLECTION (signed; applied by each server)."""
    uid = user_id(user)
    when = _expires(expires)
    with sdk_errors(), make_client(config, identity) as c:
        c.grant(uid, collection, outcome, when, purpose or None, image)
    console.print(f"granted {outcome.upper()} on {collection} to {uid}")
    if purpose:
        note(f"the user must declare --purpose {' or '.join(purpose)} with search and get")
    else:
        note("no --purpose: any declared purpose (or none) is accepted")


def revoke(user: str = USER_ARG,
           collection: str = typer.Argument("default", help="collection"),
           image: int | None = typer.Option(None, "--image", help="only this image"),
           identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT) -> None:
    """Owner: revoke USER on COLLECTION; effective at the next key release on every server."""
    uid = user_id(user)
    with sdk_errors(), make_client(config, identity) as c:
        c.revoke(uid, collection, image)
    console.print(f"revoked {uid} on {collection}")


def _when(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000))


def _target(e, names: dict[int, str | None]) -> str:
    """What an event is about: image id and name, or collection."""
    from ..audit_view import image_of

    img = image_of(e)
    if img is not None:
        return f"image {img}" + (f" {names[img]!r}" if names.get(img) else "")
    if e.detail.get("collection"):
        return f"collection {e.detail['collection']}"
    return str(e.subject)[:24]


def _outcome(e) -> str:
    d = e.detail
    if e.event == "retrieve":
        return f"{d.get('outcome')} ({d.get('kind')})"
    if e.event == "reject":
        return f"refused {e.subject}: {d.get('reason')}"
    if e.event == "grant":
        return f"{d.get('outcome')}" + (f" until {_when(d['expires'])}" if d.get("expires") else "")
    keep = {k: v for k, v in d.items() if k not in ("collection", "image", "attributes")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())[:60]


def audit(user: str | None = typer.Option(None, "--user", help="only entries by or about this user (id, "
                                                                "identity.json, or registered name)"),
          image: int | None = typer.Option(None, "--image", help="only entries about this image id"),
          since: str | None = typer.Option(None, "--since", help="only entries since: 30m, 2h, 7d or an ISO date"),
          limit: int = typer.Option(50, "--limit", min=1, help="entries per page"),
          page: int = typer.Option(1, "--page", min=1, help="page number (1 = newest entries)"),
          identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Owner: who searched, retrieved (with outcome), was refused, granted or revoked on your
    collections, from all three servers merged; verifies the hash chains and that the servers agree."""
    from ..audit_view import page as paginate
    from ..audit_view import parse_since, select

    try:
        since_s = None if since is None else parse_since(since)
    except ValueError:
        raise typer.BadParameter(f"{since!r}: use e.g. 30m, 7d or an ISO date", param_hint="--since") from None
    uid = None if user is None else user_id(user)
    with sdk_errors(), make_client(config, identity) as c:
        view = c.owner_audit()
        users = view.users()
        named = [u for u, a in users.items() if uid is not None and a.get("name") == uid]
        uid = named[0] if uid not in users and len(named) == 1 else uid  # a registered name works too
        chosen = select(view.events, uid, image, since_s)
        rows, pages = paginate(chosen, limit, page)
        ids = sorted({i for e in rows if (i := _image(e)) is not None})
        names = c.image_names(ids) if ids else {}
    div = view.divergence
    if as_json:
        print_json({"ok": view.ok, "servers": view.servers, "suspects": list(div.suspects()),
                    "summary": div.summary(), "total": len(chosen), "page": page, "pages": pages,
                    "entries": [{**e.to_dict(), "user": _who(e.actor, users), "image_name": names.get(_image(e))}
                                for e in rows]})
    else:
        t = Table("time", "event", "user", "target", "outcome / detail", "servers")
        for e in rows:
            t.add_row(_when(e.ts_ms), e.event, _who(e.actor, users), _target(e, names), _outcome(e),
                      ",".join(map(str, e.servers)))
        console.print(t)
        console.print(f"page {page} of {pages} ({len(chosen)} matching entries); servers answering: {view.servers}")
        if view.ok:
            console.print(f"[green]audit OK[/green]: {div.summary()}")
    if not view.ok:
        fail(f"audit divergence (suspects {div.suspects()}): {div.summary()}",
             "a server's log differs from the others: check that server")


def _image(e) -> int | None:
    from ..audit_view import image_of

    return image_of(e)


def _who(uid: str, users: dict[str, dict[str, str]]) -> str:
    from ..audit_view import display_name

    return display_name(uid, users[uid]) if uid in users else uid[:12]


def trace(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a leaked image file"),
          image: int | None = typer.Option(None, "--image", help="the leaked image's id if known (else every image "
                                                                 "of yours is compared)"),
          identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Owner: whom a leaked copy was released to: the recipient's registered name, and the image
    and time of the matching retrieval from your audit on the three servers."""
    from ..audit_view import trace_lookup

    with sdk_errors(), make_client(config, identity) as c:
        found = c.trace(file, image)  # detection: client.trace (the servers' mark on pixel shares)
        if found is None:
            fail("no image of yours matches this file", "pass --image ID if you know which image it is")
        if found.user_id is None:
            fail(f"image {found.image_id}: no recipient's mark is certain (best score {found.score:.1f})",
                 "a heavily altered copy, or released before marks: see `trivault audit --image ID`")
        match = trace_lookup(c.owner_audit(), found.user_id, found.image_id)
        name = c.image_names([found.image_id]).get(found.image_id)
    last = match.retrievals[0] if match.retrievals else None
    if as_json:
        print_json({"file": str(file), "image": found.image_id, "image_name": name, "recipient": found.user_id,
                    "name": match.name, "attributes": match.attributes, "registered": match.registered,
                    "score": found.score, "retrieved_ms": None if last is None else last.ts_ms,
                    "retrievals": [{"ts_ms": e.ts_ms, "time": _when(e.ts_ms), "kind": e.detail.get("kind"),
                                    "servers": list(e.servers)} for e in match.retrievals]})
        return
    what = f"image {found.image_id}" + (f" {name!r}" if name else "")
    who = match.name if found.user_id in match.name else f"{match.name}, user {found.user_id}"
    console.print(f"released to {who} ({what}; mark score {found.score:.1f})")
    if last is None:
        note("no released retrieval of this image by this user in your audit")
    else:
        more = f"; {len(match.retrievals) - 1} earlier" if len(match.retrievals) > 1 else ""
        console.print(f"retrieved at {_when(last.ts_ms)} ({last.detail.get('kind')} copy, logged by servers "
                      f"{','.join(map(str, last.servers))}{more})")


def register_commands(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    app.add_typer(keys_app, name="keys")
    for fn in (bootstrap, register, grant, revoke, audit, trace):
        app.command()(fn)
