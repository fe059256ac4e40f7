"""A bad configuration file ends every process the same clean way: one error line naming the file
and the field, no traceback, exit status 2 — and supervisord, with the project's program settings,
leaves it stopped instead of restarting it. Processes are started as operators start them."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from protocols.config import TEMPLATES
from tests.conftest import fresh_domain_and_offset
from tools.runner import CONF, Deployment, venv_bin

PROCESSES = ["hs-listener", "hs-cache", "hs-composer", "hs-publisher", "hs-csc"]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of templates/LATISS, used through ``--instance <site>/instance.yaml``."""
    shutil.copytree(TEMPLATES / "LATISS", tmp_path / "site")
    return tmp_path / "site"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings of a deployment of its own, exported to this process and so to the programs it runs."""
    domain, offset = fresh_domain_and_offset()
    settings = {"HS_DDS_DOMAIN": str(domain), "HS_PORT_OFFSET": str(offset), "HS_STATE_DIR": str(tmp_path / "state"),
                "HS_ANNEX": str(tmp_path / "annex")}
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HS_END_DEADLINE", raising=False)
    return settings


def run(program: str, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin(program), "--instance", str(site / "instance.yaml")],
                          capture_output=True, text=True, timeout=60)


def refused(out: subprocess.CompletedProcess) -> str:
    """The one line a process refusing its configuration writes (asserting it is just that)."""
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert " ERROR " in lines[0] and "configuration error: " in lines[0], lines[0]
    return lines[0]


def edit(path: Path, change: Callable) -> None:
    path.write_text(yaml.safe_dump(change(yaml.safe_load(path.read_text())), sort_keys=False))


def unknown_keyword_field(site: Path) -> None:
    edit(site / "keywords.yaml", lambda d: d[:3] + [{**d[3], "colour": "red"}] + d[4:])


CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "keywords syntax": (lambda s: (s / "keywords.yaml").write_text("- {keyword: OBSID, component: [\n"),
                        ["keywords.yaml: not valid YAML: line 2, column 1"]),
    "keywords unknown field": (unknown_keyword_field, ["keywords.yaml: keywords.3.colour: unknown field"]),
    "keywords missing": (lambda s: (s / "keywords.yaml").unlink(), ["cannot read ", "keywords.yaml: No such file or directory"]),
    "keywords not UTF-8": (lambda s: (s / "keywords.yaml").write_bytes(b"- {keyword: \xff\xfe}\n"), ["keywords.yaml: not UTF-8 text"]),
    "primary syntax": (lambda s: (s / "primary.yaml").write_text("- {key: ORIGIN, value: 'unterminated}\n"),
                       ["primary.yaml: not valid YAML: line "]),
    "sensor unknown field": (lambda s: edit(s / "sensor.yaml", lambda d: [{**d[0], "valeu": 3}] + d[1:]),
                             ["sensor.yaml: card 0: valeu: unknown field (did you mean 'value'?)"]),
    "segment missing": (lambda s: (s / "segment.yaml").unlink(), ["cannot read ", "segment.yaml: No such file or directory"]),
    "template kind missing": (lambda s: edit(s / "instance.yaml", lambda d: {**d, "templates": {"primary": "primary.yaml"}}),
                              ["instance.yaml: templates: no template file for sensor, segment"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_refused_with_one_line(case: str, site: Path, env: dict[str, str]) -> None:
    change, expected = CASES[case]
    change(site)
    line = refused(run("hs-composer", site))
    for part in expected:
        assert part in line, line
    assert str(site) in line, line


@pytest.mark.parametrize("program", PROCESSES)
def test_every_process_refuses_a_bad_keyword_map(program: str, site: Path, env: dict[str, str]) -> None:
    unknown_keyword_field(site)
    line = refused(run(program, site))
    assert line.endswith(f"{site / 'keywords.yaml'}: keywords.3.colour: unknown field")


def test_non_numeric_end_deadline_from_the_environment(site: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_END_DEADLINE", "abc")
    line = refused(run("hs-composer", site))
    assert f"{site / 'instance.yaml'}: end_deadline: environment HS_END_DEADLINE='abc' is not a number" in line


def test_non_numeric_port_base_with_a_port_offset(site: Path, env: dict[str, str]) -> None:
    edit(site / "instance.yaml", lambda d: {**d, "port_base": "fifty-five fifty"})
    line = refused(run("hs-publisher", site))
    assert f"{site / 'instance.yaml'}: port_base: 'fifty-five fifty' is not an integer" in line


def test_supervisord_does_not_restart_a_process_refusing_its_configuration(tmp_path: Path, site: Path) -> None:
    """The project's supervisord.conf, programs pointed at the broken site: the composer exits 2
    once and stays EXITED while the others (which read the same files) do the same."""
    unknown_keyword_field(site)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF.read_text().replace("--instance LATISS", f"--instance {site / 'instance.yaml'}"))
    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset, conf=conf)
    dep.start()
    try:
        dep.start_instance("LATISS")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = {k: v for k, v in dep.status().items() if k.startswith("latiss:")}
            if len(st) == 5 and all(v == "EXITED" for v in st.values()):
                break
            time.sleep(0.3)
        assert st and all(v == "EXITED" for v in st.values()), st
        time.sleep(3.0)  # a restart would follow an unexpected exit at once
        assert all(v == "EXITED" for k, v in dep.status().items() if k.startswith("latiss:")), dep.status()
        log = (dep.run_dir / "supervisord.log").read_text()
        for program in ("latiss-listener", "latiss-cache", "latiss-composer", "latiss-publisher", "latiss-csc"):
            assert log.count(f"spawned: '{program}'") == 1, log
            assert f"exited: {program} (exit status 2; expected)" in log, log
            assert "configuration error" in dep.log(program) and "Traceback" not in dep.log(program)
    finally:
        dep.stop()
