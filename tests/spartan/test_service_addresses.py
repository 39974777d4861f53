"""The address settings of presence and history, and what the gateways' channels make of them."""
from __future__ import annotations

import json

import pytest

from spartan.config import ConfigError, load_config
from spartan.rpc.balancing import HISTORY, PRESENCE, service_config
from spartan.service_addresses import AddressError, addresses, channel_target, port_of


@pytest.mark.parametrize(("setting", "target"), [
    ("127.0.0.1:3101", "127.0.0.1:3101"),
    ("presence:3101", "presence:3101"),  # DNS: every address the name resolves to
    ("10.0.0.1:3101, 10.0.0.2:3101", "ipv4:10.0.0.1:3101,10.0.0.2:3101"),
    ("[::1]:3101,[::1]:3111", "ipv6:[::1]:3101,[::1]:3111"),
])
def test_one_address_or_a_list_of_replicas(setting: str, target: str) -> None:
    assert channel_target(setting) == target
    assert port_of(setting) == 3101


@pytest.mark.parametrize(("setting", "says"), [
    ("", "expected host:port or a comma-separated list"),
    ("presence", "expected host:port, got 'presence'"),
    ("presence:0", "expected host:port"),
    ("10.0.0.1:3101,", "expected host:port or a comma-separated list"),
    ("presence-1:3101,presence-2:3101", "a list of addresses must be IP addresses"),
    ("10.0.0.1:3101,[::1]:3101", "all IPv4 or all IPv6"),
])
def test_a_setting_that_names_no_usable_address_says_which_form_works(setting: str, says: str) -> None:
    with pytest.raises(AddressError, match=says.replace("(", r"\(")):
        addresses(setting)


def test_the_config_refuses_a_bad_service_address_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARTAN_SERVICES__HISTORY", "history-a:3102,history-b:3102")
    with pytest.raises(ConfigError, match=r"^services\.history: a list of addresses must be IP addresses"):
        load_config(None)


def test_only_calls_the_proto_marks_safe_are_retried_and_calls_are_balanced_round_robin() -> None:
    for service in (PRESENCE, HISTORY):
        config = json.loads(service_config(service))
        assert config["loadBalancingConfig"] == [{"round_robin": {}}]
        [method_config] = config["methodConfig"]
        assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    retried = {name["method"] for name in json.loads(service_config(PRESENCE))["methodConfig"][0]["name"]}
    # Reads, leases (a set member with a deadline) and a prekey (the same value written again) may run twice;
    # a chat request, a key registration, a reset or a group change must not, so they are not retried.
    assert retried == {"Connect", "Renew", "Disconnect", "ListUsers", "GroupsOf", "PendingRequests", "GetKeys",
                       "GetGroup", "PutPrekey"}
    assert {name["method"] for name in json.loads(service_config(HISTORY))["methodConfig"][0]["name"]} == {"Read"}


def test_services_close_old_connections_when_asked_so_gateways_find_new_replicas() -> None:
    from spartan.rpc.server import server_options

    config = load_config(None, env={"SPARTAN_SERVICES__MAX_CONNECTION_AGE_SECONDS": "300"})
    internal = dict(server_options(config, public=False))
    assert internal["grpc.max_connection_age_ms"] == 300_000
    # Calls on a closing connection finish first: the grace covers the longest call (its deadline).
    assert internal["grpc.max_connection_age_grace_ms"] > config.services.call_timeout_seconds * 1000
    assert "grpc.max_connection_age_ms" not in dict(server_options(load_config(None, env={}), public=False))
