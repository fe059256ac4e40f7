"""hs-cmd: command a Header Service CSC over SAL (DDS or Kafka) and wait for its answer.

    hs-cmd --instance LATISS start [--override NAME]
    hs-cmd --instance LATISS enable | disable | standby | exitControl
    hs-cmd --instance LATISS setLogLevel --level 10 [--subsystem NAME]
    hs-cmd --instance LATISS setHeaderCards --cards '{"OBSERVER": "Jane Doe"}' [--mode merge|replace|clear]
    hs-cmd --instance LATISS state

Each command goes out with a fresh private_seqNum and private_identity; hs-cmd prints every ackcmd
answering it and exits 0 on CMD_COMPLETE, 1 otherwise (failed, refused, or no answer in --timeout
seconds). ``state`` prints the CSC's current summaryState (read as a late joiner of the
transient-local event) and, in FAULT, the latest errorCode.

On Kafka (the instance's ``bus: kafka``, ``HS_BUS`` or ``--bus kafka``; ts_salobj's LSST_* variables)
the command is written as a ts_salobj Remote writes it (random private_seqNum, our identity) and the
ackcmd answering it is the one with the same private_seqNum and identity; ``state`` reads the last
summaryState record of the compacted event topic.
"""

from __future__ import annotations

import argparse
import getpass
import os
import random
import socket
import sys
import time
from typing import Any

from protocols import sal
from protocols.config import ConfigError, load_instance
from protocols.csc_state import AckCode, ErrorCode, State
from protocols.envelope import tai_now

FINAL_NOT = {AckCode.CMD_ACK, AckCode.CMD_INPROGRESS, AckCode.CMD_STALLED}
#: Seconds without any ackcmd after which a DDS command is written again (same seqNum).
RESEND_S = 1.0


def _code_name(enum: type, code: int) -> str:
    try:
        return enum(code).name
    except ValueError:
        return f"unknown({code})"


