"""Client settings from the SDK's environment variables: bad input names the variable and the
fix, and never echoes the secret."""

from __future__ import annotations

import pytest

from xmtp_supervisor.xmtp_adapter import ClientSettings, ConfigError

KEY = "0x" + "ab" * 32
DB_KEY = "cd" * 32


def test_local_needs_only_a_wallet_key() -> None:
    s = ClientSettings.from_env({"XMTP_WALLET_KEY": KEY, "XMTP_ENV": "local"})
    assert (s.env, s.db_directory, s.db_path()) == ("local", None, None)


def test_default_env_is_dev_and_needs_persistence() -> None:
    with pytest.raises(ConfigError, match="XMTP_DB_DIRECTORY and XMTP_DB_ENCRYPTION_KEY"):
        ClientSettings.from_env({"XMTP_WALLET_KEY": KEY})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"XMTP_WALLET_KEY": "0x1234"}, "XMTP_WALLET_KEY: expected a private key"),
        ({"XMTP_WALLET_KEY": KEY, "XMTP_ENV": "mainnet"}, "XMTP_ENV: must be local, dev or"),
        ({"XMTP_WALLET_KEY": KEY, "XMTP_ENV": "local", "XMTP_DB_ENCRYPTION_KEY": "zz"},
         "XMTP_DB_ENCRYPTION_KEY: expected 32 bytes"),
        ({"XMTP_WALLET_KEY": KEY, "XMTP_ENV": "production", "XMTP_DB_DIRECTORY": "/tmp/x"},
         "XMTP_DB_ENCRYPTION_KEY not set"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClientSettings.from_env(env)
    assert message in str(info.value)
    for name in ("XMTP_WALLET_KEY", "XMTP_DB_ENCRYPTION_KEY"):  # secrets are never echoed
        if name in env:
            assert env[name] not in str(info.value)


def test_persistent_db_path_is_per_env_and_address(tmp_path: object) -> None:
    s = ClientSettings.from_env({"XMTP_WALLET_KEY": KEY, "XMTP_ENV": "production",
                                 "XMTP_DB_DIRECTORY": str(tmp_path),
                                 "XMTP_DB_ENCRYPTION_KEY": DB_KEY})
    path = s.db_path()
    assert path is not None and path.startswith(str(tmp_path))
    assert "xmtp-production-0x" in path and path.endswith(".db3")
