"""hs-registry over real HTTP: the Confluent calls ts_salobj's clients make, errors, persistence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from protocols import avro_schema as av
from tools import registry

CT = "application/vnd.schemaregistry.v1+json"
HEARTBEAT = json.dumps(av.avro_schema("ATHeaderService", "logevent_heartbeat"))
SUMMARY = json.dumps(av.avro_schema("ATHeaderService", "logevent_summaryState"))


@pytest.fixture
def url() -> Iterator[str]:
    server = registry.make_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def call(url: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any, str]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": CT})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers["Content-Type"]


def test_register_lookup_fetch_list(url: str) -> None:
    subject = "lsst.sal.ATHeaderService.logevent_heartbeat-value"
    status, body, ctype = call(url, "POST", f"/subjects/{subject}/versions", {"schema": HEARTBEAT})
    assert (status, ctype) == (200, CT) and set(body) == {"id"}
    hb_id = body["id"]
    # the same schema again, even reformatted and with schemaType: same id, no new version
    again = json.dumps(json.loads(HEARTBEAT), indent=3)
    assert call(url, "POST", f"/subjects/{subject}/versions", {"schema": again, "schemaType": "AVRO"})[1] == {"id": hb_id}
    # the same schema under another subject keeps its id; another schema gets a new one
    assert call(url, "POST", "/subjects/other-value/versions", {"schema": HEARTBEAT})[1] == {"id": hb_id}
    sum_id = call(url, "POST", f"/subjects/{subject}/versions", {"schema": SUMMARY})[1]["id"]
    assert sum_id != hb_id

    status, body, _ = call(url, "POST", f"/subjects/{subject}?normalize=false&deleted=false", {"schema": HEARTBEAT})
    assert status == 200 and body == {"subject": subject, "id": hb_id, "version": 1, "schema": HEARTBEAT}
    assert call(url, "GET", f"/schemas/ids/{sum_id}?subject={subject}")[1] == {"schema": SUMMARY}
    assert call(url, "GET", "/subjects")[1] == ["lsst.sal.ATHeaderService.logevent_heartbeat-value", "other-value"]
    assert call(url, "GET", f"/subjects/{subject}/versions")[1] == [1, 2]
    latest = call(url, "GET", f"/subjects/{subject}/versions/latest")[1]
    assert (latest["version"], latest["id"], latest["schema"]) == (2, sum_id, SUMMARY)
    assert call(url, "GET", f"/subjects/{subject}/versions/1")[1]["id"] == hb_id


@pytest.mark.parametrize(
    "method,path,body,status,code",
    [
        ("GET", "/schemas/ids/77", None, 404, 40403),
        ("GET", "/schemas/ids/abc", None, 404, 40403),
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/nope/versions/latest", None, 404, 40401),
        ("POST", "/subjects/nope", {"schema": HEARTBEAT}, 404, 40401),
        ("POST", "/subjects/s/versions", {"schema": "{not json"}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": '{"type": "record", "name": "x"}'}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": '{"type": "nonesuch"}'}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": HEARTBEAT, "schemaType": "PROTOBUF"}, 422, 42201),
        ("POST", "/subjects/s/versions", {"nothing": 1}, 422, 42201),
        ("POST", "/subjects/s/versions", [1, 2], 422, 42201),
        ("GET", "/config", None, 404, 404),
        ("DELETE", "/subjects/s/versions", None, 405, 405),
    ],
)
def test_errors_are_confluent_shaped(url: str, method: str, path: str, body: Any, status: int, code: int) -> None:
    got_status, got, ctype = call(url, method, path, body)
    assert (got_status, got["error_code"], ctype) == (status, code, CT)
    assert got["message"]


def test_unknown_version_and_schema_in_known_subject(url: str) -> None:
    call(url, "POST", "/subjects/s/versions", {"schema": HEARTBEAT})
    assert call(url, "GET", "/subjects/s/versions/5")[1]["error_code"] == 40402
    assert call(url, "GET", "/subjects/s/versions/zero")[1]["error_code"] == 42202
    assert call(url, "POST", "/subjects/s", {"schema": SUMMARY})[1]["error_code"] == 40403


def test_unreadable_body(url: str) -> None:
    status, body, _ = call(url, "POST", "/subjects/s/versions", raw=b"\xff\x00garbage")
    assert (status, body["error_code"]) == (400, 50005)
    # the registry still answers afterwards
    assert call(url, "GET", "/subjects")[0] == 200


def test_confluent_client_and_serializers_work_against_it(url: str) -> None:
    """What ts_salobj does: register at start, serializers that only look up, deserializers by id."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": url})
    topic = "lsst.sal.ATHeaderService.logevent_heartbeat"
    schema_id = client.register_schema(f"{topic}-value", Schema(HEARTBEAT, "AVRO"))
    assert client.lookup_schema(f"{topic}-value", Schema(HEARTBEAT, "AVRO")).schema_id == schema_id
    assert client.get_latest_version(f"{topic}-value").version == 1
    assert client.get_subjects() == [f"{topic}-value"]
    assert client.get_versions(f"{topic}-value") == [1]

    ser = AvroSerializer(client, HEARTBEAT, conf={"auto.register.schemas": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    value = {f["name"]: f["default"] for f in json.loads(HEARTBEAT)["fields"]} | {"heartbeat": True}
    data = ser(value, ctx)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == schema_id
    fresh = SchemaRegistryClient({"url": url})  # no cache: fetches the schema by id
    assert AvroDeserializer(fresh)(data, ctx) == value


def _start(store: Path) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).parent / "hs-registry"
    proc = subprocess.Popen([str(exe), "--store", str(store)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def test_console_script_persists_schemas_across_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "schemas.jsonl"
    proc, url = _start(store)
    try:
        assert url.startswith("http://127.0.0.1:")
        first = call(url, "POST", "/subjects/a-value/versions", {"schema": HEARTBEAT})[1]["id"]
        second = call(url, "POST", "/subjects/b-value/versions", {"schema": SUMMARY})[1]["id"]
    finally:
        assert _stop(proc) == 0
    proc, url = _start(store)
    try:
        assert call(url, "GET", f"/schemas/ids/{second}")[1] == {"schema": SUMMARY}
        assert call(url, "POST", "/subjects/a-value", {"schema": HEARTBEAT})[1]["id"] == first
        third = call(url, "POST", "/subjects/c-value/versions", {"schema": json.dumps(av.avro_schema("ESS", "temperature"))})
        assert third[1]["id"] not in (first, second)
    finally:
        _stop(proc)


def test_refuses_a_non_loopback_address() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        registry.make_server("0.0.0.0")
    exe = Path(sys.executable).parent / "hs-registry"
    done = subprocess.run([str(exe), "--host", "10.1.2.3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "loopback only" in done.stderr