class Commander:
    """A SAL client of one CSC on one DDS domain (volatile commands and ackcmd, late-joining events)."""

    def __init__(self, csc: str, domain: int):
        sal.ensure_loopback_dds()
        from cyclonedds.domain import DomainParticipant

        self.csc = csc
        self.domain = domain
        self.dp = DomainParticipant(domain)
        self.identity = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"

    def _topic(self, name: str) -> tuple[Any, Any]:
        from cyclonedds.topic import Topic

        st = sal.get_topic(self.csc, name)
        qos = sal.qos_for(st.kind)
        return Topic(self.dp, st.dds_name, sal.idl_class(self.csc, name), qos=qos), qos

    def command(self, cmd: str, fields: dict[str, Any], timeout: float) -> int:
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader

        topic, qos = self._topic(f"command_{cmd}")
        writer = DataWriter(self.dp, topic, qos=qos)
        atopic, aqos = self._topic("ackcmd")
        acks = DataReader(self.dp, atopic, qos=aqos)
        deadline = time.monotonic() + timeout
        # Commands and ackcmd are volatile: wait until the CSC's reader and writer are both matched.
        while not (writer.get_matched_subscriptions() and acks.get_matched_publications()):
            if time.monotonic() > deadline:
                print(f"{self.csc} {cmd}: no {self.csc} on DDS domain {self.domain} within {timeout:g} s (is hs-csc running?)")
                return 1
            time.sleep(0.02)
        time.sleep(0.2)  # let the CSC's side of discovery complete too (its ackcmd writer must see us)
        seq = random.randint(1, 2**31 - 1)
        sample = sal.make_sample(
            self.csc,
            f"command_{cmd}",
            0,
            private_sndStamp=tai_now(),
            private_seqNum=seq,
            private_identity=self.identity,
            private_origin=os.getpid(),
            **fields,
        )
        writer.write(sample)
        # Matched on our side is not yet matched on the CSC's: a command (or its ackcmd) can still be
        # lost to discovery. With no ackcmd at all, write the same command again; the CSC answers a
        # repeated (identity, seqNum) with its first final answer instead of running it twice.
        acked = False
        resend_at = time.monotonic() + RESEND_S
        while time.monotonic() < deadline:
            if not acked and time.monotonic() > resend_at:
                writer.write(sample)
                resend_at = time.monotonic() + RESEND_S
            for s in acks.take(N=100):
                info = getattr(s, "sample_info", None)
                if info is not None and not info.valid_data:
                    continue
                if s.private_seqNum != seq or s.identity != self.identity:
                    continue
                acked = True
                name = _code_name(AckCode, s.ack)
                extra = f" timeout={s.timeout:g}s" if s.ack == AckCode.CMD_INPROGRESS else ""
                print(f"{self.csc} {cmd}: {name} ({s.ack}){extra}" + (f" result: {s.result}" if s.result else ""))
                sys.stdout.flush()
                if s.ack not in FINAL_NOT:
                    return 0 if s.ack == AckCode.CMD_COMPLETE else 1
            time.sleep(0.02)
        print(f"{self.csc} {cmd}: CMD_NOACK: no final ackcmd within {timeout:g} s")
        return 1

    def latest(self, event: str, timeout: float) -> Any | None:
        """The latest sample of a transient-local event (salIndex 0), as a late joiner gets it."""
        from cyclonedds.sub import DataReader

        topic, qos = self._topic(event)
        reader = DataReader(self.dp, topic, qos=qos)
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        settle: float | None = None
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            for s in reader.take(N=200):
                info = getattr(s, "sample_info", None)
                if (info is None or info.valid_data) and s.salIndex == 0:
                    got.append(s)
            if got and settle is None:
                settle = time.monotonic() + 0.3  # historical samples arrive together; take them all
            time.sleep(0.02)
        return max(got, key=lambda s: (s.private_sndStamp, s.private_seqNum)) if got else None

    def state(self, timeout: float) -> int:
        s = self.latest("summaryState", timeout)
        if s is None:
            print(f"{self.csc}: no summaryState on DDS domain {self.domain} within {timeout:g} s (is hs-csc running?)")
            return 1
        print(f"{self.csc} summaryState: {_code_name(State, s.summaryState)} ({s.summaryState})")
        if s.summaryState == State.FAULT:
            e = self.latest("errorCode", 2.0)
            if e is not None:
                print(f"{self.csc} errorCode: {e.errorCode} ({_code_name(ErrorCode, e.errorCode)}) {e.errorReport}")
        return 0


