"""Per-instrument configuration: the instance settings, keyword map and templates (msgspec).

Each camera has a folder ``templates/<instrument>/`` holding ``instance.yaml`` (endpoints, DDS
domain, annex, deadlines), ``keywords.yaml`` (where every telemetry keyword comes from) and the
card templates per HDU kind. Every file is validated here; a bad field is named in the error.
Environment variables override what differs per deployment: ``HS_DDS_DOMAIN``, ``HS_PORT_OFFSET``,
``HS_ANNEX``, ``HS_STATE_DIR``, ``HS_END_DEADLINE``, ``HS_BUS``.

Validation is msgspec's (typed Structs with range and pattern constraints, unknown fields refused,
cross-field checks in ``__post_init__``), not pydantic's: all five processes of an instance load
these files, and pydantic would cost each of them ~16 MB of memory, msgspec ~2 MB.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from protocols import sal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT_ROOT / "templates"

Instrument = Literal["LATISS", "ComCam", "LSSTCam"]
When = Literal["start", "readout", "end"]
Kind = Literal["value", "ccd_array", "ccd_array_str", "keyed_array", "indexed_array", "enum", "time_series"]
HduKind = Literal["primary", "sensor", "segment"]

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, dict=True):
    """A configuration object: unknown fields refused, values fixed once validated. Each subclass
    is ``kw_only`` (fields given by name, so required ones may follow defaults in the files'
    order); ``dict=True`` gives room for what is computed from it once (its fingerprint) and for
    an instance's source file, neither of them a field a file may set."""

    @cached_property
    def fingerprint(self) -> str:
        """The object's values as compact JSON, computed once (the object is frozen): a memo key
        that is the same for equal configurations, whichever object carries them."""
        return msgspec.json.encode(self, enc_hook=str).decode()


S = TypeVar("S", bound=Strict)


def replace(obj: S, **changes: Any) -> S:
    """A copy of ``obj`` with some fields changed (its cross-field checks run again; the values
    are taken as given, not converted). An instance's source file (its ``folder``) is kept and the
    fingerprint computed afresh."""
    copy = msgspec.structs.replace(obj, **changes)
    if "_source" in obj.__dict__:
        copy.__dict__["_source"] = obj.__dict__["_source"]
    return copy


class KeywordSource(Strict, kw_only=True):
    """Where one header keyword's value comes from and how it is reduced."""

    keyword: str
    component: str
    index: int = 0
    topic: str
    field: str
    when: When = "start"
    kind: Kind = "value"
    key: str | None = None
    element: int | None = None
    scale: float | None = None
    enum: dict[int, str] | None = None
    monitor: Literal["max", "min"] | None = None
    max_age: Positive | None = None
    convert: Literal["tai_iso"] | None = None

    @property
    def topic_key(self) -> str:
        """Cache key: ``Component.topic:salIndex``."""
        return f"{self.component}.{self.topic}:{self.index}"

    def __post_init__(self) -> None:
        try:
            topic = sal.get_topic(self.component, self.topic)
        except sal.UnknownTopicError as exc:
            raise ValueError(f"{self.keyword}: {exc}") from None
        fields = topic.field_map()
        if self.field not in fields:
            raise ValueError(f"{self.keyword}: {self.component}.{self.topic} has no field {self.field!r}")
        if self.kind == "keyed_array" and not self.key:
            raise ValueError(f"{self.keyword}: kind keyed_array needs 'key'")
        if self.kind == "indexed_array":
            if self.element is None:
                raise ValueError(f"{self.keyword}: kind indexed_array needs 'element'")
            if self.element >= fields[self.field].count:
                raise ValueError(
                    f"{self.keyword}: element {self.element} is outside {self.field}[{fields[self.field].count}]"
                )
        if self.kind == "enum" and not self.enum:
            raise ValueError(f"{self.keyword}: kind enum needs the 'enum' value→name table")


class KeywordMap(Strict, kw_only=True):
    keywords: list[KeywordSource]

    def __post_init__(self) -> None:
        first: dict[str, int] = {}
        for i, k in enumerate(self.keywords):
            if k.keyword in first:
                raise ValueError(f"keywords.{i}: keyword {k.keyword} is mapped twice (first at keywords.{first[k.keyword]})")
            first[k.keyword] = i

    def by_keyword(self) -> dict[str, KeywordSource]:
        return {k.keyword: k for k in self.keywords}


