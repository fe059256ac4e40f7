"""Per-instrument configuration: the instance settings, keyword map and templates (pydantic).

Each camera has a folder ``templates/<instrument>/`` holding ``instance.yaml`` (endpoints, DDS
domain, annex, deadlines), ``keywords.yaml`` (where every telemetry keyword comes from) and the
card templates per HDU kind. Every file is validated here; a bad field is named in the error.
Environment variables override what differs per deployment: ``HS_DDS_DOMAIN``, ``HS_PORT_OFFSET``,
``HS_ANNEX``, ``HS_STATE_DIR``, ``HS_END_DEADLINE``, ``HS_BUS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from protocols import sal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT_ROOT / "templates"

Instrument = Literal["LATISS", "ComCam", "LSSTCam"]
When = Literal["start", "readout", "end"]
Kind = Literal["value", "ccd_array", "ccd_array_str", "keyed_array", "indexed_array", "enum", "time_series"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @cached_property
    def fingerprint(self) -> str:
        """The model's values as compact JSON, computed once (the model is frozen): a memo key that
        is the same for equal configurations, whichever object carries them."""
        return self.model_dump_json()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("fingerprint", None)  # the copy's values may differ: computed again
        return copy


class KeywordSource(Strict):
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
    max_age: float | None = Field(default=None, gt=0)
    convert: Literal["tai_iso"] | None = None

    @property
    def topic_key(self) -> str:
        """Cache key: ``Component.topic:salIndex``."""
        return f"{self.component}.{self.topic}:{self.index}"

    @model_validator(mode="after")
    def _check(self) -> "KeywordSource":
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
        return self


class KeywordMap(Strict):
    keywords: list[KeywordSource]

    @field_validator("keywords")
    @classmethod
    def _unique(cls, v: list[KeywordSource]) -> list[KeywordSource]:
        seen: set[str] = set()
        for k in v:
            if k.keyword in seen:
                raise ValueError(f"keyword {k.keyword} is mapped twice")
            seen.add(k.keyword)
        return v

    def by_keyword(self) -> dict[str, KeywordSource]:
        return {k.keyword: k for k in self.keywords}


class CardTemplate(Strict):
    """One card of a template: a static value, a computed one, or one from the keyword map."""

    key: str
    comment: str = ""
    value: str | int | float | bool | None = None
    computed: str | None = None
    fallback: str | None = None  # computed value used when the keyword map gives none
    source: Literal["static", "computed", "map"] | None = None
    optional: bool = False  # left out of the HDU, not written undefined, when it has no value

    @model_validator(mode="after")
    def _kind(self) -> "CardTemplate":
        k = self.key.upper().removeprefix("HIERARCH ")
        if k not in ("COMMENT", "HISTORY", "") and (not k.strip() or "=" in k or not all(32 <= ord(c) <= 126 for c in k)):
            raise ValueError(f"{self.key!r} is not a FITS keyword")
        if self.computed is not None and self.value is not None:
            raise ValueError(f"{self.key}: give either 'value' or 'computed', not both")
        return self

    @property
    def kind(self) -> str:
        if self.source:
            return self.source
        if self.computed is not None:
            return "computed"
        if self.value is not None:
            return "static"
        return "map"


class Endpoints(Strict):
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


class InstanceConfig(Strict):
    """Settings of one Header Service instance (one camera)."""

    instrument: Instrument
    camera: str
    csc: str
    camcode: str
    telescope: str
    bus: Literal["dds", "kafka"] = "dds"  # SAL transport: Cyclone DDS, or Kafka as ts_salobj 8 (protocols/bus.py)
    dds_domain: int = Field(default=0, ge=0, le=232)
    port_base: int = Field(ge=1024, le=65000)
    segments_in_file: bool = True
    # A folder, or the S3 Large File Annex: ``s3://<bucket>``, or ``s3`` for ``rubinobs-lfa-<site>``.
    annex: str = str(PROJECT_ROOT / "annex")
    site: str = Field(default="tuc", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")  # cp, tuc, ls...: the LFA bucket's
    lfo_format: Literal["fits", "yaml", "both"] = "fits"  # header file(s) written and announced
    state_dir: Path = PROJECT_ROOT / "run" / "state"
    end_deadline: float = Field(default=30.0, gt=0)
    cache_max_age: float = Field(default=7200.0, gt=0)
    cache_max_samples: int = Field(default=20000, gt=0)
    cache_max_disk_mb: float = Field(default=2000.0, gt=0)
    cache_max_topic_mb: float = Field(default=48.0, gt=0)  # in-memory history per topic
    listener_replay: int = Field(default=20000, gt=0)  # messages kept for replay to a resyncing cache
    telemetry_max_age: float = Field(default=10.0, gt=0)
    collect_wait: float = Field(default=0.5, ge=0)
    sensors_nominal: list[str]
    tstand: str | None = Field(default=None, pattern=r"^[ -~]{1,68}$")  # TSTAND; none at the summit: card left out
    keywords: str = "keywords.yaml"
    templates: dict[Literal["primary", "sensor", "segment"], str]

    @field_validator("templates")
    @classmethod
    def _every_kind(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [k for k in ("primary", "sensor", "segment") if k not in v]
        if missing:
            raise ValueError(f"no template file for {', '.join(missing)}")
        return v

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("annex", mode="before")
    @classmethod
    def _annex(cls, v: Any) -> str:
        text = str(v)
        if text == "s3" or text.startswith("s3://"):
            bucket = text[len("s3://") :] if text.startswith("s3://") else ""
            if bucket and not _BUCKET.fullmatch(bucket):
                raise ValueError(f"{text!r}: not an S3 bucket name (3-63 of a-z 0-9 . -)")
        elif "://" in text:
            raise ValueError(f"{text!r}: an annex is a folder or s3://<bucket>")
        return text

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
        return self._source.parent if self._source is not None else TEMPLATES / self.instrument

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


def _validation_message(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{path}: {loc}: {err['msg']}" if loc else f"{path}: {err['msg']}")
    return "; ".join(lines)


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(path, exc)) from None


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
    cfg._source = p.absolute()
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
    out = []
    for i, card in enumerate(data):
        try:
            out.append(CardTemplate.model_validate(card))
        except ValidationError as exc:
            raise ConfigError(_validation_message(p, exc).replace(f"{p}: ", f"{p}: card {i}: ")) from None
    return out
