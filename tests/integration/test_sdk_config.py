"""A client config with a missing or wrong setting gives one clear ConfigError naming the file
and the setting (never a TypeError traceback); a good one connects to three real servers."""

from __future__ import annotations

import pytest

from client.config import ClientConfig, ConfigError
from client.errors import TriVaultError
from client.sdk import Client


def test_bad_client_configs_are_named(cluster, tmp_path):
    good = cluster.client_config.read_text()
    cfg = tmp_path / "client.toml"
    with pytest.raises(ConfigError, match=f"no client config at {cfg}"):
        ClientConfig.load(cfg)
    cases = {
        "\n".join(ln for ln in good.splitlines() if not ln.startswith("ca ")): r"missing 'ca' \(the deployment CA",
        good.replace('ca = "', 'ca = "nowhere/'): "ca = .*no such file",
        "\n".join(ln for ln in good.splitlines() if not ln.startswith("servers")): "exactly three server addresses",
        good + "\n[broken": "not a readable TOML file",
    }
    for text, why in cases.items():
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=why) as e:
            ClientConfig.load(cfg)
        assert str(cfg) in str(e.value) and isinstance(e.value, TriVaultError)
    cfg.write_text(good)
    with Client(cfg) as c:  # the same file, intact, works
        assert c.info()["image_ids"]
