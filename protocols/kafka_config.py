"""Kafka connection settings from ts_salobj's environment variables, validated.

An instance joins the observatory's Kafka bus with the very variables ts_salobj 8 reads, so one
deployment environment serves both: ``LSST_TOPIC_SUBNAME``, ``LSST_KAFKA_BROKER_ADDR``,
``LSST_SCHEMA_REGISTRY_URL``, ``LSST_KAFKA_SECURITY_USERNAME``/``_PASSWORD`` (SASL only when both are
set; ``LSST_KAFKA_SECURITY_PROTOCOL``, ``LSST_KAFKA_SECURITY_MECHANISM``),
``LSST_KAFKA_REPLICATION_FACTOR``, ``LSST_KAFKA_PRODUCER_WAIT_ACKS`` and the YAML files named by
``LSST_KAFKA_BROKER_CLIENT_CONFIGURATION``, ``LSST_KAFKA_CONSUMER_CONFIGURATION`` and
``LSST_KAFKA_PRODUCER_CONFIGURATION``. The librdkafka settings are merged in ts_salobj's order:
built-in defaults, then the consumer (producer) file, then the broker-client settings (address, SASL,
broker-client file), which win.

:func:`settings_from_env` is pure apart from reading the named files (through ``load_yaml``); every
mistake is a :class:`KafkaConfigError` naming the variable (and file) at fault. The password never
appears in an error or in :meth:`KafkaSettings.redacted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

SUBNAME = "LSST_TOPIC_SUBNAME"
BROKER = "LSST_KAFKA_BROKER_ADDR"
REGISTRY = "LSST_SCHEMA_REGISTRY_URL"
USERNAME = "LSST_KAFKA_SECURITY_USERNAME"
PASSWORD = "LSST_KAFKA_SECURITY_PASSWORD"
PROTOCOL = "LSST_KAFKA_SECURITY_PROTOCOL"
MECHANISM = "LSST_KAFKA_SECURITY_MECHANISM"
REPLICATION = "LSST_KAFKA_REPLICATION_FACTOR"
ACKS = "LSST_KAFKA_PRODUCER_WAIT_ACKS"
BROKER_FILE = "LSST_KAFKA_BROKER_CLIENT_CONFIGURATION"
CONSUMER_FILE = "LSST_KAFKA_CONSUMER_CONFIGURATION"
PRODUCER_FILE = "LSST_KAFKA_PRODUCER_CONFIGURATION"

DEFAULT_PROTOCOL = "SASL_PLAINTEXT"
DEFAULT_MECHANISM = "SCRAM-SHA-512"
PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"})
SECRET_KEYS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")

_SUBNAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")


class KafkaConfigError(ValueError):
    """A Kafka setting that cannot be used; the message names the variable (and file)."""


def _read_yaml(path: str) -> Any:
    with open(path) as fh:
        return yaml.safe_load(fh)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the bus is and how to talk to it (librdkafka settings as ts_salobj builds them)."""

    subname: str
    broker_addr: str | None
    registry_url: str | None
    replication_factor: int
    #: Broker-client settings (address, SASL, broker-client file): for the admin client, and last in
    #: every consumer's and producer's settings.
    client: dict[str, Any] = field(default_factory=dict)
    consumer_defaults: dict[str, Any] = field(default_factory=dict)
    producer_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """No broker given: the caller starts the embedded broker and registry (tools/kafka_local.py)."""
        return self.broker_addr is None

    def admin_config(self) -> dict[str, Any]:
        return dict(self.client)

    def consumer_config(self, group_id: str, **extra: Any) -> dict[str, Any]:
        """A consumer's settings: ts_salobj's defaults, ``extra``, the consumer file, the client's."""
        conf = {"group.id": group_id, "allow.auto.create.topics": False, "auto.offset.reset": "earliest"}
        conf.update(extra)
        conf.update(self.consumer_defaults)
        conf.update(self.client)
        return conf

    def producer_config(self, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"queue.buffering.max.ms": 0}
        conf.update(extra)
        conf.update(self.producer_defaults)
        conf.update(self.client)
        return conf

    def redacted(self) -> dict[str, Any]:
        """For logs and the CSC's configuration events: everything but secrets."""

        def hide(d: Mapping[str, Any]) -> dict[str, Any]:
            return {k: ("***" if k in SECRET_KEYS else v) for k, v in d.items()}

        return {
            "subname": self.subname,
            "broker": self.broker_addr,
            "registry": self.registry_url,
            "replication_factor": self.replication_factor,
            "client": hide(self.client),
            "consumer": hide(self.consumer_defaults),
            "producer": hide(self.producer_defaults),
        }


def validate_subname(value: str, var: str = SUBNAME) -> str:
    if not value or not _SUBNAME_RE.match(value):
        raise KafkaConfigError(f"{var}={value!r}: a Kafka topic name part (letters, digits, '.', '_', '-') is required")
    return value


def validate_broker_addr(value: str, var: str = BROKER) -> str:
    """``host:port`` (a comma-separated list of them, as bootstrap.servers takes)."""
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not _HOST_RE.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise KafkaConfigError(f"{var}={value!r}: expected host:port (port 1-65535), got {item.strip()!r}")
    return ",".join(i.strip() for i in value.split(","))


