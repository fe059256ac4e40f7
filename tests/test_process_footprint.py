"""Each process loads only what its role needs: memory is mostly imports (numpy alone is 20 MB
resident per process), so a module a role must not hold is a failure here, not a figure that drifts
in the bench."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_sim

NO_ASTRONOMY = ("astropy", "erfa", "numpy", "fitsio")
NO_OTHER_BUS = ("confluent_kafka", "fastavro", "boto3", "botocore")

#: role -> (what its start and its per-message work run, modules it must not have imported)
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "listener": (
        """
        from procs import listener
        from protocols import salrecord, sal
        cfg = load()
        listener.needed_topics(cfg)
        s = sal.make_sample("ESS", "temperature", 301, private_sndStamp=tai_now())
        listener.sample_record(s.serialize(), 1, sal.idl_class("ESS", "temperature"))
        """,
        NO_ASTRONOMY + NO_OTHER_BUS,
    ),
    "cache": (
        """
        from procs import cache
        from protocols import salrecord
        cfg = load()
        store = cache.Store(100, 3600.0)
        t = tai_now()
        raw = salrecord.HEADER.pack(b"HSR1", 301, t, t, -1) + CDR
        key, _ = store.add(b"sal.ESS.temperature", raw)
        assert store.as_of(key, t + 1)["data"]["temperatureItem"][0] == 11.5
        """,
        NO_ASTRONOMY + NO_OTHER_BUS + ("cyclonedds",),
    ),
    "publisher": (
        """
        from procs import publisher
        cfg = load()
        """,
        NO_ASTRONOMY + NO_OTHER_BUS,
    ),
    "csc": (
        """
        from procs import csc
        cfg = load()
        """,
        NO_ASTRONOMY + NO_OTHER_BUS,
    ),
    "composer": (
        """
        from procs import composer
        cfg = load()
        """,
        ("fitsio",) + NO_OTHER_BUS,
    ),
}

PRELUDE = """
import sys
from protocols.config import check_configuration, load_instance
from protocols.envelope import Sender, tai_now
from protocols.timescale import utc_from_tai

def load():
    cfg = load_instance("LATISS")
    check_configuration(cfg)
    Sender("x").frames("ctl.status", {"t": utc_from_tai(tai_now())})
    return cfg
"""


def _ess_cdr() -> bytes:
    from protocols import sal

    return sal.make_sample("ESS", "temperature", 301, temperatureItem=[11.5] * 16).serialize()


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_role_imports_nothing_it_must_not(role: str) -> None:
    work, banned = ROLES[role]
    code = PRELUDE + f"CDR = {_ess_cdr()!r}\n" + textwrap.dedent(work) + textwrap.dedent(
        f"""
        held = sorted(m for m in {banned!r} if m in sys.modules)
        assert not held, f"{role} imported {{held}}"
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


#: Shared libraries of packages a running process must not have loaded, by role.
LIBRARIES = {
    "numpy": "_multiarray_umath",
    "erfa": "/erfa/ufunc",
    "astropy": "/astropy/",
    "fitsio": "_fitsio_wrap",
    "cyclonedds": "libddsc",
    "confluent_kafka": "/confluent_kafka/",
    "fastavro": "/fastavro/",
}
BANNED_LIBS = {
    "listener": ("numpy", "erfa", "astropy", "fitsio", "confluent_kafka", "fastavro"),
    "cache": ("numpy", "erfa", "astropy", "fitsio", "cyclonedds", "confluent_kafka", "fastavro"),
    "publisher": ("numpy", "erfa", "astropy", "fitsio", "confluent_kafka", "fastavro"),
    "csc": ("numpy", "erfa", "astropy", "fitsio", "confluent_kafka", "fastavro"),
    "composer": ("fitsio", "confluent_kafka", "fastavro"),
}

SCENARIO = {
    "instrument": "LATISS",
    "exposures": [
        {"start": "2026-11-25T03:04:06.457", "exptime": 2.0, "ra": 40.1, "dec": -40.0, "rotpa": 10.0,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT"},
    ],
}  # fmt: skip


def test_running_processes_after_a_header_hold_no_library_their_role_does_not_use(deployment_factory, tmp_path: Path) -> None:  # noqa: ANN001
    from tests.plain_dds import PlainReader

    dep = deployment_factory(("LATISS",))
    reader = PlainReader(dep.domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
    scen = tmp_path / "night.yaml"
    scen.write_text(yaml.safe_dump(SCENARIO))
    time.sleep(1.0)
    sim = run_sim(dep, scen, speed=20)
    assert sim.returncode == 0, sim.stderr
    assert reader.wait(lambda got: len(got) >= 1, timeout=60)
    found = {}
    for role, banned in BANNED_LIBS.items():
        maps = Path(f"/proc/{dep.pid(f'latiss:latiss-{role}')}/maps").read_text()
        found[role] = [lib for lib in banned if LIBRARIES[lib] in maps]
    assert found == {role: [] for role in BANNED_LIBS}
