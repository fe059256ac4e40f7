"""Bad input at the configuration level: instance, keyword-map, template and scenario files that are
wrong each get one clear error naming the file, the entry and the reason; a process given a bad
configuration exits with that reason once, never a crash loop under supervisord.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols import config as hs_config
from protocols.config import ConfigError, load_instance, load_keyword_map, load_template
from tools.sim.scenario import ScenarioError, load_scenario

HS_ENV = ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR")
NAN = float("nan")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests see the configuration files alone, whatever HS_* overrides the caller exported."""
    for k in HS_ENV:
        monkeypatch.delenv(k, raising=False)


# -- configuration files ---------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of templates/LATISS that the loaders read (TEMPLATES pointed at the copy)."""
    shutil.copytree(hs_config.TEMPLATES / "LATISS", tmp_path / "LATISS")
    monkeypatch.setattr(hs_config, "TEMPLATES", tmp_path)
    return tmp_path / "LATISS"


def _edit_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(change(data), sort_keys=False))


def _config_error(fn: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as exc:
        fn()
    return str(exc.value)


def test_instance_wrong_field_name(site: Path) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "port_bas": 5550})
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: port_bas: unknown field (did you mean 'port_base'?)")


def test_instance_wrong_type(site: Path) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "end_deadline": "soon"})
    msg = _config_error(lambda: load_instance(site / "instance.yaml"))
    assert msg == f"{site / 'instance.yaml'}: end_deadline: expected a number, got 'soon'"


@pytest.mark.parametrize(("port", "bound"), [(80, ">= 1024, got 80"), (70000, "<= 65000, got 70000")])
def test_instance_bad_port(site: Path, port: int, bound: str) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "port_base": port})
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: port_base: expected an integer {bound}")


def test_instance_missing_file(site: Path) -> None:
    missing = site / "nothere.yaml"
    assert _config_error(lambda: load_instance(missing)) == f"cannot read {missing}: No such file or directory"


def test_instance_not_yaml(site: Path) -> None:
    (site / "instance.yaml").write_text("instrument: [LATISS\n")
    msg = _config_error(lambda: load_instance(site / "instance.yaml"))
    assert msg.startswith(f"{site / 'instance.yaml'}: not valid YAML")


def test_instance_not_a_mapping(site: Path) -> None:
    (site / "instance.yaml").write_text("- LATISS\n- ComCam\n")
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: expected a mapping of settings")


