"""hs-csc: the SAL Commandable Component of one Header Service instance.

Joins the instance's SAL bus (DDS domain, or Kafka as ts_salobj 8: ``bus: kafka``) as ``<csc>`` (ATHeaderService, CCHeaderService, MTHeaderService),
salIndex 0, and behaves like any observatory CSC: starts in STANDBY; commands start, enable,
disable, standby, exitControl and setLogLevel are answered on ackcmd (CMD_INPROGRESS then
CMD_COMPLETE, CMD_FAILED with the reason, or CMD_NOPERM when the current state does not allow the
command); events summaryState, heartbeat (1 s), errorCode, logMessage, softwareVersions,
configurationsAvailable, configurationApplied and logLevel. exitControl publishes OFFLINE and ends
the process with exit code 0. ackcmd's ``cmdtype`` numbers commands as ts_salobj does (index among
the component's sorted SAL names, ``ackcmd`` first: disable 1 ... start 6; our setHeaderCards 7).

On Kafka, commands are read from the latest record in a consumer group of this start's own, and
the CSC announces itself (summaryState STANDBY...) only once the bus is up (schema registry
answering, topics created, command reader assigned); until then it says why in its log, retries
every few seconds, and can take no command, so it cannot become ENABLED without its bus.

The commanded state is journaled (``<state_dir>/<instrument>/csc_state.json``): a CSC killed or
stopped (SIGTERM from supervisord) and started again resumes it (ENABLED stays ENABLED, so no
exposure is skipped for a restart) and publishes it at once; only exitControl ends it.

Its own command ``setHeaderCards`` (cards: JSON object, mode: merge|replace|clear; allowed in
DISABLED and ENABLED) sets operator cards such as OBSERVER that the composer writes into every
header from the next exposure on. Every accepted change increments the overrides version and is
persisted to ``<state_dir>/<instrument>/csc_overrides.json``, so it survives restarts.

The header processes follow the state and the overrides over ZeroMQ and report faults back
(:mod:`protocols.csc_state`); a fault arriving in DISABLED or ENABLED puts the CSC in FAULT with an
errorCode event. A warning (the annex unwritable while headers are kept, a header set aside) leaves
the state alone: errorCode and logMessage when it starts, a logMessage reminder every minute while it
lasts, errorCode 0 and a logMessage when it is over.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml
import zmq

from header.cards import CardError, format_card, is_printable_ascii
from procs.common import Counters, Stop, run_process
from procs.journal import read_json, write_json_atomic
from protocols import kafka_wire, sal
from protocols.bus import BusUnavailable, open_bus
from protocols.config import InstanceConfig
from protocols.csc_state import (
    FAULT_PREFIX,
    WARNING_PREFIX,
    HEARTBEAT_S,
    AckCode,
    ErrorCode,
    State,
    empty_overrides,
    state_payload,
    state_pub_endpoint,
    state_rep_endpoint,
    state_topic,
)
from protocols.envelope import FORMAT_VERSION, EnvelopeError, Sender, decode, loads_bounded, sender_id, tai_now
from protocols.messages import Fault, OperatorWarning
from protocols.timescale import tai_minus_utc

log = logging.getLogger("csc")

PACKAGE = "rubin-header-service"
DEFAULT_CONFIGURATION = "instance.yaml"
WARNING_REMINDER_S = 60.0  # s between logMessage reminders of an ongoing warning
WARNING_EXPIRY_S = 30.0  # s without news of a warning before it counts as over (its senders repeat every 5 s)
OVERRIDES_FILE = "csc_overrides.json"
STATE_FILE = "csc_state.json"

# --------------------------------------------------------------------------------------------------
# Header-card overrides (pure; unit-tested without DDS)
# --------------------------------------------------------------------------------------------------

MAX_CARDS = 100
MAX_STRING = 1000
MAX_COMMENT = 72
MODES = ("merge", "replace", "clear")
_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
_HIERARCH_KEY = re.compile(r"^[A-Z0-9_-]+( [A-Z0-9_-]+)*$")
#: Cards the header structure or its integrity depend on: never set by an operator.
RESERVED = {
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "END", "CHECKSUM",
    "DATASUM", "CONTINUE", "COMMENT", "HISTORY", "HIERARCH", "EXTNAME", "EXTVER", "INHERIT",
    "LONGSTRN", "BLANK", "BSCALE", "BZERO",
}  # fmt: skip


class CardsError(ValueError):
    """setHeaderCards input that cannot become header cards; the message says which and why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise CardsError(f"keyword {k!r} is given twice")
        out[k] = v
    return out