class KafkaCommander:
    """A SAL client of one CSC on Kafka: commands out, ackcmd matched by private_seqNum and identity."""

    def __init__(self, csc: str, env: dict[str, str] | None = None):
        from protocols.bus import KafkaSal

        self.csc = csc
        self.bus = KafkaSal.from_env(os.environ if env is None else env)
        self.identity = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"

    def command(self, cmd: str, fields: dict[str, Any], timeout: float) -> int:
        from protocols.bus import BusUnavailable
        from protocols.kafka_bus import new_command_id

        writer = self.bus.writer(self.csc, f"command_{cmd}", identity=self.identity)
        acks = self.bus.reader([(self.csc, "ackcmd")], start_at="latest")
        deadline = time.monotonic() + timeout
        try:
            self.bus.start(registry_wait_s=min(timeout, 10.0))
            acks.wait_assigned(max(1.0, deadline - time.monotonic()))
        except (BusUnavailable, TimeoutError) as exc:
            print(f"{self.csc} {cmd}: Kafka bus not usable: {exc}")
            return 1
        seq = new_command_id()
        writer.write(fields, 0, seq_num=seq)
        self.bus.flush(5.0)
        try:
            while time.monotonic() < deadline:
                for s in acks.poll(0.1):
                    if s.data.get("private_seqNum") != seq or s.data.get("identity") != self.identity:
                        continue
                    ack, result = int(s.data["ack"]), s.data.get("result", "")
                    extra = f" timeout={s.data['timeout']:g}s" if ack == AckCode.CMD_INPROGRESS else ""
                    print(f"{self.csc} {cmd}: {_code_name(AckCode, ack)} ({ack}){extra}" + (f" result: {result}" if result else ""))
                    sys.stdout.flush()
                    if ack not in FINAL_NOT:
                        return 0 if ack == AckCode.CMD_COMPLETE else 1
        finally:
            self.bus.close()
        print(f"{self.csc} {cmd}: CMD_NOACK: no final ackcmd within {timeout:g} s")
        return 1

    def latest(self, event: str, timeout: float) -> dict[str, Any] | None:
        """The last record of an event topic (salIndex 0), as a ts_salobj reader starts."""
        reader = self.bus.reader([(self.csc, event)], start_at="latest")
        self.bus.start(registry_wait_s=min(timeout, 10.0))
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not got:
            got = [s.data for s in reader.poll(0.2) if s.sal_index == 0]
        reader.close()
        return got[-1] if got else None

    def state(self, timeout: float) -> int:
        from protocols.bus import BusUnavailable

        try:
            s = self.latest("summaryState", timeout)
        except BusUnavailable as exc:
            print(f"{self.csc}: Kafka bus not usable: {exc}")
            return 1
        if s is None:
            print(f"{self.csc}: no summaryState on Kafka within {timeout:g} s (is hs-csc running?)")
            return 1
        print(f"{self.csc} summaryState: {_code_name(State, s['summaryState'])} ({s['summaryState']})")
        if s["summaryState"] == State.FAULT:
            e = self.latest("errorCode", 2.0)
            if e is not None:
                print(f"{self.csc} errorCode: {e['errorCode']} ({_code_name(ErrorCode, e['errorCode'])}) {e['errorReport']}")
        return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hs-cmd", description=__doc__.splitlines()[0])
    p.add_argument("--instance", default="LATISS", help="LATISS, ComCam, LSSTCam or an instance.yaml (default LATISS)")
    p.add_argument("--domain", type=int, default=None, help="DDS domain id (default: the instance's, or HS_DDS_DOMAIN)")
    p.add_argument("--bus", choices=("dds", "kafka"), default=None, help="SAL transport (default: the instance's bus)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the CSC's answer (default 10)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("start", help="STANDBY -> DISABLED")
    s.add_argument("--override", default="", help="configurationOverride (default: instance.yaml)")
    for name, what in (
        ("enable", "DISABLED -> ENABLED"),
        ("disable", "ENABLED -> DISABLED"),
        ("standby", "DISABLED or FAULT -> STANDBY"),
        ("exitControl", "STANDBY -> OFFLINE (the CSC process exits)"),
        ("state", "print the current summaryState"),
    ):
        sub.add_parser(name, help=what)
    s = sub.add_parser("setLogLevel", help="set the CSC's logging level")
    s.add_argument("--level", type=int, required=True, help="10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR")
    s.add_argument("--subsystem", default="", help="logger name (default: the CSC's)")
    s = sub.add_parser("setHeaderCards", help="set operator header cards (DISABLED or ENABLED)")
    s.add_argument("--cards", default="", help='JSON object, e.g. \'{"OBSERVER": "Jane Doe"}\' or KEY -> {"value", "comment"}')
    s.add_argument("--mode", default="merge", choices=("merge", "replace", "clear"))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        cfg = load_instance(args.instance)
    except ConfigError as exc:
        print(f"hs-cmd: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    domain = args.domain if args.domain is not None else cfg.dds_domain
    if (args.bus or cfg.bus) == "kafka":
        from protocols.bus import BusUnavailable

        try:
            commander: Commander | KafkaCommander = KafkaCommander(cfg.csc)
        except BusUnavailable as exc:
            print(f"hs-cmd: {exc}", file=sys.stderr)
            sys.exit(2)
    else:
        commander = Commander(cfg.csc, domain)
    if args.command == "state":
        sys.exit(commander.state(args.timeout))
    fields: dict[str, Any] = {}
    if args.command == "start":
        fields = {"configurationOverride": args.override}
    elif args.command == "setLogLevel":
        fields = {"level": args.level, "subsystem": args.subsystem}
    elif args.command == "setHeaderCards":
        fields = {"cards": args.cards, "mode": args.mode}
    sys.exit(commander.command(args.command, fields, args.timeout))


if __name__ == "__main__":
    main()
