"""``Client.ls()`` lists the owner's images from its local catalog, else from the encrypted
metadata (servers never see a name in clear), following the servers' ids; the SDK prints
nothing and shows progress bars only when asked (``progress=True``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from client.catalog import ImageEntry
from client.config import ClientConfig
from client.images import load_image_bytes
from client.owner_ops import entry_name
from client.sdk import Client


def test_ls_lists_the_owners_images_from_local_state(cluster, client):
    entries = client.ls()
    assert [e.id for e in entries] == client.info()["image_ids"]  # other modules may have added some
    names = {e.id: e.name for e in entries}
    assert [names[i] for i in range(12)] == [f"img{i}" for i in range(12)]  # the fixture's uploads
    assert {e.collection for e in entries} == {"default"}
    for i in range(12):  # size and hash: of the uploaded file's bytes (arrays are sent as PNG)
        data = load_image_bytes(cluster.images[i])[0]
        e = next(e for e in entries if e.id == i)
        assert e.size == len(data) and e.sha256 == hashlib.sha256(data).hexdigest()
    assert client.ls(local_only=True) == entries
    assert client.ls(collection="other") == []
    # the servers only know ids: a catalog is never sent to them
    assert "img3" not in str(client.info())


def test_ls_without_local_state_reads_the_encrypted_names(cluster, tmp_path):
    cfg = replace(ClientConfig.load(cluster.client_config), owner_dir=tmp_path / "elsewhere")
    with Client(cfg, identity=cluster.owner_identity_dir) as c:  # no catalog here: names come encrypted
        got = c.ls()
        assert [e.id for e in got] == c.info()["image_ids"]
        assert got[:12] == [ImageEntry(i, f"img{i}", "default", None) for i in range(12)]
        assert c.ls(local_only=True) == []


def test_entry_names():
    assert entry_name("photos/cat.jpg", None) == "cat.jpg"
    assert entry_name(np.zeros((4, 4, 3), np.uint8), None) is None
    assert entry_name("photos/cat.jpg", "my cat") == "my cat"


def test_sdk_is_quiet_unless_progress_is_asked_for(cluster, capfd):
    with Client(cluster.client_config) as c:
        assert c.progress is False
        c.search_results(cluster.images[2], k=2)
        c.ls()
        c.extract_features([cluster.images[0]])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with Client(cluster.client_config, progress=True) as c:
        c.extract_features([cluster.images[0]])
        c.search_results(cluster.images[2], k=2)
    out, err = capfd.readouterr()
    assert out == "" and "features" in err and "secure search" in err  # tqdm writes to stderr