def parse_cards(text: str) -> dict[str, Any]:
    """The ``cards`` field: a JSON object (empty text is an empty object)."""
    if not text.strip():
        return {}
    try:
        obj = loads_bounded(text, "cards", object_pairs_hook=_no_duplicates)
    except CardsError:
        raise
    except ValueError as exc:
        raise CardsError(f"cards is not valid JSON: {str(exc).removeprefix('cards is not JSON: ')}") from None
    if not isinstance(obj, dict):
        raise CardsError(f"cards must be a JSON object KEY -> value, not {type(obj).__name__}")
    return obj


def normalize_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise CardsError("empty keyword")
    if not is_printable_ascii(key):
        raise CardsError(f"keyword {key!r} is not printable ASCII")
    k = key.upper()
    if k.startswith("HIERARCH "):
        k = k[9:]
    if k != k.strip():
        raise CardsError(f"keyword {key!r} has leading or trailing spaces")
    if k in RESERVED or re.fullmatch(r"NAXIS\d+", k) or k.startswith("TFORM") or k.startswith("TTYPE"):
        raise CardsError(f"keyword {k} is reserved for the header structure")
    if _STANDARD_KEY.match(k):
        return k
    if len(k) > 60 or not _HIERARCH_KEY.match(k):
        raise CardsError(
            f"keyword {key!r} is neither a FITS keyword (<= 8 characters A-Z 0-9 - _) nor a HIERARCH name "
            "(words of A-Z 0-9 - _ separated by single spaces, <= 60 characters)"
        )
    return k


def normalize_card(key: Any, spec: Any, allow_delete: bool) -> tuple[str, dict[str, Any] | None]:
    """(KEY, {"value", "comment"}) of one card; None means "remove KEY" (merge only)."""
    k = normalize_key(key)
    comment: Any = ""
    if isinstance(spec, dict):
        extra = set(spec) - {"value", "comment"}
        if extra:
            raise CardsError(f"{k}: unknown field(s) {', '.join(sorted(extra))} (use value and comment)")
        if "value" not in spec:
            raise CardsError(f"{k}: no value")
        value = spec["value"]
        comment = spec.get("comment", "")
    else:
        value = spec
    if value is None:
        if not allow_delete:
            raise CardsError(f"{k}: null value (a null removes a card in merge mode only)")
        return k, None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise CardsError(f"{k}: integer {value} does not fit a FITS integer (64 bits)")
    elif isinstance(value, float):
        if math.isnan(value):
            raise CardsError(f"{k}: NaN is not a FITS value")
        if not math.isfinite(value):
            raise CardsError(f"{k}: infinity is not a FITS value")
    elif isinstance(value, str):
        if not is_printable_ascii(value):
            raise CardsError(f"{k}: value holds non-printable or non-ASCII characters")
        if len(value) > MAX_STRING:
            raise CardsError(f"{k}: string longer than {MAX_STRING} characters")
    else:
        raise CardsError(f"{k}: value must be a string, integer, float or boolean, not {type(value).__name__}")
    if not isinstance(comment, str):
        raise CardsError(f"{k}: comment must be a string")
    if not is_printable_ascii(comment):
        raise CardsError(f"{k}: comment holds non-printable or non-ASCII characters")
    if len(comment) > MAX_COMMENT:
        raise CardsError(f"{k}: comment longer than {MAX_COMMENT} characters")
    try:
        format_card(k, value, comment)
    except CardError as exc:
        raise CardsError(f"{k}: {exc}") from None
    return k, {"value": value, "comment": comment}


