"""Operator tools on Kafka: hs-tap shows an instance's SAL records (topic, offset, key, decoded value)
and bad ones with the reason; hs-sim plays a night onto Kafka with the simulated send times."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from protocols import kafka_wire as kw
from protocols.kafka_bus import KafkaReader, KafkaWriter
from tests.test_faults import night_yaml
from tools.kafka_local import LocalKafka
from tools.runner import venv_bin


def test_hs_tap_shows_kafka_records_and_bad_ones(local_kafka: LocalKafka, subname: str) -> None:
    settings = local_kafka.settings(subname)
    topic = kw.kafka_topic(subname, "ATCamera", "logevent_startIntegration")
    writer = KafkaWriter(settings, [topic], identity="ATCamera")
    writer.start()
    writer.write(topic, {"imageName": "AT_O_20261124_000042", "exposureTime": 2.5})
    writer.write_raw(topic, b"\x07garbage")
    assert writer.flush(10) == 0
    writer.close()
    env = {**local_kafka.env(subname), "HS_BUS": "kafka"}
    out = subprocess.run([venv_bin("hs-tap"), "--instance", "LATISS", "--bus", "kafka", "--from-start", "--json",
                          "--count", "2", "--timeout", "60"], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    good, bad = (json.loads(line) for line in out.stdout.splitlines())
    assert good["topic"] == topic.name and good["offset"] == 0
    assert good["key"] == '{ "name": "ATCamera", "topic": "logevent_startIntegration" }'
    assert good["value"]["imageName"] == "AT_O_20261124_000042" and good["value"]["exposureTime"] == 2.5
    assert bad["topic"] == topic.name and bad["offset"] == 1 and "no Confluent magic byte" in bad["bad"]
    assert "1 bad" in out.stderr


def test_hs_sim_plays_onto_kafka_with_the_simulated_send_time(local_kafka: LocalKafka, subname: str, tmp_path: Path) -> None:
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(night_yaml(1)))
    env = {**os.environ, **local_kafka.env(subname)}
    out = subprocess.run([venv_bin("hs-sim"), "--bus", "kafka", "--scenario", str(path), "--speed", "0"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "on Kafka" in out.stderr
    topic = kw.kafka_topic(subname, "ATCamera", "logevent_startIntegration")
    reader = KafkaReader(local_kafka.settings(subname), [topic], f"check-{subname}")
    reader.start()
    got = []
    for _ in range(50):
        got += reader.poll(timeout=0.2)
        if got:
            break
    reader.close()
    assert got, "no startIntegration on Kafka"
    data = got[0].data
    assert 1795402000.0 <= data["private_sndStamp"] < 1795402000.0 + 60  # the simulated night's time, not now
    assert data["private_efdStamp"] == data["private_sndStamp"] - 37.0
    assert data["private_identity"] == "ATCamera" and data["imageName"].startswith("AT_O_")
