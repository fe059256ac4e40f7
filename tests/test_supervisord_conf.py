"""supervisord.conf is generated (tools/supervisord_conf.py) from one program template: the committed
file is the generator's output, and supervisord itself reads from it exactly the programs of the
instances in templates/ (names, commands, log files, exit codes), nothing more."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from supervisor.options import ServerOptions

from procs.common import CONFIG_EXIT, CONFIG_EXIT_DELAY
from protocols.config import PROJECT_ROOT, TEMPLATES
from tools import supervisord_conf
from tools.runner import CONF, GROUPS
from tools.supervisord_conf import ROLES, group, instances, program, render


def test_the_committed_file_is_the_generators_output() -> None:
    assert CONF.read_text() == render(), "supervisord.conf is stale: python -m tools.supervisord_conf > supervisord.conf"


def test_the_header_comment_is_kept() -> None:
    text = CONF.read_text()
    assert text.startswith("; Header Service under supervisord: one program group per camera instance.\n")
    for line in ("HS_RUN_DIR", "exitcodes=0,2 with autorestart=unexpected", "supervisorctl -c supervisord.conf start latiss:*"):
        assert line in text


@pytest.fixture
def supervisord_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerOptions:
    """The committed file as supervisord reads it (its own option parser), run folder in tmp_path."""
    monkeypatch.setenv("HS_RUN_DIR", str(tmp_path))
    options = ServerOptions()
    options.realize(args=["-c", str(CONF)])
    return options


def test_supervisord_reads_every_instances_programs_and_nothing_else(supervisord_view: ServerOptions, tmp_path: Path) -> None:
    names = instances()
    assert {"LATISS", "ComCam", "LSSTCam"} <= set(names)
    groups = {g.name: g for g in supervisord_view.process_group_configs}
    assert set(groups) == {group(i) for i in names} == set(GROUPS.values())
    for instrument in names:
        assert GROUPS[instrument] == group(instrument)
        procs = groups[group(instrument)].process_configs
        assert [p.name for p in procs] == [program(instrument, r) for r in ROLES]
        for p, role in zip(procs, ROLES):
            assert p.command == f"hs-{role} --instance {instrument}"
            assert p.stdout_logfile == str(tmp_path / f"{group(instrument)}-{role}.log")
            assert p.redirect_stderr and not p.autostart
            assert set(p.exitcodes) == {0, CONFIG_EXIT} and p.startsecs < CONFIG_EXIT_DELAY
            assert p.directory == str(PROJECT_ROOT)


def test_every_instance_is_started_by_its_folder_name() -> None:
    """``--instance <folder>`` loads templates/<folder>/instance.yaml, whose instrument is that name."""
    for instrument in instances():
        assert yaml.safe_load((TEMPLATES / instrument / "instance.yaml").read_text())["instrument"] == instrument


def test_every_role_is_a_console_script_of_its_process() -> None:
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"hs-{r}": f"procs.{r}:main" for r in ROLES}.items() <= scripts.items()


def test_a_new_instance_folder_gets_its_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(TEMPLATES / "LATISS", tmp_path / "NewCam")
    (tmp_path / "notes").mkdir()  # a folder without an instance.yaml is not an instance
    assert instances(tmp_path) == ["NewCam"]
    monkeypatch.setattr(supervisord_conf, "instances", lambda: instances(tmp_path))
    text = render()
    assert "[group:newcam]\nprograms=newcam-listener,newcam-cache,newcam-composer,newcam-publisher,newcam-csc\n" in text
    assert "[program:newcam-csc]\ncommand=hs-csc --instance NewCam\n" in text
    assert "stdout_logfile=%(ENV_HS_RUN_DIR)s/newcam-csc.log\n" in text
    assert "latiss" not in text.split("[unix_http_server]", 1)[1]
