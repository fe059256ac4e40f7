"""Kafka settings from ts_salobj's environment variables: values, merge order, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols import kafka_config as kc

BASE = {
    "LSST_TOPIC_SUBNAME": "sal",
    "LSST_KAFKA_BROKER_ADDR": "kafka.example.org:9094",
    "LSST_SCHEMA_REGISTRY_URL": "http://registry.example.org:8081/",
}


def test_plain_connection_with_ts_salobj_defaults() -> None:
    s = kc.settings_from_env(BASE)
    assert (s.subname, s.broker_addr, s.registry_url, s.replication_factor) == (
        "sal", "kafka.example.org:9094", "http://registry.example.org:8081", 1,
    )  # fmt: skip
    assert not s.embedded
    assert s.admin_config() == {"bootstrap.servers": "kafka.example.org:9094"}
    assert s.producer_config() == {"bootstrap.servers": "kafka.example.org:9094", "acks": "1", "queue.buffering.max.ms": 0}
    assert s.consumer_config("hs-LATISS") == {
        "group.id": "hs-LATISS",
        "allow.auto.create.topics": False,
        "auto.offset.reset": "earliest",
        "bootstrap.servers": "kafka.example.org:9094",
    }


def test_sasl_only_with_both_and_defaults_as_ts_salobj() -> None:
    s = kc.settings_from_env({**BASE, kc.USERNAME: "hs", kc.PASSWORD: "s3cret"})
    assert s.client["security.protocol"] == "SASL_PLAINTEXT" and s.client["sasl.mechanism"] == "SCRAM-SHA-512"
    assert s.client["sasl.username"] == "hs" and s.consumer_config("g")["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(s.redacted())
    s = kc.settings_from_env({**BASE, kc.USERNAME: "hs", kc.PASSWORD: "p", kc.PROTOCOL: "SASL_SSL", kc.MECHANISM: "PLAIN"})
    assert (s.client["security.protocol"], s.client["sasl.mechanism"]) == ("SASL_SSL", "PLAIN")
    # protocol and mechanism alone do not turn SASL on (ts_salobj reads them only with the pair)
    assert "security.protocol" not in kc.settings_from_env({**BASE, kc.PROTOCOL: "SASL_SSL"}).client


def test_files_merged_in_ts_salobj_order(tmp_path: Path) -> None:
    broker = kc.write_settings_file(tmp_path / "b.yaml", {"client.id": "hs", "acks": "all", "session.timeout.ms": 9000})
    consumer = kc.write_settings_file(tmp_path / "c.yaml", {"session.timeout.ms": 1000, "auto.offset.reset": "latest"})
    producer = kc.write_settings_file(tmp_path / "p.yaml", {"batch.num.messages": 1, "acks": "0", "queue.buffering.max.ms": 5})
    env = {**BASE, kc.BROKER_FILE: str(broker), kc.CONSUMER_FILE: str(consumer), kc.PRODUCER_FILE: str(producer), kc.ACKS: "-1"}
    s = kc.settings_from_env(env)
    c = s.consumer_config("g", **{"enable.auto.commit": False, "auto.offset.reset": "none"})
    # consumer file over our defaults and extras, broker-client file over everything
    assert c["auto.offset.reset"] == "latest" and c["session.timeout.ms"] == 9000 and c["client.id"] == "hs"
    assert c["enable.auto.commit"] is False and c["group.id"] == "g"
    p = s.producer_config()
    assert p["batch.num.messages"] == 1 and p["queue.buffering.max.ms"] == 5
    assert p["acks"] == "all"  # producer file said 0 over the variable's -1, then the broker-client file won


def test_embedded_when_no_broker_is_named() -> None:
    s = kc.settings_from_env({"LSST_TOPIC_SUBNAME": "test"})
    assert s.embedded and s.broker_addr is None and s.registry_url is None
    assert kc.settings_from_env({}, default_subname="hs").subname == "hs"


def test_replication_and_acks() -> None:
    s = kc.settings_from_env({**BASE, kc.REPLICATION: "3", kc.ACKS: "all"})
    assert s.replication_factor == 3 and s.producer_config()["acks"] == "all"


def test_broker_list_and_ipv6() -> None:
    s = kc.settings_from_env({**BASE, kc.BROKER: "a:1, b.example:9092,[::1]:9093"})
    assert s.broker_addr == "a:1,b.example:9092,[::1]:9093"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"LSST_TOPIC_SUBNAME": None}, "LSST_TOPIC_SUBNAME is not set"),
        ({"LSST_TOPIC_SUBNAME": "a/b"}, "LSST_TOPIC_SUBNAME='a/b'"),
        ({"LSST_TOPIC_SUBNAME": "a..b"}, "LSST_TOPIC_SUBNAME='a..b'"),
        ({kc.BROKER: "kafka"}, "expected host:port"),
        ({kc.BROKER: "kafka:0"}, "port 1-65535"),
        ({kc.BROKER: "kafka:99999"}, "expected host:port"),
        ({kc.BROKER: "a:1,,b:2"}, "got ''"),
        ({kc.BROKER: "bad host:1"}, "expected host:port"),
        ({kc.REGISTRY: None}, "LSST_KAFKA_BROKER_ADDR is set but LSST_SCHEMA_REGISTRY_URL is not"),
        ({kc.BROKER: None}, "LSST_SCHEMA_REGISTRY_URL is set but LSST_KAFKA_BROKER_ADDR is not"),
        ({kc.REGISTRY: "ftp://x"}, "expected http(s)://"),
        ({kc.REGISTRY: "http://x:notaport"}, "LSST_SCHEMA_REGISTRY_URL='http://x:notaport'"),
        ({kc.USERNAME: "hs"}, "LSST_KAFKA_SECURITY_USERNAME is set but LSST_KAFKA_SECURITY_PASSWORD is not"),
        ({kc.PASSWORD: "pw"}, "LSST_KAFKA_SECURITY_PASSWORD is set but LSST_KAFKA_SECURITY_USERNAME is not"),
        ({kc.USERNAME: "", kc.PASSWORD: "pw"}, "USERNAME is empty"),
        ({kc.USERNAME: "u", kc.PASSWORD: "pw", kc.PROTOCOL: "TLS"}, "LSST_KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({kc.USERNAME: "u", kc.PASSWORD: "pw", kc.MECHANISM: "MD5"}, "LSST_KAFKA_SECURITY_MECHANISM='MD5'"),
        ({kc.REPLICATION: "0"}, "LSST_KAFKA_REPLICATION_FACTOR='0'"),
        ({kc.REPLICATION: "three"}, "LSST_KAFKA_REPLICATION_FACTOR='three'"),
        ({kc.ACKS: "some"}, "LSST_KAFKA_PRODUCER_WAIT_ACKS='some'"),
        ({kc.ACKS: "-2"}, "LSST_KAFKA_PRODUCER_WAIT_ACKS='-2'"),
        ({kc.CONSUMER_FILE: ""}, "LSST_KAFKA_CONSUMER_CONFIGURATION is set but empty"),
    ],
)
def test_bad_variable_is_named(change: dict, message: str) -> None:
    env = {**BASE, **change}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(kc.KafkaConfigError) as err:
        kc.settings_from_env(env)
    assert message in str(err.value)
    assert "pw" not in str(err.value).replace("PASSWORD", "")


@pytest.mark.parametrize(
    "text,message",
    [
        ("- a\n- b\n", "expected a mapping"),
        ("a: [1, 2]\n", "a must be a string, number or boolean"),
        ("a: null\n", "a must be a string"),
        ("a: {b: 1}\n", "a must be a string"),
        ("1: x\n", "setting name 1 is not a string"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_settings_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "producer.yaml"
    path.write_text(text)
    with pytest.raises(kc.KafkaConfigError) as err:
        kc.settings_from_env({**BASE, kc.PRODUCER_FILE: str(path)})
    assert str(err.value).startswith(f"LSST_KAFKA_PRODUCER_CONFIGURATION={path}: ") and message in str(err.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(kc.KafkaConfigError, match="LSST_KAFKA_BROKER_CLIENT_CONFIGURATION=.*: no such file"):
        kc.settings_from_env({**BASE, kc.BROKER_FILE: str(tmp_path / "none.yaml")})
    with pytest.raises(kc.KafkaConfigError, match="cannot read it"):
        kc.settings_from_env({**BASE, kc.CONSUMER_FILE: str(tmp_path)})  # a folder


def test_empty_file_is_no_settings(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert kc.settings_from_env({**BASE, kc.CONSUMER_FILE: str(path)}).consumer_defaults == {}
