"""The SAL-over-Kafka client against the real embedded bus (Tansu + hs-registry): write and read
back, a command answered with its ackcmd, a reader killed -9 and restarted in its group, bad records."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Callable

import pytest

from protocols import avro_schema as av
from protocols import kafka_bus as kb
from protocols import kafka_wire as kw
from protocols.kafka_config import KafkaSettings
from tools import kafka_local


#: A guard against a hung test, not a measurement.
PATIENCE_S = 60.0


def read_until(reader: kb.KafkaReader, done: Callable[[list[kb.BusSample]], bool]) -> list[kb.BusSample]:
    got: list[kb.BusSample] = []
    end = time.monotonic() + PATIENCE_S
    while not done(got) and time.monotonic() < end:
        got += reader.poll(timeout=0.5)
    return got


@pytest.fixture
def settings(local_kafka: kafka_local.LocalKafka, subname: str) -> KafkaSettings:
    return local_kafka.settings(subname)


def test_events_and_telemetry_written_and_read_back(settings: KafkaSettings) -> None:
    sub = settings.subname
    end_readout = kw.kafka_topic(sub, "ATCamera", "logevent_endReadout")
    temperature = kw.kafka_topic(sub, "ESS", "temperature")
    target = kw.kafka_topic(sub, "ATPtg", "currentTargetStatus")
    writer = kb.KafkaWriter(settings, [end_readout, temperature, target], identity="HSSim", origin=4242)
    writer.start()
    written = [
        writer.write(end_readout, {"imageName": "AT_O_20261130_000001", "requestedExposureTime": 30.0}),
        writer.write(temperature, {"salIndex": 301, "sensorName": "outside", "temperatureItem": [11.5] + [0.0] * 15}),
        writer.write(target, {"airmass": 1.16, "demandRa": 225.1}),
        writer.write(end_readout, {"imageName": "AT_O_20261130_000002"}),
    ]
    assert writer.flush() == 0 and writer.failed == 0

    reader = kb.KafkaReader(settings, [end_readout, temperature, target], group_id=f"hs-{sub}")
    reader.start()
    try:
        got = read_until(reader, lambda g: len(g) >= 4)
    finally:
        reader.close()
    assert len(got) == 4 and not reader.bad
    by_topic: dict[str, list[kb.BusSample]] = {}
    for s in got:
        by_topic.setdefault(s.topic.sal_name, []).append(s)
    readouts = sorted(by_topic["logevent_endReadout"], key=lambda s: s.offset)
    assert [s.data for s in readouts] == [written[0], written[3]]
    assert [s.data["private_seqNum"] for s in readouts] == [1, 2]  # per topic, from 1, as ts_salobj
    first = readouts[0]
    assert first.data["imageName"] == "AT_O_20261130_000001" and first.data["requestedExposureTime"] == 30.0
    assert first.data["private_identity"] == "HSSim" and first.data["private_origin"] == 4242
    assert first.data["private_efdStamp"] == pytest.approx(first.snd_stamp - 37.0)
    assert first.data["private_revCode"] == av.rev_code(av.avro_schema("ATCamera", "logevent_endReadout"))
    assert abs(first.snd_stamp - (time.time() + 37.0)) < 3600  # a real TAI stamp, not a default 0
    assert first.key == b'{ "name": "ATCamera", "topic": "logevent_endReadout" }'

    (temp,) = by_topic["temperature"]
    assert temp.sal_index == 301 and temp.data["temperatureItem"][0] == 11.5 and temp.key == b""
    (tgt,) = by_topic["currentTargetStatus"]
    assert tgt.data == written[2] and tgt.partition == 0

    # ts_salobj's topic layout: one partition each; the writer's schemas are in the registry
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(settings.admin_config()).list_topics(timeout=20)
    for t in (end_readout, temperature, target):
        assert len(metadata.topics[t.name].partitions) == 1
    assert writer.registry.lookup(target.subject, av.avro_schema("ATPtg", "currentTargetStatus")) == tgt.schema_id


def test_event_topics_are_compacted(settings: KafkaSettings) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    event = kw.kafka_topic(settings.subname, "ATHeaderService", "logevent_heartbeat")
    telemetry = kw.kafka_topic(settings.subname, "ATPtg", "mountPositions")
    kb.create_topics(settings, [event, telemetry])
    admin = AdminClient(settings.admin_config())
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in (event, telemetry)]
    policy = {}
    for res, future in admin.describe_configs(resources).items():
        entry = future.result(timeout=20).get("cleanup.policy")
        policy[res.name] = entry.value if entry is not None else None
    assert policy[event.name] == "compact"
    assert policy[telemetry.name] != "compact"


def test_command_answered_with_its_ackcmd(settings: KafkaSettings) -> None:
    sub = settings.subname
    start = kw.kafka_topic(sub, "ATHeaderService", "command_start")
    ackcmd = kw.kafka_topic(sub, "ATHeaderService", "ackcmd")
    commander = kb.KafkaWriter(settings, [start], identity="operator@summit", origin=111)
    csc = kb.KafkaWriter(settings, [ackcmd], identity="ATHeaderService", origin=222)
    commander.start(extra_topics=[ackcmd])
    csc.start(extra_topics=[start])
    csc_reader = kb.KafkaReader(settings, [start], group_id=f"csc-{sub}")
    commander_reader = kb.KafkaReader(settings, [ackcmd], group_id=f"cmd-{sub}")
    csc_reader.start()
    commander_reader.start()
    try:
        cmd_id = kb.new_command_id()
        sent = commander.write(start, {"configurationOverride": "night.yaml"}, seq_num=cmd_id)
        commander.flush()
        (received,) = read_until(csc_reader, lambda g: len(g) >= 1)
        assert received.data == sent and received.key == b'{ "name": "ATHeaderService", "topic": "command_start" }'
        types = kw.header_service_command_types(extra=["setHeaderCards"])
        csc.write(ackcmd, kw.ackcmd_values(received.data, cmdtype=types["start"], ack=kw.CMD_COMPLETE, result="Done"))
        csc.flush()
        (ack,) = read_until(commander_reader, lambda g: len(g) >= 1)
    finally:
        csc_reader.close()
        commander_reader.close()
    assert ack.data["private_seqNum"] == cmd_id
    assert (ack.data["identity"], ack.data["origin"]) == ("operator@summit", 111)
    assert (ack.data["private_identity"], ack.data["private_origin"]) == ("ATHeaderService", 222)
    assert (ack.data["ack"], ack.data["cmdtype"], ack.data["result"]) == (303, 6, "Done")


READER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from protocols import kafka_bus as kb, kafka_config as kc, kafka_wire as kw
    settings = kc.settings_from_env(os.environ)
    topic = kw.kafka_topic(settings.subname, "ATPtg", "currentTargetStatus")
    reader = kb.KafkaReader(settings, [topic], group_id=sys.argv[1])
    reader.start()
    commit_after, read_after = int(sys.argv[2]), int(sys.argv[3])
    seen = []
    while len(seen) < read_after:
        for s in reader.poll(timeout=0.5, max_records=1):
            seen.append(s.offset)
            if len(seen) == commit_after:
                reader.commit()
                print(json.dumps({"committed": seen}), flush=True)
    print(json.dumps({"read": seen}), flush=True)
    time.sleep(3600)
    """
)