def validate_registry_url(value: str, var: str = REGISTRY) -> str:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise KafkaConfigError(f"{var}={value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KafkaConfigError(f"{var}={value!r}: expected http(s)://host[:port][/path]")
    if port is not None and not 0 < port < 65536:
        raise KafkaConfigError(f"{var}={value!r}: port out of range")
    return value.rstrip("/")


def _positive_int(value: str, var: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise KafkaConfigError(f"{var}={value!r}: an integer >= 1 is required") from None
    if n < 1:
        raise KafkaConfigError(f"{var}={value!r}: an integer >= 1 is required")
    return n


def _acks(value: str) -> str:
    v = value.strip()
    if v == "all" or (v.lstrip("-").isdigit() and -1 <= int(v) <= 1000):
        return v
    raise KafkaConfigError(f"{ACKS}={value!r}: expected all, -1, 0, 1 (or a replica count up to 1000)")


def _settings_file(var: str, env: Mapping[str, str], load_yaml: Callable[[str], Any]) -> dict[str, Any]:
    path = env.get(var)
    if path is None:
        return {}
    if not path:
        raise KafkaConfigError(f"{var} is set but empty: name a YAML file of librdkafka settings")
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise KafkaConfigError(f"{var}={path}: no such file") from None
    except OSError as exc:
        raise KafkaConfigError(f"{var}={path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KafkaConfigError(f"{var}={path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KafkaConfigError(f"{var}={path}: expected a mapping of librdkafka settings, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise KafkaConfigError(f"{var}={path}: setting name {key!r} is not a string")
        if value is None or isinstance(value, (dict, list)):
            raise KafkaConfigError(f"{var}={path}: {key} must be a string, number or boolean, got {value!r}")
    return dict(data)


def settings_from_env(
    env: Mapping[str, str],
    *,
    default_subname: str | None = None,
    load_yaml: Callable[[str], Any] = _read_yaml,
) -> KafkaSettings:
    """Validated settings from ts_salobj's variables in ``env``.

    ``LSST_TOPIC_SUBNAME`` is required (as ts_salobj requires it) unless ``default_subname`` is given.
    Without ``LSST_KAFKA_BROKER_ADDR`` the settings are :attr:`KafkaSettings.embedded`; a registry
    URL without a broker is refused (it would pair a foreign registry with our own broker).
    """
    subname = env.get(SUBNAME) or default_subname
    if subname is None:
        raise KafkaConfigError(f"{SUBNAME} is not set: it names the bus's topics (lsst.<subname>.…), 'sal' at the summit")
    subname = validate_subname(subname)

    broker = env.get(BROKER) or None
    registry = env.get(REGISTRY) or None
    if broker is not None:
        broker = validate_broker_addr(broker)
        if registry is None:
            raise KafkaConfigError(f"{BROKER} is set but {REGISTRY} is not: both name the bus to join")
    elif registry is not None:
        raise KafkaConfigError(f"{REGISTRY} is set but {BROKER} is not: both name the bus to join")
    if registry is not None:
        registry = validate_registry_url(registry)

    client: dict[str, Any] = {}
    if broker is not None:
        client["bootstrap.servers"] = broker
    user, password = env.get(USERNAME), env.get(PASSWORD)
    if (user is None) != (password is None):
        have, lack = (USERNAME, PASSWORD) if password is None else (PASSWORD, USERNAME)
        raise KafkaConfigError(f"{have} is set but {lack} is not: SASL needs both")
    if user is not None and password is not None:
        if not user:
            raise KafkaConfigError(f"{USERNAME} is empty")
        protocol = env.get(PROTOCOL, DEFAULT_PROTOCOL)
        mechanism = env.get(MECHANISM, DEFAULT_MECHANISM)
        if protocol not in PROTOCOLS:
            raise KafkaConfigError(f"{PROTOCOL}={protocol!r}: expected one of {', '.join(sorted(PROTOCOLS))}")
        if mechanism not in MECHANISMS:
            raise KafkaConfigError(f"{MECHANISM}={mechanism!r}: expected one of {', '.join(sorted(MECHANISMS))}")
        client.update({"security.protocol": protocol, "sasl.mechanism": mechanism})
        client.update({"sasl.username": user, "sasl.password": password})
    client.update(_settings_file(BROKER_FILE, env, load_yaml))

    replication = _positive_int(env.get(REPLICATION, "1"), REPLICATION)
    producer = {"acks": _acks(env.get(ACKS, "1"))}
    producer.update(_settings_file(PRODUCER_FILE, env, load_yaml))
    consumer = _settings_file(CONSUMER_FILE, env, load_yaml)
    return KafkaSettings(subname, broker, registry, replication, client, consumer, producer)


def write_settings_file(path: Path, settings: Mapping[str, Any]) -> Path:
    """Write librdkafka settings as one of the ``*_CONFIGURATION`` YAML files."""
    path.write_text(yaml.safe_dump(dict(settings), sort_keys=True))
    return path