def apply_cards(current: dict[str, dict[str, Any]], cards: Any, mode: str) -> dict[str, dict[str, Any]]:
    """The new set of override cards after a setHeaderCards(cards, mode); raises CardsError."""
    mode = (mode or "merge").strip().lower()
    if mode not in MODES:
        raise CardsError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    given = parse_cards(cards) if isinstance(cards, str) else cards
    if not isinstance(given, dict):
        raise CardsError(f"cards must be a mapping KEY -> value, not {type(given).__name__}")
    if mode == "clear":
        if given:
            raise CardsError("mode clear removes every card: give no cards")
        return {}
    if mode == "merge" and not given:
        raise CardsError("no cards given (mode merge)")
    new = dict(current) if mode == "merge" else {}
    seen: set[str] = set()
    for key, spec in given.items():
        k, card = normalize_card(key, spec, allow_delete=mode == "merge")
        if k in seen:
            raise CardsError(f"keyword {k} is given twice")
        seen.add(k)
        if card is None:
            new.pop(k, None)
        else:
            new[k] = card
    if len(new) > MAX_CARDS:
        raise CardsError(f"{len(new)} cards: at most {MAX_CARDS} override cards")
    return new


class OverrideStore:
    """The overrides (version, cards, setAt, by), persisted atomically as JSON."""

    def __init__(self, path: Path):
        self.path = path
        self.data = empty_overrides()
        self.problem: str | None = None  # why the stored file could not be used, if it could not

    def load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            version = raw["version"]
            if not isinstance(version, int) or version < 0:
                raise ValueError(f"version {version!r} is not a count")
            cards = apply_cards({}, raw["cards"], "replace")
            self.data = {"version": version, "cards": cards, "setAt": raw.get("setAt"), "by": str(raw.get("by", ""))}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            self.problem = f"{self.path} unusable ({exc}); kept as {aside.name}, starting without overrides"

    def save(self, data: dict[str, Any], extra: dict[str, Any]) -> None:
        write_json_atomic(self.path, {**data, **extra})
        self.data = data


#: States an operator's command (or a fault) leaves the CSC in, restored after an unexpected end.
RESTORABLE = frozenset({State.STANDBY, State.DISABLED, State.ENABLED, State.FAULT})