def test_instance_bad_domain_from_environment(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_DDS_DOMAIN", "999")
    assert _config_error(lambda: load_instance("LATISS")) == (
        f"{site / 'instance.yaml'}: dds_domain: expected an integer <= 232, got 999")


def test_instance_non_numeric_environment_override(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_PORT_OFFSET", "twenty")
    msg = _config_error(lambda: load_instance("LATISS"))
    assert "HS_PORT_OFFSET" in msg and "twenty" in msg


def _add_keyword(site: Path, line: str) -> None:
    with open(site / "keywords.yaml", "a") as fh:
        fh.write(line + "\n")


def _keyword_count(site: Path) -> int:
    return len(yaml.safe_load((site / "keywords.yaml").read_text()))


def test_keywords_unknown_topic(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: noSuchTopic, field: ra}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert "FOO: SAL topic ATPtg.noSuchTopic is not defined in sal_topics.yaml" in msg


def test_keywords_unknown_field(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: currentTarget, field: colour}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert msg.endswith("FOO: ATPtg.currentTarget has no field 'colour'")


def test_keywords_indexed_array_without_element(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ESS, index: 301, topic: temperature, field: temperatureItem, "
                       "kind: indexed_array}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert msg.endswith("FOO: kind indexed_array needs 'element'")


def test_keywords_indexed_array_element_outside(site: Path) -> None:
    _add_keyword(site, "- {keyword: FOO, component: ESS, index: 301, topic: temperature, field: temperatureItem, "
                       "kind: indexed_array, element: 16}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.endswith("FOO: element 16 is outside temperatureItem[16]")


def test_keywords_duplicate_keyword(site: Path) -> None:
    n = _keyword_count(site)
    first = [k["keyword"] for k in yaml.safe_load((site / "keywords.yaml").read_text())].index("RA")
    _add_keyword(site, "- {keyword: RA, component: ATPtg, topic: currentTarget, field: ra}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg == f"{site / 'keywords.yaml'}: keywords.{n}: keyword RA is mapped twice (first at keywords.{first})"


def test_keywords_bad_collection_point(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: currentTarget, field: ra, when: later}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg == f"{site / 'keywords.yaml'}: keywords.{n}.when: 'later' is not one of 'end', 'readout', 'start'"


def test_template_value_and_computed(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: FOO, value: 1, computed: file_date}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg == f"{site / 'primary.yaml'}: card {n}: FOO: give either 'value' or 'computed', not both"


def test_template_wrong_field_name(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: FOO, valeu: 1}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg == f"{site / 'primary.yaml'}: card {n}: valeu: unknown field (did you mean 'value'?)"


def test_template_unreadable(site: Path) -> None:
    # root reads through chmod 000: a folder in place of the file is unreadable for everyone
    (site / "sensor.yaml").unlink()
    (site / "sensor.yaml").mkdir()
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "sensor"))
    assert msg == f"cannot read {site / 'sensor.yaml'}: Is a directory"


def test_template_missing(site: Path) -> None:
    (site / "segment.yaml").unlink()
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "segment"))
    assert msg == f"cannot read {site / 'segment.yaml'}: No such file or directory"


def test_template_bad_keyword(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: 'BAD=KEY', value: 1}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg.startswith(f"{site / 'primary.yaml'}: card {n}: ") and "BAD=KEY" in msg



def test_keyword_map_is_read_next_to_the_instance_file(tmp_path: Path, clean_env: None) -> None:
    site = tmp_path / "site"
    shutil.copytree(hs_config.TEMPLATES / "LATISS", site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: noSuchTopic, field: ra}")
    cfg = load_instance(site / "instance.yaml")
    assert cfg.folder == site
    msg = _config_error(lambda: load_keyword_map(cfg))
    assert msg.startswith(f"{site / 'keywords.yaml'}: ")



# -- scenario files --------------------------------------------------------------------------------

EXPOSURE = {"start": "2026-11-25T03:04:06.457", "exptime": 10.0, "ra": 40.1, "dec": -40.0, "rotpa": 1.0,
            "filter": "SDSSr_65mm"}


def _scenario_error(tmp_path: Path, name: str, exposures: list[dict[str, Any]] | None = None, raw: str | None = None) -> str:
    p = tmp_path / name
    p.write_text(raw if raw is not None else yaml.safe_dump({"instrument": "LATISS", "exposures": exposures}))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    return str(exc.value)


def test_scenario_wrong_field(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "typo.yaml", [{**EXPOSURE, "exptim": 3.0}])
    assert msg == "scenario typo.yaml: exposures.0.exptim: Extra inputs are not permitted"


def test_scenario_wrong_type(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "type.yaml", [{**EXPOSURE, "exptime": "long"}])
    assert msg.startswith("scenario type.yaml: exposures.0.exptime: Input should be a valid number")


def test_scenario_unknown_omit_topic(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "omit.yaml", [{**EXPOSURE, "omit": ["ATPtg.noSuchTopic"]}])
    assert msg.startswith("scenario omit.yaml: exposures.0.omit.0: SAL topic ATPtg.noSuchTopic is not defined")


def test_scenario_exposures_out_of_order(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "order.yaml", [{**EXPOSURE, "start": "2026-11-25T03:10:00"}, EXPOSURE])
    assert msg == ("scenario order.yaml: exposures.1.start: 2026-11-25T03:04:06.457 is not after exposure 0 "
                   "(2026-11-25T03:10:00.000); exposures must be in time order")


def test_scenario_change_of_wrong_type(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "chg.yaml", [{**EXPOSURE, "changes": {"ATDome.position.azimuthPosition": "north"}}])
    assert msg == "scenario chg.yaml: exposures.0.changes: ATDome.position.azimuthPosition: 'north' is not a valid double"


def test_scenario_bad_image_name(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "name.yaml", [{**EXPOSURE, "image_name": "../../etc/passwd"}])
    assert msg.startswith("scenario name.yaml: exposures.0.image_name: '../../etc/passwd' is not CAMCODE_CONTRLLR")


def test_scenario_not_yaml(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "broken.yaml", raw="instrument: [LATISS\n")
    assert msg.startswith("scenario broken.yaml: not valid YAML at line 2")


def test_scenario_nan_exptime(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "nan.yaml", [{**EXPOSURE, "exptime": NAN}])
    assert msg == "scenario nan.yaml: exposures.0.exptime: Input should be a finite number"


# -- a process refusing a bad configuration ----------------------------------------------------------


def test_bad_configuration_exits_with_the_reason(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "hs-cache"
    env = {k: v for k, v in os.environ.items() if k not in HS_ENV}
    env.update(HS_DDS_DOMAIN="999", HS_STATE_DIR=str(tmp_path / "state"), HS_ANNEX=str(tmp_path / "annex"))
    out = subprocess.run([str(exe), "--instance", "LATISS"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "configuration error:" in out.stderr
    assert "templates/LATISS/instance.yaml: dds_domain: expected an integer <= 232, got 999" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_configuration_is_not_a_crash_loop(tmp_path: Path) -> None:
    from tests.conftest import fresh_domain_and_offset
    from tools.runner import Deployment

    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset, extra_env={"HS_DDS_DOMAIN": "999"})
    dep.start()
    try:
        dep.supervisorctl("start", "latiss:latiss-cache", check=False)
        time.sleep(4.0)
        state = dep.status().get("latiss:latiss-cache")
        attempts = dep.log("latiss-cache").count("configuration error:")
    finally:
        dep.stop()
    assert attempts == 1, f"{attempts} start attempts in 4 s"
    assert state in ("EXITED", "FATAL"), state