def test_reader_killed_and_restarted_in_its_group_resumes_where_it_stopped(
    settings: KafkaSettings, local_kafka: kafka_local.LocalKafka
) -> None:
    topic = kw.kafka_topic(settings.subname, "ATPtg", "currentTargetStatus")
    writer = kb.KafkaWriter(settings, [topic], identity="ATPtg")
    writer.start()
    for i in range(30):
        writer.write(topic, {"airmass": 1.0 + i / 100})
    assert writer.flush() == 0
    group = f"hs-listener-{settings.subname}"

    env = {**os.environ, **local_kafka.env(settings.subname)}
    proc = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, group, "10", "17"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        committed = json.loads(proc.stdout.readline())["committed"]
        read = json.loads(proc.stdout.readline())["read"]
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean close, no last commit
        proc.wait(timeout=20)
    assert committed == list(range(10)) and read == list(range(17))

    # samples written while it was down are there too
    for i in range(30, 35):
        writer.write(topic, {"airmass": 1.0 + i / 100})
    assert writer.flush() == 0

    reader = kb.KafkaReader(settings, [topic], group_id=group)
    reader.start()
    try:
        got = read_until(reader, lambda g: bool(g) and g[-1].offset >= 34)
        reader.commit()
    finally:
        reader.close()
    offsets = [s.offset for s in got]
    # resumes at the first uncommitted record: re-delivers 10..16 (read but not committed), loses nothing
    assert offsets == list(range(10, 35))
    assert [round(s.data["airmass"], 2) for s in got] == [round(1.0 + i / 100, 2) for i in range(10, 35)]

    # and a third start of the group, after a clean commit, has nothing to re-read
    again = kb.KafkaReader(settings, [topic], group_id=group)
    again.start()
    try:
        writer.write(topic, {"airmass": 2.0})
        writer.flush()
        after = read_until(again, lambda g: bool(g))
    finally:
        again.close()
    assert [s.offset for s in after] == [35]


