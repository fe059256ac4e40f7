"""The configuration's validation (protocols/config.py, msgspec): every check refuses its bad value
with the file, the field's path and the reason; YAML's usual spellings are still taken; and no
service process imports pydantic for it (~16 MB of memory in each of an instance's five)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.config import (
    TEMPLATES,
    CardTemplate,
    ConfigError,
    check_configuration,
    load_instance,
    load_keyword_map,
    load_template,
    replace,
)

HS_ENV = ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR", "HS_END_DEADLINE", "HS_LFO_FORMAT",
          "HS_TSTAND", "HS_BUS")
DROP = object()  # a setting taken out of the file


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of templates/LATISS, read through its instance.yaml, with no HS_* override."""
    for k in HS_ENV:
        monkeypatch.delenv(k, raising=False)
    shutil.copytree(TEMPLATES / "LATISS", tmp_path / "site")
    return tmp_path / "site"


def _instance(folder: Path, **changes: Any) -> Path:
    path = folder / "instance.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not DROP}, sort_keys=False))
    return path


def _refusal(fn: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        fn()
    return str(exc.value)


INSTANCE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "bucket name": ({"annex": "s3://Bad_Bucket"}, "annex: 's3://Bad_Bucket': not an S3 bucket name (3-63 of a-z 0-9 . -)"),
    "annex scheme": ({"annex": "ftp://host/x"}, "annex: 'ftp://host/x': an annex is a folder or s3://<bucket>"),
    "annex type": ({"annex": 5}, "annex: expected a string, got 5"),
    "site pattern": ({"site": "Tucson"}, "site: expected a string matching regex '^[a-z0-9][a-z0-9-]{0,30}$', got 'Tucson'"),
    "tstand pattern": ({"tstand": "café"}, "tstand: expected a string matching regex '^[ -~]{1,68}$', got 'café'"),
    "template kind unknown": ({"templates": {"primary": "p.yaml", "sensor": "s.yaml", "segment": "g.yaml", "header": "h.yaml"}},
                              "templates: key 'header' is not one of 'primary', 'segment', 'sensor'"),
    "template kind missing": ({"templates": {"primary": "primary.yaml"}}, "templates: no template file for sensor, segment"),
    "templates not a mapping": ({"templates": "primary.yaml"}, "templates: expected a mapping, got 'primary.yaml'"),
    "required field": ({"camera": DROP}, "camera: required field is missing"),
    "list element type": ({"sensors_nominal": ["RXX_S00", 7]}, "sensors_nominal.1: expected a string, got 7"),
    "negative wait": ({"collect_wait": -1}, "collect_wait: expected a number >= 0.0, got -1"),
    "zero samples": ({"cache_max_samples": 0}, "cache_max_samples: expected an integer >= 1, got 0"),
    "NaN age": ({"telemetry_max_age": float("nan")}, "telemetry_max_age: expected a number > 0.0, got nan"),
    "boolean deadline": ({"end_deadline": True}, "end_deadline: expected a number, got True"),
    "format choice": ({"lfo_format": "fitz"}, "lfo_format: 'fitz' is not one of 'both', 'fits', 'yaml'"),
    "bus choice": ({"bus": "mqtt"}, "bus: 'mqtt' is not one of 'dds', 'kafka'"),
    "instrument choice": ({"instrument": "HSC"}, "instrument: 'HSC' is not one of 'ComCam', 'LATISS', 'LSSTCam'"),
    "flag type": ({"segments_in_file": "sometimes"}, "segments_in_file: expected true/false, got 'sometimes'"),
    "state_dir type": ({"state_dir": 5}, "state_dir: expected a path, got 5"),
    "misspelt field": ({"cache_max_sample": 10}, "cache_max_sample: unknown field (did you mean 'cache_max_samples'?)"),
}


@pytest.mark.parametrize("case", list(INSTANCE_CASES))
def test_instance_setting_refused(case: str, site: Path) -> None:
    changes, reason = INSTANCE_CASES[case]
    path = _instance(site, **changes)
    assert _refusal(lambda: load_instance(path)) == f"{path}: {reason}"