class StateJournal:
    """The commanded summary state, journaled so that a CSC killed or crashed comes back in it.

    An operator commanded ENABLED; a kill -9 or a ``supervisorctl restart`` of hs-csc is not an
    operator command, so the restarted process resumes the state (with its configuration, or its
    errorCode if in FAULT) instead of STANDBY. Only exitControl, the operator's command to leave,
    clears the journal: the next start is then STANDBY, as for any CSC.
    """

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The journaled state, or None when there is none or it is not usable (logged)."""
        raw = read_json(self.path, None)
        if raw is None:
            return None
        try:
            state = State[raw["state"]]
            if state not in RESTORABLE:
                raise ValueError(f"state {state.name} is not restorable")
            code = raw.get("errorCode")
            if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
                raise ValueError(f"errorCode {code!r} is not an integer")
            return {
                "state": state,
                "configuration": str(raw.get("configuration") or ""),
                "errorCode": code,
                "errorReport": str(raw.get("errorReport") or ""),
                "setAt": raw.get("setAt"),
            }
        except (KeyError, TypeError, ValueError) as exc:
            log.error("state journal %s unusable (%s): starting in STANDBY", self.path, exc)
            return None

    def save(self, state: State, configuration: str | None, error: tuple[int, str] | None) -> None:
        record: dict[str, Any] = {"state": state.name, "configuration": configuration or "", "setAt": tai_now()}
        if error is not None:
            record["errorCode"], record["errorReport"] = error
        write_json_atomic(self.path, record)

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------------
# The CSC
# --------------------------------------------------------------------------------------------------


class CommandFailed(Exception):
    """A command that was allowed but could not be done: answered CMD_FAILED with this reason."""


_ANY_STATE = frozenset({State.STANDBY, State.DISABLED, State.ENABLED, State.FAULT})
#: Command -> states it is allowed in (else CMD_NOPERM).
ALLOWED: dict[str, frozenset[State]] = {
    "start": frozenset({State.STANDBY}),
    "enable": frozenset({State.DISABLED}),
    "disable": frozenset({State.ENABLED}),
    "standby": frozenset({State.DISABLED, State.FAULT}),
    "exitControl": frozenset({State.STANDBY}),
    "setLogLevel": _ANY_STATE,
    "setHeaderCards": frozenset({State.DISABLED, State.ENABLED}),
}
COMMANDS = tuple(sorted(ALLOWED))
#: ackcmd.cmdtype as ts_salobj numbers ts_xml's commands; ours (setHeaderCards) after them.
CMDTYPES = kafka_wire.header_service_command_types(c for c in COMMANDS if c not in kafka_wire.TS_XML_HEADER_SERVICE_COMMANDS)
BUS_RETRY_S = 2.0
EVENTS = (
    "summaryState", "heartbeat", "errorCode", "logMessage", "softwareVersions",
    "configurationsAvailable", "configurationApplied", "logLevel",
)  # fmt: skip
INPROGRESS_TIMEOUT = 10.0


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def interface_version() -> str:
    """Identifies the SAL interface definitions in use: hash of protocols/sal_topics.yaml."""
    return "sal_topics.yaml sha256:" + hashlib.sha256(sal.TOPICS_YAML.read_bytes()).hexdigest()[:12]


class DdsLogHandler(logging.Handler):
    """Publishes the CSC's log records as logMessage events."""

    def __init__(self, write: Callable[[logging.LogRecord], None]):
        super().__init__()
        self.write = write
        self._busy = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self.write(record)
        except Exception:  # noqa: BLE001 (logging must never take the CSC down)
            pass
        finally:
            self._busy = False