def test_bad_records_are_counted_logged_and_skipped(settings: KafkaSettings, caplog: pytest.LogCaptureFixture) -> None:
    topic = kw.kafka_topic(settings.subname, "ATHeaderService", "logevent_heartbeat")
    other = kw.kafka_topic(settings.subname, "ATCamera", "logevent_endReadout")
    writer = kb.KafkaWriter(settings, [topic, other], identity="ATHeaderService")
    writer.start()
    good = writer.write(topic, {"heartbeat": True})
    writer.flush()
    sample = writer._topics[topic.name]
    valid = kw.encode_value(sample.schema_id, sample.codec, good)
    writer.write_raw(topic, b"plain text, no framing")  # offset 1
    writer.write_raw(topic, kw.frame(987654, valid[5:]))  # offset 2: an id nobody registered
    writer.write_raw(topic, valid[:-4])  # offset 3: truncated
    writer.write_raw(topic, valid + b"\x00\x01")  # offset 4: garbage after the record
    last = writer.write(topic, {"heartbeat": False})  # offset 5
    writer.write(other, {"imageName": "AT_O_1"})  # a schema without the field the reader wants
    assert writer.flush() == 0

    reader = kb.KafkaReader(
        settings, [topic, other], group_id=f"bad-{settings.subname}", wanted={other.name: ["imageName", "darkTime"]}
    )
    reader.start()
    with caplog.at_level(logging.WARNING, logger="kafka_bus"):
        try:
            got = read_until(reader, lambda g: sum(reader.bad.values()) >= 5 and len(g) >= 2)
            reader.commit()
        finally:
            reader.close()
    assert [s.data for s in got] == [good, last]
    assert dict(reader.bad) == {
        "no Confluent magic byte": 1,
        "unknown schema id": 1,
        "truncated record": 1,
        "malformed Avro body": 1,
        "schema lacks a field we read": 1,
    }
    text = caplog.text
    for offset, what in [(1, "magic"), (2, "987654"), (3, "truncated"), (4, "bytes left")]:
        lines = [r.getMessage() for r in caplog.records if f"(topic {topic.name}, offset {offset})" in r.getMessage()]
        assert len(lines) == 1 and what in lines[0]
    assert f"topic {other.name}, offset 0" in text and "darkTime" in text

    # the bad records were committed with the good ones: a restart does not stumble on them again
    again = kb.KafkaReader(settings, [topic, other], group_id=f"bad-{settings.subname}")
    again.start()
    try:
        writer.write(topic, {"heartbeat": True})
        writer.flush()
        after = read_until(again, lambda g: bool(g))
    finally:
        again.close()
    assert [s.offset for s in after] == [6] and not again.bad


