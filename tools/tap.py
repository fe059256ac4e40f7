"""hs-tap: attach to Header Service PUB sockets and show the messages flowing through them, live.

Examples::

    hs-tap --instance LATISS                      # listener, composer (fast path) and publisher
    hs-tap tcp://127.0.0.1:5552 --filter hdr.     # only finished headers
    hs-tap --instance LATISS --filter sal.ATCamera. --full
    hs-tap --instance LATISS --stats              # per-topic rates, gaps and restarts every second
    hs-tap tcp://127.0.0.1:5550 --json --count 10 | jq .
    hs-tap --instance LATISS --bus kafka [--from-start]   # the instance's SAL records on Kafka

The tap is a plain SUB socket: attaching it never disturbs the service. Sequence numbers are per
sender across all its topics, so gaps are only reported when the subscription is unfiltered.
Malformed messages are reported with the reason and counted; they never stop the tap. All times
shown are TAI (the envelope's send time; the receive time for malformed messages).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections import Counter
from typing import Any, Sequence, TextIO

import zmq

from protocols.envelope import EnvelopeError, GapTracker, Message, SeqStatus, decode, sender_role, tai_now

SUMMARY_FIELDS = 4  # SAL data fields shown in a one-line summary
TEXT_WIDTH = 32  # longest string value shown in a summary


# --------------------------------------------------------------------------------------------
# Formatting (pure functions)
# --------------------------------------------------------------------------------------------


def format_time(t: float | None) -> str:
    """``HH:MM:SS.mmm`` of a (TAI) unix time; ``--:--:--.---`` if unknown."""
    if t is None or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        return "--:--:--.---"
    whole = int(t)
    return time.strftime("%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1000):03d}"


def short_value(v: Any) -> str:
    """A value shortened for a one-line summary."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        if len(v) > TEXT_WIDTH:
            v = v[: TEXT_WIDTH - 1] + "…"
        return repr(v)
    if isinstance(v, list):
        head = ",".join(short_value(x) for x in v[:3])
        return f"[{head}{',…' if len(v) > 3 else ''}]({len(v)})" if len(v) > 3 else f"[{head}]"
    if isinstance(v, dict):
        return "{" + ",".join(list(v)[:3]) + (",…" if len(v) > 3 else "") + "}"
    return str(v)[:TEXT_WIDTH]


def summarize_sal(payload: Any) -> str:
    if isinstance(payload, list) and payload:  # a batch of samples of one topic: its size and the last
        return f"batch of {len(payload)}, last: " + summarize_sal(payload[-1])
    if not isinstance(payload, dict):
        return f"(payload is a {type(payload).__name__}, expected an object)"
    snd = payload.get("sndStamp")
    is_number = isinstance(snd, (int, float)) and not isinstance(snd, bool)
    parts = [f"salIndex={payload.get('salIndex', '?')}", f"sndStamp={snd:.3f}" if is_number else f"sndStamp={snd}"]
    data = payload.get("data")
    if isinstance(data, dict):
        fields = [(k, v) for k, v in data.items() if not k.startswith("private_")]
        parts += [f"{k}={short_value(v)}" for k, v in fields[:SUMMARY_FIELDS]]
        if len(fields) > SUMMARY_FIELDS:
            parts.append(f"(+{len(fields) - SUMMARY_FIELDS} fields)")
    else:
        parts.append("(no data)")
    return " ".join(parts)


def summarize_hdr(payload: Any) -> str:
    if not isinstance(payload, dict):
        return f"(payload is a {type(payload).__name__}, expected an object)"
    hdus = payload.get("hdus")
    if isinstance(hdus, list):
        ncards = sum(len(h.get("cards") or []) for h in hdus if isinstance(h, dict))
        hdu_text = f"hdus={len(hdus)} cards={ncards}"
    else:
        hdu_text = "hdus=? (no 'hdus' list)"
    text = (
        f"imageName={payload.get('imageName', '?')} version={payload.get('version', '?')} "
        f"complete={payload.get('complete', '?')} {hdu_text}"
    )
    reasons = payload.get("reasons")
    if isinstance(reasons, list) and reasons:
        text += f" reasons={len(reasons)}: {short_value(str(reasons[0]))}"
    return text


def summarize_other(payload: Any) -> str:
    if isinstance(payload, dict):
        keys = list(payload)
        if not keys:
            return "{}"
        more = f", … (+{len(keys) - 12})" if len(keys) > 12 else ""
        return "keys: " + ", ".join(keys[:12]) + more
    return short_value(payload)


def payload_summary(topic: str, payload: Any) -> str:
    """Short summary of a payload according to its topic family (sal., hdr., ctl., other)."""
    family = topic.split(".", 1)[0]
    if family == "sal":
        return summarize_sal(payload)
    if family == "hdr":
        return summarize_hdr(payload)
    return summarize_other(payload)