class Csc:
    """The state machine once; one ``do_<command>`` method per command (as ts_salobj's BaseCsc)."""

    def __init__(self, cfg: InstanceConfig, overrides_dir: Path | None = None):
        self.cfg = cfg
        self.name = cfg.csc
        self.state = State.STANDBY
        self.counts = Counters()
        self.origin = os.getpid()
        self.overrides_dir = overrides_dir if overrides_dir is not None else cfg.folder / "overrides"
        self.store = OverrideStore(Path(cfg.state_dir) / cfg.instrument / OVERRIDES_FILE)
        self.store.load()
        self.applied: str | None = None
        self.error: tuple[int, str] | None = None  # (errorCode, report) of the current FAULT
        self.journal = StateJournal(Path(cfg.state_dir) / cfg.instrument / STATE_FILE)
        self.restored = self.journal.load()
        self._seq: dict[str, int] = {}
        self.warnings: dict[int, tuple[str, float, float]] = {}  # code -> (report, last logged, last heard)
        self._open_zmq()
        self._open_bus()
        self.log_handler = DdsLogHandler(self._write_log_message)
        log.addHandler(self.log_handler)

    # -- transports ------------------------------------------------------------------------------
    def _open_zmq(self) -> None:
        ctx = zmq.Context.instance()
        self.sender = Sender(sender_id("csc", self.cfg.instrument))
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(state_pub_endpoint(self.cfg))
        self.rep = ctx.socket(zmq.REP)
        self.rep.bind(state_rep_endpoint(self.cfg))
        self.faults = ctx.socket(zmq.SUB)
        self.faults.setsockopt(zmq.SUBSCRIBE, FAULT_PREFIX.encode())
        self.faults.setsockopt(zmq.SUBSCRIBE, WARNING_PREFIX.encode())
        for ep in (self.cfg.endpoints.composer_pub, self.cfg.endpoints.publisher_pub):
            self.faults.connect(ep)
        self.poller = zmq.Poller()
        self.poller.register(self.rep, zmq.POLLIN)
        self.poller.register(self.faults, zmq.POLLIN)

    def _open_bus(self) -> None:
        self.bus = open_bus(self.cfg)
        self.writers = {ev: self.bus.writer(self.name, ev, identity=self.name) for ev in EVENTS + ("ackcmd",)}
        group = f"hs-csc-{self.name}-{os.getpid()}-{time.time_ns()}"  # unique per start: commands from now on
        self.commands = self.bus.reader([(self.name, f"command_{c}") for c in COMMANDS], group=group, start_at="latest")
        self.bus_up = self.bus.kind == "dds"
        self.bus_problem = ""

    def connect_bus(self) -> bool:
        """Kafka: try once to bring the bus up (registry, topics, command reader); True when up."""
        if self.bus_up:
            return True
        try:
            self.bus.start(registry_wait_s=1.0)
            self.commands.wait_assigned(10.0)
        except (BusUnavailable, TimeoutError) as exc:
            if str(exc) != self.bus_problem:
                log.error("SAL bus (%s) not up, %s stays unreachable; retrying every %.0f s: %s", self.bus.kind, self.name, BUS_RETRY_S, exc)
            self.bus_problem = str(exc)
            return False
        self.bus_up = True
        log.info("SAL bus (%s) up", self.bus.kind)
        return True

    def _write(self, topic: str, /, **fields: Any) -> None:
        if not self.bus_up:
            return
        seq = fields.pop("private_seqNum", None)
        self.writers[topic].write(fields, 0, seq_num=seq)

    def _write_log_message(self, record: logging.LogRecord) -> None:
        tb = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        self._write(
            "logMessage",
            name=record.name,
            level=record.levelno,
            message=record.getMessage(),
            traceback=tb,
            filePath=record.pathname,
            functionName=record.funcName,
            lineNumber=record.lineno,
            process=record.process or 0,
            timestamp=record.created + tai_minus_utc(record.created),
        )

    # -- state publication -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return state_payload(self.state, self.store.data, self.name)

    def publish_state(self) -> None:
        self.pub.send_multipart(self.sender.frames(state_topic(self.cfg.instrument), self.payload()))

    def set_state(self, new: State, journal: bool = True) -> None:
        """Publish a new summaryState; ``journal=False`` leaves the journaled state as it is (the
        OFFLINE of a process stopped by a signal, which resumes the commanded state at its next start)."""
        old, self.state = self.state, new
        if new != State.FAULT:
            self.error = None
        if journal:
            self._journal(new)
        self._write("summaryState", summaryState=int(new))
        self.publish_state()
        if old != new:
            log.info("summaryState %s -> %s", old.name, new.name)

    def _journal(self, state: State) -> None:
        """Persist the commanded state before it is published (OFFLINE ends the journal)."""
        try:
            if state in RESTORABLE:
                self.journal.save(state, self.applied, self.error)
            else:
                self.journal.clear()
        except OSError as exc:
            log.error("cannot journal summaryState %s to %s: %s (a restart would not restore it)", state.name, self.journal.path, exc)

    def fault(self, code: int, report: str, tb: str = "") -> None:
        """Go to FAULT: errorCode first (the explanation), then summaryState, as ts_salobj does."""
        self.error = (int(code), report)
        self._write("errorCode", errorCode=int(code), errorReport=report, traceback=tb)
        self.set_state(State.FAULT)
        log.error("FAULT (errorCode %d %s): %s", code, _code_name(code), report)

    def initial_state(self) -> State:
        """STANDBY, or the state journaled by a process that ended without an orderly stop."""
        r = self.restored
        if r is None:
            return State.STANDBY
        if r["state"] in (State.DISABLED, State.ENABLED):
            name = r["configuration"] or DEFAULT_CONFIGURATION
            self.applied = name
            self._write(
                "configurationApplied",
                configurations=name,
                version=package_version(),
                url=(self.cfg.folder / DEFAULT_CONFIGURATION).as_uri() if name == DEFAULT_CONFIGURATION else (self.overrides_dir / name).as_uri(),
                schemaVersion="v1",
                otherInfo=f"header card overrides version {self.store.data['version']} (restored)",
            )
        if r["state"] == State.FAULT:
            self.error = (int(r["errorCode"] or ErrorCode.INTERNAL), r["errorReport"])
            self._write("errorCode", errorCode=self.error[0], errorReport=self.error[1], traceback="")
        log.warning("restarted without an orderly stop: resuming %s journaled at %s", r["state"].name, r["setAt"])
        return r["state"]

    def announce_startup(self) -> None:
        self.set_state(self.initial_state())
        self._write(
            "softwareVersions",
            cscVersion=package_version(),
            salVersion=(
                "none: Cyclone DDS " + _dist_version("cyclonedds")
                if self.bus.kind == "dds"
                else "none: Kafka, confluent-kafka " + _dist_version("confluent-kafka")
            ),
            xmlVersion=interface_version(),
            subsystemVersions=f"envelope={FORMAT_VERSION}",
        )
        self._write(
            "configurationsAvailable",
            overrides=",".join(self.available_configurations()),
            version=package_version(),
            url=self.cfg.folder.as_uri(),
            schemaVersion="v1",
        )
        self._write("logLevel", level=log.getEffectiveLevel(), subsystem="")
        self._write("heartbeat", heartbeat=True)
        if self.store.problem:
            log.error("overrides: %s", self.store.problem)
        log.info(
            "%s up in %s on %s; state on %s (REP %s); overrides v%d (%d cards)",
            self.name,
            self.state.name,
            f"DDS domain {self.cfg.dds_domain}" if self.bus.kind == "dds" else "Kafka",
            state_pub_endpoint(self.cfg),
            state_rep_endpoint(self.cfg),
            self.store.data["version"],
            len(self.store.data["cards"]),
        )

    def heartbeat(self) -> None:
        self._write("heartbeat", heartbeat=True)
        self.publish_state()

    # -- commands --------------------------------------------------------------------------------
    def ack(self, cmd: str, sample: Any, code: AckCode, result: str = "", timeout: float = 0.0) -> None:
        self._write(
            "ackcmd",
            private_seqNum=sample.private_seqNum,
            ack=int(code),
            error=1 if code == AckCode.CMD_FAILED else 0,
            result=result,
            identity=sample.private_identity,
            origin=sample.private_origin,
            cmdtype=CMDTYPES[cmd],
            timeout=timeout,
        )

    def handle_command(self, cmd: str, sample: Any) -> None:
        self.counts[f"cmd_{cmd}"] += 1
        if self.state not in ALLOWED[cmd]:
            allowed = ", ".join(s.name for s in sorted(ALLOWED[cmd], key=int))
            self.ack(cmd, sample, AckCode.CMD_NOPERM, f"{cmd} not allowed in state {self.state.name} (only in {allowed})")
            log.warning("%s from %s refused in %s", cmd, sample.private_identity, self.state.name)
            return
        self.ack(cmd, sample, AckCode.CMD_INPROGRESS, timeout=INPROGRESS_TIMEOUT)
        try:
            result = getattr(self, f"do_{cmd}")(sample) or ""
        except CommandFailed as exc:
            self.ack(cmd, sample, AckCode.CMD_FAILED, str(exc))
            log.warning("%s from %s failed: %s", cmd, sample.private_identity, exc)
            return
        except Exception as exc:  # noqa: BLE001 (a bug answers the command, it does not kill the CSC)
            self.ack(cmd, sample, AckCode.CMD_FAILED, f"internal error: {type(exc).__name__}: {exc}")
            log.exception("%s failed with an internal error", cmd)
            return
        self.ack(cmd, sample, AckCode.CMD_COMPLETE, result)

    def available_configurations(self) -> list[str]:
        names = [DEFAULT_CONFIGURATION]
        if self.overrides_dir.is_dir():
            names += sorted(p.name for p in self.overrides_dir.glob("*.yaml") if p.name != DEFAULT_CONFIGURATION)
        return names

    def do_start(self, sample: Any) -> str:
        name = sample.configurationOverride.strip() or DEFAULT_CONFIGURATION
        available = self.available_configurations()
        if name not in available:
            raise CommandFailed(f"unknown configurationOverride {name!r}; available: {', '.join(available)}")
        url = (self.cfg.folder / DEFAULT_CONFIGURATION).as_uri()
        if name != DEFAULT_CONFIGURATION:
            path = self.overrides_dir / name
            url = path.as_uri()
            try:
                spec = yaml.safe_load(path.read_text()) or {}
                if not isinstance(spec, dict) or set(spec) - {"cards", "mode"}:
                    raise CardsError("expected a mapping with 'cards' and optionally 'mode'")
                if spec.get("cards"):
                    self._set_cards(spec["cards"], str(spec.get("mode") or "merge"), f"{name}")
            except (OSError, yaml.YAMLError, CardsError) as exc:
                raise CommandFailed(f"configuration override {name}: {exc}") from None
        self.applied = name
        self._write(
            "configurationApplied",
            configurations=name,
            version=package_version(),
            url=url,
            schemaVersion="v1",
            otherInfo=f"header card overrides version {self.store.data['version']}",
        )
        self.set_state(State.DISABLED)
        return f"configuration {name}"

    def do_enable(self, sample: Any) -> str:
        self.set_state(State.ENABLED)
        return ""

    def do_disable(self, sample: Any) -> str:
        self.set_state(State.DISABLED)
        return ""

    def do_standby(self, sample: Any) -> str:
        self.set_state(State.STANDBY)
        return ""

    def do_exitControl(self, sample: Any) -> str:
        self.set_state(State.OFFLINE)
        return ""

    def do_setLogLevel(self, sample: Any) -> str:
        level = int(sample.level)
        if level < 0:
            raise CommandFailed(f"level {level} is negative (use 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR)")
        subsystem = sample.subsystem.strip()
        logging.getLogger(subsystem or log.name).setLevel(level)
        self._write("logLevel", level=level, subsystem=subsystem)
        return f"{subsystem or log.name} level {logging.getLevelName(level)}"

    def do_setHeaderCards(self, sample: Any) -> str:
        try:
            v = self._set_cards(sample.cards, sample.mode, sample.private_identity)
        except CardsError as exc:
            raise CommandFailed(str(exc)) from None
        return f"overrides version {v}: {len(self.store.data['cards'])} cards"

    def _set_cards(self, cards: Any, mode: str, by: str) -> int:
        new_cards = apply_cards(self.store.data["cards"], cards, mode)
        data = {"version": int(self.store.data["version"]) + 1, "cards": new_cards, "setAt": tai_now(), "by": by}
        try:
            self.store.save(data, {"csc": self.name, "instrument": self.cfg.instrument})
        except OSError as exc:
            raise CommandFailed(f"cannot persist overrides to {self.store.path}: {exc}") from None
        self.publish_state()
        log.info(
            "header card overrides v%d by %s (%s): %s",
            data["version"],
            by,
            mode or "merge",
            ", ".join(sorted(new_cards)) or "none",
        )
        return data["version"]

    # -- faults from the header processes --------------------------------------------------------
    def handle_fault_message(self, frames: list[bytes]) -> None:
        try:
            msg = decode(frames)
            kind = OperatorWarning if msg.topic.startswith(WARNING_PREFIX) else Fault
            got = kind.decode(msg.payload)
        except EnvelopeError as exc:
            self.counts["bad_fault_messages"] += 1
            log.warning("malformed fault message ignored: %s", exc)
            return
        code = got.code
        report = f"{msg.envelope.sender.split('@', 1)[0]}: {got.report}"
        if isinstance(got, OperatorWarning):
            self.warn(code, report, got.active)
            return
        if self.state in (State.ENABLED, State.DISABLED):
            self.fault(code, report)
        else:
            log.warning("fault reported in %s (not acted on): errorCode %d %s", self.state.name, code, report)

    def warn(self, code: int, report: str, active: bool) -> None:
        """A condition that costs no header: operators are told, the state stays what they commanded."""
        now = time.monotonic()
        known = self.warnings.get(code)
        if not active:
            if known is not None:
                del self.warnings[code]
                self._write("errorCode", errorCode=0, errorReport=f"cleared: {report}", traceback="")
                log.info("errorCode %d %s is over: %s", code, _code_name(code), report)
            return
        if known is None or known[0] != report:
            self._write("errorCode", errorCode=int(code), errorReport=report, traceback="")
            log.warning("errorCode %d %s (still %s): %s", code, _code_name(code), self.state.name, report)
            self.warnings[code] = (report, now, now)
        elif now - known[1] >= WARNING_REMINDER_S:
            log.warning("errorCode %d %s still reported: %s", code, _code_name(code), report)
            self.warnings[code] = (report, now, now)
        else:
            self.warnings[code] = (known[0], known[1], now)

    def expire_warnings(self) -> None:
        """A warning no longer repeated by its sender (a one-off, or its sender restarted) is forgotten,
        so that its next occurrence is an errorCode again."""
        for code, (report, _, heard) in list(self.warnings.items()):
            if time.monotonic() - heard > WARNING_EXPIRY_S:
                del self.warnings[code]
                log.info("errorCode %d %s no longer reported: %s", code, _code_name(code), report)

    # -- loop ------------------------------------------------------------------------------------
    def step(self, wait_ms: int) -> None:
        events = dict(self.poller.poll(wait_ms))
        if self.rep in events:
            self.rep.recv_multipart()
            self.rep.send_multipart(self.sender.frames(state_topic(self.cfg.instrument), self.payload()))
        if self.faults in events:
            while True:
                try:
                    frames = self.faults.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.handle_fault_message(frames)
        if not self.bus_up:
            return
        for s in self.commands.poll(0):
            cmd = s.name.removeprefix("command_")
            if s.sal_index != 0 or cmd not in ALLOWED:
                continue  # addressed to another index of this component
            self.handle_command(cmd, s)
            if self.state == State.OFFLINE:
                return

    def run(self, stop: Stop) -> None:
        next_try = time.monotonic()
        while not stop.requested and not self.bus_up:
            if time.monotonic() >= next_try and not self.connect_bus():
                next_try = time.monotonic() + BUS_RETRY_S
                self.publish_state()
            self.step(wait_ms=100)
        if stop.requested:
            self.close()
            return
        self.announce_startup()
        next_beat = time.monotonic() + HEARTBEAT_S
        while not stop.requested and self.state != State.OFFLINE:
            self.step(wait_ms=int(max(0.0, min(0.025, next_beat - time.monotonic())) * 1000))
            if time.monotonic() >= next_beat:
                next_beat += HEARTBEAT_S
                if next_beat < time.monotonic():
                    next_beat = time.monotonic() + HEARTBEAT_S
                self.heartbeat()
                self.expire_warnings()
        if self.state != State.OFFLINE:  # stopped by a signal: no longer in control until restarted
            self.set_state(State.OFFLINE, journal=False)
        self.close()

    def close(self) -> None:
        log.removeHandler(self.log_handler)
        try:
            self.bus.flush(1.0)
            self.bus.close()
        except Exception:  # noqa: BLE001 (best effort at exit)
            pass
        for sock in (self.rep, self.faults):
            sock.close(linger=0)
        self.pub.close(linger=500)


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "unlisted"


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def start(cfg: InstanceConfig) -> Callable[[Stop], None]:
    """The CSC built and its loop; sockets that cannot be bound (another CSC of this instance runs)
    end the process with status 1 and the endpoints in the log."""
    try:
        csc = Csc(cfg)
    except zmq.ZMQError as exc:
        log.error("cannot open the CSC's sockets (%s, %s): %s", state_pub_endpoint(cfg), state_rep_endpoint(cfg), exc)
        sys.exit(1)

    def loop(stop: Stop) -> None:
        csc.run(stop)
        log.info("%s OFFLINE: exiting", cfg.csc)

    return loop


def main(argv: list[str] | None = None) -> None:
    run_process("hs-csc", __doc__, start, argv)


if __name__ == "__main__":
    main()