def test_registry_down_while_reading_costs_no_record(settings: KafkaSettings) -> None:
    topic = kw.kafka_topic(settings.subname, "ATCamera", "logevent_endShutterClose")
    writer = kb.KafkaWriter(settings, [topic], identity="ATCamera")
    writer.start()
    for t in (1.0, 2.0, 3.0):
        writer.write(topic, {"timestampTransition": t})
    writer.flush()
    reader = kb.KafkaReader(settings, [topic], group_id=f"reg-{settings.subname}")
    reader.start()
    live = reader.registry.url
    try:
        reader.registry.url = f"http://127.0.0.1:{kafka_local.free_port()}"  # nobody there
        end = time.monotonic() + PATIENCE_S
        while reader.registry_waits == 0 and time.monotonic() < end:
            assert reader.poll(timeout=0.5) == []
        assert reader.registry_waits > 0 and not reader.bad
        reader.registry.url = live
        got = read_until(reader, lambda g: len(g) >= 3)
    finally:
        reader.close()
    assert [s.data["timestampTransition"] for s in got] == [1.0, 2.0, 3.0]


def test_registry_unreachable_at_start_is_a_clear_error(settings: KafkaSettings) -> None:
    dead = KafkaSettings(settings.subname, settings.broker_addr, f"http://127.0.0.1:{kafka_local.free_port()}", 1,
                         settings.client, settings.consumer_defaults, settings.producer_defaults)  # fmt: skip
    writer = kb.KafkaWriter(dead, [kw.kafka_topic(settings.subname, "ATPtg", "mountPositions")], identity="x")
    with pytest.raises(kb.RegistryUnavailable, match=r"unreachable.*gave up after"):
        writer.start(registry_wait_s=0.5)


def test_writer_refuses_foreign_topics_and_unknown_fields(settings: KafkaSettings) -> None:
    topic = kw.kafka_topic(settings.subname, "ATPtg", "mountPositions")
    writer = kb.KafkaWriter(settings, [topic], identity="x")
    with pytest.raises(RuntimeError, match="start"):
        writer.write(topic, {})
    writer.start()
    with pytest.raises(KeyError, match="not one of this writer's topics"):
        writer.write(kw.kafka_topic(settings.subname, "ATPtg", "currentTargetStatus"), {})
    with pytest.raises(ValueError, match="no field"):
        writer.write(topic, {"nonesuch": 1})


def test_latest_start_gives_the_current_event_and_only_new_telemetry(settings: KafkaSettings) -> None:
    """A ts_salobj-style reader: an event's last sample (the current state), no old telemetry."""
    state = kw.kafka_topic(settings.subname, "ATHeaderService", "logevent_summaryState")
    target = kw.kafka_topic(settings.subname, "ATPtg", "currentTargetStatus")
    writer = kb.KafkaWriter(settings, [state, target], identity="ATHeaderService")
    writer.start()
    for s in (5, 1, 2):
        writer.write(state, {"summaryState": s})
        writer.write(target, {"airmass": float(s)})
    assert writer.flush() == 0
    reader = kb.KafkaReader(settings, [state, target], group_id=f"late-{settings.subname}", start_at="latest")
    reader.start()
    try:
        current = read_until(reader, lambda g: bool(g))
        assert [(s.topic.sal_name, s.data["summaryState"]) for s in current] == [("logevent_summaryState", 2)]
        writer.write(target, {"airmass": 4.2}, snd_stamp=1_800_000_000.0)
        writer.write(state, {"summaryState": 3})
        writer.flush()
        new = read_until(reader, lambda g: len(g) >= 2)
    finally:
        reader.close()
    assert sorted((s.topic.sal_name, s.offset) for s in new) == [("currentTargetStatus", 3), ("logevent_summaryState", 3)]
    (pos,) = [s for s in new if s.topic.sal_name == "currentTargetStatus"]
    assert pos.data["airmass"] == 4.2 and pos.snd_stamp == 1_800_000_000.0
    assert pos.data["private_efdStamp"] == 1_800_000_000.0 - 37.0
