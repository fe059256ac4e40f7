"""hs-registry: a small Confluent-compatible schema registry for the embedded Kafka bus, loopback only.

No Confluent-compatible registry installs here from PyPI or Debian, and ts_salobj's clients (and
ours) use only a handful of its calls, so this answers exactly those:

- ``POST /subjects/{subject}/versions``: register a schema -> ``{"id": n}`` (the same schema under
  the same subject keeps its version; the same schema anywhere keeps its id, as Confluent does);
- ``POST /subjects/{subject}``: look a schema up -> ``{"subject", "id", "version", "schema"}``;
- ``GET /schemas/ids/{id}`` -> ``{"schema"}``;
- ``GET /subjects``, ``GET /subjects/{subject}/versions``, ``GET /subjects/{subject}/versions/{n|latest}``.

Answers are ``application/vnd.schemaregistry.v1+json``; errors carry Confluent's ``error_code`` and
``message``. Schemas are kept in memory and, with ``--store FILE``, appended to a JSON-lines file
and reloaded at start. Only Avro schemas are accepted, each checked by fastavro.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import re
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from procs.journal import AppendLog

log = logging.getLogger("hs-registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 4 * 1024 * 1024
MAX_SUBJECT = 512

# Confluent error codes
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
UNREADABLE = 50005


class RegistryError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Registered:
    subject: str
    version: int
    id: int
    schema: str

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "id": self.id, "version": self.version, "schema": self.schema}


def canonical(schema_text: str) -> str:
    """The identity of a schema: its parsed JSON, key order and whitespace aside."""
    return json.dumps(json.loads(schema_text), sort_keys=True, separators=(",", ":"))


def check_avro(schema_text: Any, schema_type: Any) -> str:
    """The canonical form of a schema a client sent, or a 422 saying why it is refused."""
    if schema_type not in (None, "AVRO"):
        raise RegistryError(422, INVALID_SCHEMA, f"only AVRO schemas are kept here, not {schema_type!r}")
    if not isinstance(schema_text, str):
        raise RegistryError(422, INVALID_SCHEMA, "the request has no 'schema' string")
    try:
        import fastavro

        parsed = json.loads(schema_text)
        if isinstance(parsed, dict) and parsed.get("type") == "record" and not isinstance(parsed.get("fields"), list):
            raise ValueError("a record needs a 'fields' array")
        fastavro.parse_schema(parsed)
        return canonical(schema_text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RegistryError(422, INVALID_SCHEMA, f"invalid Avro schema: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (fastavro's SchemaParseException and friends)
        raise RegistryError(422, INVALID_SCHEMA, f"invalid Avro schema: {type(exc).__name__}: {exc}") from None


class SchemaStore:
    """Subjects, versions and global ids, thread-safe; optionally persisted as JSON lines."""

    def __init__(self, store: Path | None = None):
        self._lock = threading.Lock()
        self._by_id: dict[int, str] = {}
        self._id_of: dict[str, int] = {}  # canonical text -> id
        self._subjects: dict[str, list[Registered]] = {}
        self._log = AppendLog(store) if store is not None else None
        if self._log is not None:
            for rec in self._log.load():
                try:
                    self._restore(Registered(str(rec["subject"]), int(rec["version"]), int(rec["id"]), str(rec["schema"])))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("store %s: record skipped (%s)", store, exc)

    def _restore(self, reg: Registered) -> None:
        key = canonical(reg.schema)
        self._by_id.setdefault(reg.id, reg.schema)
        self._id_of.setdefault(key, reg.id)
        self._subjects.setdefault(reg.subject, []).append(reg)

    def register(self, subject: str, schema_text: Any, schema_type: Any = None) -> Registered:
        key = check_avro(schema_text, schema_type)
        with self._lock:
            versions = self._subjects.setdefault(subject, [])
            for reg in versions:
                if canonical(reg.schema) == key:
                    return reg
            schema_id = self._id_of.get(key)
            if schema_id is None:
                schema_id = max(self._by_id, default=0) + 1
                self._by_id[schema_id] = schema_text
                self._id_of[key] = schema_id
            reg = Registered(subject, len(versions) + 1, schema_id, self._by_id[schema_id])
            versions.append(reg)
            if self._log is not None:
                self._log.append(reg.as_dict())
            return reg

    def lookup(self, subject: str, schema_text: Any, schema_type: Any = None) -> Registered:
        key = check_avro(schema_text, schema_type)
        with self._lock:
            versions = self._subjects.get(subject)
            if not versions:
                raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
            for reg in versions:
                if canonical(reg.schema) == key:
                    return reg
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")

    def by_id(self, schema_id: int) -> str:
        with self._lock:
            text = self._by_id.get(schema_id)
        if text is None:
            raise RegistryError(404, SCHEMA_NOT_FOUND, f"Schema {schema_id} not found")
        return text

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(s for s, v in self._subjects.items() if v)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            versions = self._subjects.get(subject)
            if not versions:
                raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
            return [r.version for r in versions]

    def version(self, subject: str, which: str) -> Registered:
        with self._lock:
            versions = self._subjects.get(subject)
            if not versions:
                raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
            if which in ("latest", "-1"):
                return versions[-1]
            if not re.fullmatch(r"[0-9]{1,9}", which) or int(which) < 1:
                raise RegistryError(
                    422, INVALID_VERSION, f"The specified version '{which}' is not a valid version id."
                )
            n = int(which)
            if n > len(versions):
                raise RegistryError(404, VERSION_NOT_FOUND, f"Version {n} not found.")
            return versions[n - 1]


_ROUTES = [
    ("POST", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/?$"), "register"),
    ("POST", re.compile(r"^/subjects/(?P<subject>[^/]+)/?$"), "lookup"),
    ("GET", re.compile(r"^/schemas/ids/(?P<id>[^/]+)/?$"), "by_id"),
    ("GET", re.compile(r"^/subjects/?$"), "subjects"),
    ("GET", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/?$"), "versions"),
    ("GET", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/(?P<version>[^/]+)/?$"), "version"),
]


class Handler(BaseHTTPRequestHandler):
    server_version = "hs-registry/1"
    store: SchemaStore  # set on the subclass the server is built with

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.client_address[0], *args)

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RegistryError(400, UNREADABLE, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise RegistryError(413, UNREADABLE, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise RegistryError(400, UNREADABLE, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise RegistryError(422, INVALID_SCHEMA, "request body must be a JSON object with a 'schema'")
        return body

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            for m, pattern, action in _ROUTES:
                match = pattern.match(path)
                if m == method and match:
                    self._reply(200, self._act(action, {k: unquote(v) for k, v in match.groupdict().items()}))
                    return
            known = any(p.match(path) for _m, p, _a in _ROUTES)
            if known:
                raise RegistryError(405, 405, f"{method} not allowed on {path}")
            raise RegistryError(404, 404, f"no such resource: {path}")
        except RegistryError as err:
            self._reply(err.status, {"error_code": err.code, "message": err.message})
        except Exception as exc:  # noqa: BLE001 (a request never takes the registry down)
            log.exception("request %s %s failed", method, path)
            self._reply(500, {"error_code": 50001, "message": f"{type(exc).__name__}: {exc}"})

    def _act(self, action: str, args: dict[str, str]) -> Any:
        subject = args.get("subject")
        if subject is not None and (not subject or len(subject) > MAX_SUBJECT or not subject.isprintable()):
            raise RegistryError(422, INVALID_SCHEMA, "invalid subject name")
        if action == "register":
            body = self._body()
            reg = self.store.register(subject, body.get("schema"), body.get("schemaType"))  # type: ignore[arg-type]
            return {"id": reg.id}
        if action == "lookup":
            body = self._body()
            return self.store.lookup(subject, body.get("schema"), body.get("schemaType")).as_dict()  # type: ignore[arg-type]
        if action == "by_id":
            if not re.fullmatch(r"[0-9]{1,9}", args["id"]):
                raise RegistryError(404, SCHEMA_NOT_FOUND, f"Schema {args['id']} not found")
            return {"schema": self.store.by_id(int(args["id"]))}
        if action == "subjects":
            return self.store.subjects()
        if action == "versions":
            return self.store.versions(subject)  # type: ignore[arg-type]
        return self.store.version(subject, args["version"]).as_dict()  # type: ignore[arg-type]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


def require_loopback(host: str) -> str:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise ValueError(f"hs-registry listens on loopback only, not {host!r}")
    return host


def make_server(host: str = "127.0.0.1", port: int = 0, store: SchemaStore | None = None) -> ThreadingHTTPServer:
    """A registry server bound (not yet serving); ``port`` 0 picks a free one (``server_port``)."""
    handler = type("BoundHandler", (Handler,), {"store": store or SchemaStore()})
    server = ThreadingHTTPServer((require_loopback(host), port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hs-registry", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one, printed at start)")
    parser.add_argument("--store", type=Path, help="JSON-lines file that keeps the schemas across restarts")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s hs-registry %(levelname)s %(message)s")
    try:
        server = make_server(args.host, args.port, SchemaStore(args.store))
    except (ValueError, OSError) as exc:
        print(f"hs-registry: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    # The first line on stdout is the URL: tools/kafka_local.py reads it to learn the port.
    print(f"http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