def test_bad_annex_from_the_environment(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_ANNEX", "http://example.org/annex")
    path = site / "instance.yaml"
    assert _refusal(lambda: load_instance(path)) == (
        f"{path}: annex: 'http://example.org/annex': an annex is a folder or s3://<bucket>")


def test_yaml_spellings_are_taken_as_before(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic's lax conversions the files may rely on: a quoted port, an integer deadline, a
    path as text; an empty HS_TSTAND is no test stand."""
    monkeypatch.setenv("HS_TSTAND", "")
    cfg = load_instance(_instance(site, port_base="5560", end_deadline=12, state_dir="/var/tmp/hs", annex="s3"))
    assert cfg.port_base == 5560 and isinstance(cfg.port_base, int)
    assert cfg.end_deadline == 12.0 and isinstance(cfg.end_deadline, float)
    assert cfg.state_dir == Path("/var/tmp/hs")
    assert cfg.tstand is None
    assert cfg.annex_bucket == f"rubinobs-lfa-{cfg.site}"
    assert cfg.folder == site
    check_configuration(cfg)


def _add_keyword(site: Path, entry: Any) -> int:
    path = site / "keywords.yaml"
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(data + [entry], sort_keys=False))
    return len(data)


FOO = {"keyword": "FOO", "component": "ATPtg", "topic": "currentTarget", "field": "ra"}
KEYWORD_CASES: dict[str, tuple[Any, str]] = {
    "max_age zero": ({**FOO, "max_age": 0}, ".max_age: expected a number > 0.0, got 0"),
    "enum without table": ({**FOO, "kind": "enum"}, ": FOO: kind enum needs the 'enum' value→name table"),
    "enum key type": ({**FOO, "kind": "enum", "enum": {"open": "OPEN"}}, ".enum: expected an integer, got a string (in one of its keys)"),
    "enum value type": ({**FOO, "kind": "enum", "enum": {1: 2}}, ".enum: expected a string, got an integer (in one of its values)"),
    "keyed without key": ({**FOO, "kind": "keyed_array"}, ": FOO: kind keyed_array needs 'key'"),
    "monitor choice": ({**FOO, "monitor": "mean"}, ".monitor: 'mean' is not one of 'max', 'min'"),
    "missing topic": ({k: v for k, v in FOO.items() if k != "topic"}, ".topic: required field is missing"),
    "index type": ({**FOO, "index": "first"}, ".index: expected an integer, got 'first'"),
    "scale type": ({**FOO, "scale": "big"}, ".scale: expected a number or null, got 'big'"),
    "not a mapping": ("FOO", ": expected a mapping, got 'FOO'"),
}


@pytest.mark.parametrize("case", list(KEYWORD_CASES))
def test_keyword_entry_refused(case: str, site: Path) -> None:
    entry, reason = KEYWORD_CASES[case]
    n = _add_keyword(site, entry)
    cfg = load_instance(site / "instance.yaml")
    assert _refusal(lambda: load_keyword_map(cfg)) == f"{site / 'keywords.yaml'}: keywords.{n}{reason}"


def test_keyword_map_that_is_not_a_list(site: Path) -> None:
    (site / "keywords.yaml").write_text("keyword: FOO\n")
    cfg = load_instance(site / "instance.yaml")
    assert _refusal(lambda: load_keyword_map(cfg)) == (
        f"{site / 'keywords.yaml'}: keywords: expected a list, got {{'keyword': 'FOO'}}")


CARD_CASES: dict[str, tuple[Any, str]] = {
    "not a mapping": ("ORIGIN", "expected a mapping, got 'ORIGIN'"),
    "not a FITS keyword": ({"key": "A B=", "value": 1}, "'A B=' is not a FITS keyword"),
    "not ASCII": ({"key": "É"}, "'É' is not a FITS keyword"),
    "value a list": ({"key": "X", "value": [1]}, "value: expected true/false, an integer, a number, a string or null, got [1]"),
    "source choice": ({"key": "X", "source": "env"}, "source: 'env' is not one of 'computed', 'map', 'static'"),
    "no key": ({"value": 1}, "key: required field is missing"),
    "optional type": ({"key": "X", "optional": "maybe"}, "optional: expected true/false, got 'maybe'"),
}


@pytest.mark.parametrize("case", list(CARD_CASES))
def test_template_card_refused(case: str, site: Path) -> None:
    entry, reason = CARD_CASES[case]
    path = site / "segment.yaml"
    cards = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(cards + [entry], sort_keys=False))
    cfg = load_instance(site / "instance.yaml")
    assert _refusal(lambda: load_template(cfg, "segment")) == f"{path}: card {len(cards)}: {reason}"


def test_replace_keeps_the_source_folder_and_checks_again(site: Path) -> None:
    cfg = load_instance(site / "instance.yaml")
    moved = replace(cfg, port_base=cfg.port_base + 100, state_dir=site / "state")
    assert moved.folder == site and moved.port_base == cfg.port_base + 100 and moved.state_dir == site / "state"
    with pytest.raises(ValueError, match="an annex is a folder or s3://<bucket>"):
        replace(cfg, annex="ftp://host/x")
    card = CardTemplate(key="ORIGIN", value="Rubin")
    with pytest.raises(ValueError, match="give either 'value' or 'computed', not both"):
        replace(card, computed="file_date")


def test_fingerprint_follows_the_values(site: Path) -> None:
    cfg = load_instance(site / "instance.yaml")
    first, again = (load_template(cfg, "primary")[0] for _ in range(2))
    assert first is not again and first.fingerprint == again.fingerprint
    assert replace(first, comment="changed").fingerprint != first.fingerprint
    assert load_keyword_map(cfg).fingerprint == load_keyword_map(cfg).fingerprint


@pytest.mark.parametrize("role", ["listener", "cache", "composer", "publisher", "csc"])
def test_no_service_process_imports_pydantic(role: str, site: Path) -> None:
    """Each process's module, its configuration loaded and checked, and a refused file worded:
    pydantic is never imported."""
    (site / "bad").mkdir()
    (site / "bad" / "instance.yaml").write_text(yaml.safe_dump({"instrument": "LATISS", "port_bas": 1}))
    code = textwrap.dedent(f"""
        import sys
        from procs import {role}
        from protocols.config import ConfigError, check_configuration, load_instance
        check_configuration(load_instance({str(site / 'instance.yaml')!r}))
        try:
            load_instance({str(site / 'bad' / 'instance.yaml')!r})
        except ConfigError as exc:
            assert "port_bas: unknown field" in str(exc), exc
        else:
            raise AssertionError("a bad file was taken")
        print(sorted(m for m in sys.modules if m.split(".")[0] == "pydantic"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