class CardTemplate(Strict, kw_only=True):
    """One card of a template: a static value, a computed one, or one from the keyword map."""

    key: str
    comment: str = ""
    value: str | int | float | bool | None = None
    computed: str | None = None
    fallback: str | None = None  # computed value used when the keyword map gives none
    source: Literal["static", "computed", "map"] | None = None
    optional: bool = False  # left out of the HDU, not written undefined, when it has no value

    def __post_init__(self) -> None:
        k = self.key.upper().removeprefix("HIERARCH ")
        if k not in ("COMMENT", "HISTORY", "") and (not k.strip() or "=" in k or not all(32 <= ord(c) <= 126 for c in k)):
            raise ValueError(f"{self.key!r} is not a FITS keyword")
        if self.computed is not None and self.value is not None:
            raise ValueError(f"{self.key}: give either 'value' or 'computed', not both")

    @property
    def kind(self) -> str:
        if self.source:
            return self.source
        if self.computed is not None:
            return "computed"
        if self.value is not None:
            return "static"
        return "map"


class Endpoints(Strict, kw_only=True):
    listener_pub: str
    cache_router: str
    composer_pub: str
    composer_router: str
    publisher_pull: str
    publisher_pub: str
    listener_router: str
    csc_pub: str
    csc_rep: str
    http_port: int


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class InstanceConfig(Strict, kw_only=True):
    """Settings of one Header Service instance (one camera)."""

    instrument: Instrument
    camera: str
    csc: str
    camcode: str
    telescope: str
    bus: Literal["dds", "kafka"] = "dds"  # SAL transport: Cyclone DDS, or Kafka as ts_salobj 8 (protocols/bus.py)
    dds_domain: Annotated[int, msgspec.Meta(ge=0, le=232)] = 0
    port_base: Annotated[int, msgspec.Meta(ge=1024, le=65000)]
    segments_in_file: bool = True
    # A folder, or the S3 Large File Annex: ``s3://<bucket>``, or ``s3`` for ``rubinobs-lfa-<site>``.
    annex: str = str(PROJECT_ROOT / "annex")
    site: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")] = "tuc"  # cp, tuc, ls...: the LFA bucket's
    lfo_format: Literal["fits", "yaml", "both"] = "fits"  # header file(s) written and announced
    state_dir: Path = PROJECT_ROOT / "run" / "state"
    end_deadline: Positive = 30.0
    cache_max_age: Positive = 7200.0
    cache_max_samples: PositiveInt = 20000
    cache_max_disk_mb: Positive = 2000.0
    cache_max_topic_mb: Positive = 4.0  # a topic's history in memory; older samples are read from disk
    listener_replay: PositiveInt = 20000  # messages kept for replay to a resyncing cache
    telemetry_max_age: Positive = 10.0
    collect_wait: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    sensors_nominal: list[str]
    # TSTAND; none at the summit: card left out
    tstand: Annotated[str, msgspec.Meta(pattern=r"^[ -~]{1,68}$")] | None = None
    keywords: str = "keywords.yaml"
    templates: dict[HduKind, str]

    def __post_init__(self) -> None:
        missing = [k for k in ("primary", "sensor", "segment") if k not in self.templates]
        if missing:
            raise ValueError(f"templates: no template file for {', '.join(missing)}")
        text = self.annex
        if text == "s3" or text.startswith("s3://"):
            bucket = text[len("s3://") :] if text.startswith("s3://") else ""
            if bucket and not _BUCKET.fullmatch(bucket):
                raise ValueError(f"annex: {text!r}: not an S3 bucket name (3-63 of a-z 0-9 . -)")
        elif "://" in text:
            raise ValueError(f"annex: {text!r}: an annex is a folder or s3://<bucket>")

    @property
    def annex_bucket(self) -> str | None:
        """The S3 bucket of the annex (``rubinobs-lfa-<site>`` unless named), or None for a folder."""
        if self.annex == "s3" or self.annex == "s3://":
            return f"rubinobs-lfa-{self.site}".lower()
        return self.annex[len("s3://") :] if self.annex.startswith("s3://") else None

    @property
    def annex_folder(self) -> Path:
        """The annex folder (a local annex), else the folder of the S3 annex's local index."""
        if self.annex_bucket is None:
            return Path(self.annex)
        return Path(self.state_dir) / self.instrument / "annex"

    @property
    def lfo_formats(self) -> tuple[str, ...]:
        return ("fits", "yaml") if self.lfo_format == "both" else (self.lfo_format,)

    @property
    def folder(self) -> Path:
        """Where the keyword map and templates are: next to the instance.yaml that was loaded."""
        source = self.__dict__.get("_source")
        return source.parent if source is not None else TEMPLATES / self.instrument

    @property
    def endpoints(self) -> Endpoints:
        b = self.port_base
        return Endpoints(
            listener_pub=f"tcp://127.0.0.1:{b}",
            cache_router=f"tcp://127.0.0.1:{b + 1}",
            composer_pub=f"tcp://127.0.0.1:{b + 2}",
            composer_router=f"tcp://127.0.0.1:{b + 5}",
            publisher_pull=f"tcp://127.0.0.1:{b + 3}",
            publisher_pub=f"tcp://127.0.0.1:{b + 4}",
            listener_router=f"tcp://127.0.0.1:{b + 8}",
            csc_pub=f"tcp://127.0.0.1:{b + 6}",
            csc_rep=f"tcp://127.0.0.1:{b + 7}",
            http_port=b + 9,
        )

    @property
    def trigger_topics(self) -> list[str]:
        return [
            "startIntegration",
            "startReadout",
            "endReadout",
            "endOfImageTelemetry",
            "imageReadoutParameters",
            "focalPlaneSummaryInfo",
        ]


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        return f"{where}{what}"
    return " ".join(str(exc).split())


