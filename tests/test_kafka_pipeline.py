"""A LATISS instance on Kafka, what the log gives that DDS did not: a listener killed with SIGKILL
mid-night resumes from its committed offsets (no telemetry lost, no header INCOMPLETE because of it),
and bad records on a subscribed topic are counted and logged with topic and offset, never fatal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import fitsio
import yaml

from protocols import kafka_wire as kw
from protocols.kafka_bus import KafkaWriter
from protocols.kafka_config import settings_from_env
from tests.kafka_harness import PlainKafkaReader
from tests.test_faults import night_yaml
from tools.demo import fitsverify
from tools.runner import Deployment
from tools.sim.night import plan_night
from tools.sim.scenario import load_scenario


def images_of(path: Path) -> list[str]:
    return [e.fields["imageName"] for e in plan_night(load_scenario(path)) if e.topic == "startIntegration"]


def hs_sim(dep: Deployment, path: Path, speed: float) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "hs-sim"
    return subprocess.Popen([str(exe), "--scenario", str(path), "--speed", str(speed)], env=dep.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def headers(dep: Deployment, announced: list[dict[str, Any]]) -> dict[str, fitsio.FITSHDR]:
    out = {}
    for a in announced:
        path = dep.annex / a["url"].split("/", 3)[3]
        errors, warnings, text = fitsverify(path)
        assert errors == 0, text
        out[a["id"]] = (fitsio.read_header(str(path)), warnings, text)
    return out


def test_listener_killed_mid_night_on_kafka_costs_no_telemetry(deployment_factory: Callable[..., Deployment], tmp_path: Path) -> None:
    dep = deployment_factory(("LATISS",), bus="kafka")
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(night_yaml(6, cadence=5.0, exptime=1.0)))
    images = images_of(path)
    reader = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
    sim = hs_sim(dep, path, speed=2.0)  # ~15 s of wall time
    try:
        reader.wait(lambda g: images[0] in {a["id"] for a in g}, timeout=60)  # the night is under way
        old = dep.pid("latiss:latiss-listener")
        os.kill(old, signal.SIGKILL)  # mid-night: exposures 2..6 still to come
        assert wait_for(lambda: dep.status().get("latiss:latiss-listener") == "RUNNING" and dep.pid("latiss:latiss-listener") != old, 30)
        out, _ = sim.communicate(timeout=120)
        assert sim.returncode == 0, out
        got = reader.wait(lambda g: {a["id"] for a in g} >= set(images), timeout=90)
    finally:
        if sim.poll() is None:
            sim.kill()
        reader.close()
    assert {a["id"] for a in got} >= set(images), (images, got, dep.log("latiss-listener")[-3000:])
    cache_log = dep.log("latiss-cache")
    assert "resuming from its committed offsets: no outage" in cache_log, cache_log[-3000:]
    assert "what it missed is an outage" not in cache_log and "bus not observed" not in cache_log
    for image, (h, warnings, text) in headers(dep, [a for a in got if a["id"] in images]).items():
        assert h["HDRSTAT"].strip() == "COMPLETE", (image, h.get("HDRNOTE"))
        assert warnings == 0, text  # no undefined keyword: every sample reached the cache


def test_bad_records_on_a_subscribed_topic_are_counted_and_logged(
    deployment_factory: Callable[..., Deployment], tmp_path: Path
) -> None:
    dep = deployment_factory(("LATISS",), bus="kafka")
    settings = settings_from_env(dep.env)
    topic = kw.kafka_topic(settings.subname, "ATPtg", "currentTargetStatus")
    writer = KafkaWriter(settings, [topic], identity="ATPtg")
    writer.start()
    good = writer.write(topic, {})
    schema_id = writer.registry.lookup(topic.subject, writer._topics[topic.name].codec.schema)
    body = kw.encode_value(schema_id, writer._topics[topic.name].codec, good)
    writer.write_raw(topic, b"not avro at all")  # no magic byte
    writer.write_raw(topic, kw.frame(987654, body[5:]))  # unknown schema id
    writer.write_raw(topic, body[: len(body) // 2])  # truncated body
    assert writer.flush(10) == 0
    listener_pid = dep.pid("latiss:latiss-listener")
    assert wait_for(lambda: dep.log("latiss-listener").count("bad record skipped") >= 3, 30), dep.log("latiss-listener")
    log = dep.log("latiss-listener")
    for reason in ("no Confluent magic byte", "unknown schema id", "truncated record"):
        line = next(x for x in log.splitlines() if reason in x)
        assert topic.name in line and "offset" in line, line
    # the listener lives on and the night goes on: the omitted pointing has undefined keywords with a reason
    scen = night_yaml(2, cadence=8.0, exptime=1.0)
    scen["exposures"][0]["omit"] = ["ATPtg.currentTargetStatus"]
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(scen))
    images = images_of(path)
    reader = PlainKafkaReader(dep.env, "ATHeaderService", "logevent_largeFileObjectAvailable")
    sim = hs_sim(dep, path, speed=10.0)
    out, _ = sim.communicate(timeout=120)
    assert sim.returncode == 0, out
    got = reader.wait(lambda g: {a["id"] for a in g} >= set(images), timeout=60)
    reader.close()
    writer.close()
    assert dep.pid("latiss:latiss-listener") == listener_pid
    first = next(a for a in got if a["id"] == images[0])
    h = fitsio.read_header(str(dep.annex / first["url"].split("/", 3)[3]))
    assert h["HASTART"] is None
    prov = json.loads((dep.annex / first["url"].split("/", 3)[3].replace(".fits", ".prov.json")).read_text())
    assert prov["keywords"]["HASTART"]["undefined"], prov["keywords"]["HASTART"]
