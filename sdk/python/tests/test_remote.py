"""Remote serving's configuration: flags, else environment variables."""

import pytest

from larkway._remote import RemoteConfig, parse_remote_config


def test_not_remote_without_listen():
    assert parse_remote_config([], {}) is None


def test_flags_override_environment():
    env = {"LARKWAY_LISTEN": ":1", "LARKWAY_TLS_CERT": "env.crt", "LARKWAY_TLS_KEY": "env.key",
           "LARKWAY_CLIENT_CA": "env-ca.crt", "LARKWAY_STATE_ADDRESS": "core:7444"}
    assert parse_remote_config(["--listen", ":7443", "--tls-cert", "p.crt"], env) == RemoteConfig(
        ":7443", "p.crt", "env.key", "env-ca.crt", "core:7444")


def test_environment_alone():
    env = {"LARKWAY_LISTEN": ":7443", "LARKWAY_TLS_CERT": "c", "LARKWAY_TLS_KEY": "k", "LARKWAY_CLIENT_CA": "ca"}
    assert parse_remote_config([], env) == RemoteConfig(":7443", "c", "k", "ca", "")


def test_listen_without_tls_is_refused():
    with pytest.raises(ValueError, match="mutual TLS"):
        parse_remote_config(["--listen", ":7443", "--tls-cert", "c"], {})