def _as_path(kind: type, value: Any) -> Any:
    """msgspec's hook for the one type it does not convert itself: a path from its text."""
    if kind is Path:
        if not isinstance(value, str):
            raise ValueError(f"expected a path, got {value!r}")
        return Path(value)
    raise NotImplementedError(kind)


def _validate(model: type[S], data: Any, path: Path, where: str = "") -> S:
    """``data`` (from YAML) as a ``model``, converted as leniently as YAML needs (``"5550"`` is a
    port, ``30`` a deadline) and no further; a ConfigError names the file, the field and why."""
    try:
        return msgspec.convert(data, model, strict=False, dec_hook=_as_path)
    except msgspec.ValidationError as exc:
        from protocols.config_errors import describe  # only when a file is wrong

        loc, reason = describe(model, data, str(exc))
        loc = ": ".join(p for p in (where, loc) if p)
        raise ConfigError(f"{path}: {loc}: {reason}" if loc else f"{path}: {reason}") from None


def instance_path(instrument: str) -> Path:
    return TEMPLATES / instrument / "instance.yaml"


def load_instance(path_or_instrument: str | Path) -> InstanceConfig:
    """Load an instance configuration by path or instrument name, applying environment overrides."""
    p = Path(path_or_instrument)
    if not p.suffix:
        p = instance_path(str(path_or_instrument))
    data = _read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings")
    env = os.environ

    def env_number(var: str, key: str, kind: type[int] | type[float]) -> Any:
        try:
            return kind(env[var])
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{p}: {key}: environment {var}={env[var]!r} is not {what}") from None

    if "HS_DDS_DOMAIN" in env:
        data["dds_domain"] = env_number("HS_DDS_DOMAIN", "dds_domain", int)
    if "HS_PORT_OFFSET" in env:
        offset = env_number("HS_PORT_OFFSET", "port_base", int)
        if "port_base" in data:  # when missing, validation below names it
            base = data["port_base"]
            try:
                if isinstance(base, (bool, float)):
                    raise ValueError(base)
                data["port_base"] = int(base) + offset
            except (TypeError, ValueError):
                raise ConfigError(f"{p}: port_base: {base!r} is not an integer (HS_PORT_OFFSET={offset} is added to it)") from None
    if "HS_ANNEX" in env:
        data["annex"] = env["HS_ANNEX"]
    if "HS_END_DEADLINE" in env:
        data["end_deadline"] = env_number("HS_END_DEADLINE", "end_deadline", float)
    if "HS_STATE_DIR" in env:
        data["state_dir"] = env["HS_STATE_DIR"]
    if "HS_LFO_FORMAT" in env:
        data["lfo_format"] = env["HS_LFO_FORMAT"]
    if "HS_TSTAND" in env:
        data["tstand"] = env["HS_TSTAND"] or None
    if env.get("HS_BUS"):
        data["bus"] = env["HS_BUS"]
    cfg = _validate(InstanceConfig, data, p)
    cfg.__dict__["_source"] = p.absolute()  # not a field: no file sets it (see ``folder``)
    return cfg


def load_keyword_map(cfg: InstanceConfig) -> KeywordMap:
    p = cfg.folder / cfg.keywords
    data = _read_yaml(p)
    return _validate(KeywordMap, {"keywords": data}, p)


def check_configuration(cfg: InstanceConfig) -> None:
    """Load every file the instance's configuration names (keyword map, templates): a process
    refuses a bad one at start, with the ConfigError naming it, not later with a traceback."""
    load_keyword_map(cfg)
    for kind in ("primary", "sensor", "segment"):
        load_template(cfg, kind)


def load_template(cfg: InstanceConfig, kind: str) -> list[CardTemplate]:
    p = cfg.folder / cfg.templates[kind]  # type: ignore[index]
    data = _read_yaml(p)
    if not isinstance(data, list):
        raise ConfigError(f"{p}: expected a list of cards")
    return [_validate(CardTemplate, card, p, where=f"card {i}") for i, card in enumerate(data)]