def summarize(message: Message, status: SeqStatus | None = None) -> str:
    """One line: send time (TAI), topic, sequence number, sender role, payload summary.

    With ``status`` (from a :class:`GapTracker`), lost messages and restarts are flagged.
    """
    env = message.envelope
    flags = ""
    if status is not None:
        if status.restarted:
            flags += " [sender restarted]"
        if status.gap:
            flags += f" [GAP: {status.gap} lost]"
        if status.duplicate:
            flags += " [duplicate]"
    return (
        f"{format_time(env.sent)} {message.topic} #{env.seq} {sender_role(env.sender)}{flags} | "
        f"{payload_summary(message.topic, message.payload)}"
    )


def format_error(reason: str, frames: Sequence[bytes], received: float | None = None) -> str:
    """One line for a malformed message: receive time (TAI), frame count, first frame, reason."""
    first = repr(frames[0][:40]) if frames else "none"
    return f"{format_time(received)} ERROR malformed message ({len(frames)} frames, frame 0 {first}): {reason}"


def json_safe(v: Any) -> Any:
    """Payload made strict-JSON: non-finite floats become the strings 'NaN', 'Infinity', '-Infinity'."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    return v


def json_record(message: Message, status: SeqStatus | None = None, full: bool = False) -> dict[str, Any]:
    """The ``--json`` object of one message."""
    env = message.envelope
    rec: dict[str, Any] = {
        "topic": message.topic,
        "seq": env.seq,
        "sender": env.sender,
        "sent": env.sent,
        "summary": payload_summary(message.topic, message.payload),
    }
    if status is not None:
        if status.gap:
            rec["gap"] = status.gap
        if status.restarted:
            rec["restarted"] = True
        if status.duplicate:
            rec["duplicate"] = True
    if full:
        rec["payload"] = json_safe(message.payload)
    return rec


def full_text(message: Message) -> str:
    """The whole payload for ``--full``: card images one per line for headers, else indented JSON."""
    p = message.payload
    if message.topic.startswith("hdr.") and isinstance(p, dict) and isinstance(p.get("hdus"), list):
        lines = []
        rest = {k: v for k, v in p.items() if k != "hdus"}
        lines.append("    " + json.dumps(json_safe(rest), sort_keys=True))
        for n, h in enumerate(p["hdus"]):
            if not isinstance(h, dict):
                lines.append(f"    HDU {n}: {short_value(h)}")
                continue
            lines.append(f"    --- HDU {n} {h.get('name', '')}")
            lines += [f"    {str(c).rstrip()}" for c in h.get("cards") or []]
        return "\n".join(lines)
    text = json.dumps(json_safe(p), indent=2, sort_keys=True)
    return "\n".join("    " + line for line in text.splitlines())


class RateStats:
    """Message counts per topic, rates per reporting interval, sequence gaps and restarts.

    Pure: callers pass the time. ``track_gaps`` must be False when the subscription is filtered,
    since every topic of a sender shares one sequence and filtered-out messages look lost.
    """

    def __init__(self, start: float, track_gaps: bool = True):
        self.start = start
        self.interval_start = start
        self.track_gaps = track_gaps
        self.tracker = GapTracker()
        self.totals: Counter[str] = Counter()
        self.interval: Counter[str] = Counter()
        self.malformed = 0
        self.malformed_interval = 0
        self.malformed_reasons: Counter[str] = Counter()

    @property
    def gaps(self) -> int:
        return self.tracker.gaps

    @property
    def restarts(self) -> int:
        return self.tracker.restarts

    @property
    def duplicates(self) -> int:
        return self.tracker.duplicates

    @property
    def gaps_by_sender(self) -> Counter[str]:
        """Messages lost per sender role."""
        return self.tracker.gaps_by_role

    @property
    def restarts_by_sender(self) -> Counter[str]:
        """Restarts per sender role."""
        return self.tracker.restarts_by_role

    @property
    def messages(self) -> int:
        return sum(self.totals.values())

    def record(self, message: Message) -> SeqStatus:
        """Count one message; returns its sequence status (gap, restart, duplicate)."""
        self.totals[message.topic] += 1
        self.interval[message.topic] += 1
        if not self.track_gaps:
            return SeqStatus()
        return self.tracker.check(message.envelope)

    def record_malformed(self, reason: str) -> None:
        self.malformed += 1
        self.malformed_interval += 1
        self.malformed_reasons[reason.split(":", 1)[0]] += 1

    def rates(self, now: float) -> dict[str, float]:
        """Messages per second per topic since the start of the current interval (all topics seen)."""
        dt = max(now - self.interval_start, 1e-9)
        return {t: self.interval[t] / dt for t in sorted(self.totals)}

    def report(self, now: float) -> str:
        """The ``--stats`` block for the interval ending at ``now``; starts a new interval."""
        rates = self.rates(now)
        total = sum(rates.values())
        gaps = f"gaps {self.gaps} restarts {self.restarts}" if self.track_gaps else "gaps n/a (filtered)"
        lines = [
            f"-- {format_time(now)} TAI  {total:.1f} msg/s  {len(rates)} topics  {gaps}  malformed {self.malformed}"
            + (f" (+{self.malformed_interval})" if self.malformed_interval else "")
        ]
        width = max((len(t) for t in rates), default=0)
        for t, r in rates.items():
            lines.append(f"   {t:<{width}}  {r:8.1f} msg/s  total {self.totals[t]}")
        for role in sorted(set(self.gaps_by_sender) | set(self.restarts_by_sender)):
            lines.append(
                f"   sender {role}: {self.gaps_by_sender[role]} lost, {self.restarts_by_sender[role]} restarts"
            )
        self.interval.clear()
        self.malformed_interval = 0
        self.interval_start = now
        return "\n".join(lines)

    def report_dict(self, now: float) -> dict[str, Any]:
        """The ``--stats --json`` object for the interval ending at ``now``; starts a new interval."""
        out = {
            "stats": {
                "t": now,
                "rates": self.rates(now),
                "totals": dict(self.totals),
                "gaps": self.gaps if self.track_gaps else None,
                "restarts": self.restarts if self.track_gaps else None,
                "malformed": self.malformed,
            }
        }
        self.interval.clear()
        self.malformed_interval = 0
        self.interval_start = now
        return out

    def summary(self, now: float) -> str:
        """The exit summary: messages per topic, gaps, restarts, malformed."""
        elapsed = max(now - self.start, 0.0)
        lines = [f"hs-tap: {self.messages} messages in {elapsed:.1f} s, {self.malformed} malformed"]
        width = max((len(t) for t in self.totals), default=0)
        for t in sorted(self.totals):
            lines.append(f"  {t:<{width}}  {self.totals[t]}")
        if self.track_gaps:
            lines.append(
                f"  gaps: {self.gaps} messages lost, {self.restarts} sender restarts, {self.duplicates} duplicates"
            )
            for role in sorted(set(self.gaps_by_sender) | set(self.restarts_by_sender)):
                lines.append(f"    {role}: {self.gaps_by_sender[role]} lost, {self.restarts_by_sender[role]} restarts")
        else:
            lines.append("  gaps: not tracked (filtered subscription: sequence numbers span all topics)")
        for reason, n in self.malformed_reasons.most_common():
            lines.append(f"  malformed: {n} x {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hs-tap",
        description=(
            "Attach to Header Service ZeroMQ PUB sockets and show the messages live: one line per "
            "message (TAI send time, topic, sequence number, sender, payload summary). Never "
            "disturbs the service; malformed messages are reported and counted. A summary is "
            "printed on exit (to stderr)."
        ),
        epilog=(
            "examples:\n"
            "  hs-tap --instance LATISS\n"
            "  hs-tap tcp://127.0.0.1:5552 --filter hdr. --full\n"
            "  hs-tap --instance LATISS --filter sal.ATCamera. --filter ctl.\n"
            "  hs-tap --instance LATISS --stats\n"
            "  hs-tap ipc:///tmp/hs/listener --json --count 100\n"
            "\nexit status: 0, or 1 if --count was not reached before --timeout, 2 on a usage error"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "endpoints",
        nargs="*",
        metavar="ENDPOINT",
        help="PUB endpoint to attach to (tcp://HOST:PORT or ipc://PATH; HOST:PORT means tcp://)",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="attach to the listener, composer and publisher PUB sockets of this instance (e.g. LATISS)",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="PREFIX",
        help="subscribe only to topics starting with PREFIX (repeatable), e.g. sal.ATCamera. hdr. ctl.announced.",
    )
    p.add_argument(
        "--bus",
        choices=("zmq", "kafka"),
        default="zmq",
        help="zmq: the service's sockets (default); kafka: the instance's SAL topics on Kafka (topic, offset, key, "
        "decoded value, bad records with the reason), from ts_salobj's LSST_* variables",
    )
    p.add_argument("--from-start", action="store_true", help="with --bus kafka: from each topic's first record")
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages (malformed ones included)")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--stats",
        action="store_true",
        help="instead of each message, print per-topic rates, gaps and restarts every second",
    )
    mode.add_argument("--full", action="store_true", help="print the whole payload of each message")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line (topic, seq, sender, sent, summary; payload with --full)",
    )
    return p


def normalize_endpoint(ep: str) -> str:
    return ep if "://" in ep else f"tcp://{ep}"


def resolve_endpoints(args: argparse.Namespace) -> list[str]:
    """The endpoints to attach to: the given ones plus the instance's three PUB sockets."""
    eps = [normalize_endpoint(e) for e in args.endpoints]
    if args.instance:
        from protocols.config import load_instance

        e = load_instance(args.instance).endpoints
        eps += [e.listener_pub, e.composer_pub, e.publisher_pub]
    return list(dict.fromkeys(eps))


class Tap:
    """The running tap: one SUB socket connected to every endpoint."""

    def __init__(self, args: argparse.Namespace, endpoints: list[str], out: TextIO, err: TextIO):
        self.args = args
        self.out = out
        self.err = err
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        filters = args.filter or [""]
        for f in filters:
            self.sock.setsockopt(zmq.SUBSCRIBE, f.encode())
        for ep in endpoints:
            self.sock.connect(ep)
        self.stats = RateStats(tai_now(), track_gaps=not args.filter)
        self.seen = 0

    def emit(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def handle(self, frames: list[bytes]) -> None:
        self.seen += 1
        a = self.args
        try:
            msg = decode(frames)
        except EnvelopeError as exc:
            self.malformed(str(exc), frames)
            return
        st = self.stats.record(msg)
        if a.stats:
            return
        try:
            if a.json:
                self.emit(json.dumps(json_record(msg, st, a.full)))
            else:
                self.emit(summarize(msg, st))
                if a.full:
                    self.emit(full_text(msg))
        except Exception as exc:  # a payload shape no formatter foresaw: report, keep tapping
            self.malformed(f"cannot format {msg.topic}: {type(exc).__name__}: {exc}", frames)

    def malformed(self, reason: str, frames: list[bytes]) -> None:
        self.stats.record_malformed(reason)
        if self.args.stats:
            return
        if self.args.json:
            first = frames[0][:80].decode("ascii", "replace") if frames else None
            self.emit(json.dumps({"error": reason, "frames": len(frames), "frame0": first, "t": tai_now()}))
        else:
            self.emit(format_error(reason, frames, tai_now()))

    def run(self) -> int:
        a = self.args
        start = time.monotonic()
        deadline = None if a.timeout is None else start + a.timeout
        next_report = start + 1.0
        while a.count is None or self.seen < a.count:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if a.stats and now >= next_report:
                self.emit(json.dumps(self.stats.report_dict(tai_now())) if a.json else self.stats.report(tai_now()))
                next_report += 1.0
                if next_report < now:
                    next_report = now + 1.0
            wait = 0.5
            if deadline is not None:
                wait = min(wait, deadline - now)
            if a.stats:
                wait = min(wait, next_report - now)
            if self.sock.poll(max(1, int(wait * 1000))):
                # drain what is queued without blocking
                while a.count is None or self.seen < a.count:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames)
        return 1 if a.count is not None and self.seen < a.count else 0

    def close(self) -> None:
        self.sock.close(linger=0)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.bus == "kafka":
        return _kafka(parser, args)
    try:
        endpoints = resolve_endpoints(args)
    except Exception as exc:  # ConfigError and friends: a clear message, not a traceback
        parser.error(f"--instance {args.instance}: {exc}")
    if not endpoints:
        parser.error("give at least one ENDPOINT or --instance NAME")
    try:
        tap = Tap(args, endpoints, sys.stdout, sys.stderr)
    except zmq.ZMQError as exc:
        parser.error(f"cannot attach: {exc}")
    subs = ", ".join(args.filter) if args.filter else "all topics"
    print(f"hs-tap: attached to {', '.join(endpoints)} ({subs})", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # supervisord/timeout stop: still print the summary
    rc = 0
    try:
        rc = tap.run()
    except KeyboardInterrupt:
        rc = 0
    except BrokenPipeError:  # hs-tap ... | head
        rc = 0
    finally:
        try:
            print(tap.stats.summary(tai_now()), file=sys.stderr, flush=True)
        except BrokenPipeError:
            pass
        tap.close()
    return rc


def _kafka(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import os

    from protocols.kafka_config import KafkaConfigError, settings_from_env
    from tools import tap_kafka

    if not args.instance:
        parser.error("--bus kafka needs --instance NAME")
    try:
        settings = settings_from_env(os.environ, default_subname="sal")
        if settings.registry_url is None:
            raise KafkaConfigError("LSST_KAFKA_BROKER_ADDR and LSST_SCHEMA_REGISTRY_URL are not set")
        topics = tap_kafka.instance_topics(args.instance, settings.subname)
    except Exception as exc:  # settings or configuration: a clear message, not a traceback
        parser.error(f"--bus kafka: {exc}")
    signal.signal(signal.SIGTERM, _interrupt)
    return tap_kafka.run(topics, settings, sys.stdout, sys.stderr, from_start=args.from_start, count=args.count,
                         timeout=args.timeout, as_json=args.json)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
