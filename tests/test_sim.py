"""hs-sim: scenario validation, the planned night, and one real DDS round trip (domain 91)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocols.sal import ensure_loopback_dds, get_topic, idl_class, qos_for
from tools.sim.main import main as sim_main
from tools.sim.night import Night, focal_plane, plan_night, readout_sensors, topic_counts
from tools.sim.scenario import (
    Scenario,
    ScenarioError,
    default_scenario,
    load_scenario,
    scenario_from_dict,
    tai_iso,
)


CAMERA_SEQUENCE = [
    "startIntegration",
    "startShutterOpen",
    "endShutterClose",
    "startReadout",
    "endReadout",
    "imageReadoutParameters",
    "endOfImageTelemetry",
]
PER_IMAGE = set(CAMERA_SEQUENCE)
T0 = "2026-11-25T03:04:06.457"


def _write(tmp_path: Path, text: str, name: str = "night.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _exp(start: float, **kw) -> dict:
    return {"start": tai_iso(start), **kw}


def _t0() -> float:
    return scenario_from_dict({"instrument": "LATISS", "exposures": [{"start": T0, "exptime": 1}]}).exposures[0].tai_start


# ---------------------------------------------------------------------------------------------
# Scenario validation
# ---------------------------------------------------------------------------------------------
def test_wrong_type_names_file_and_field(tmp_path):
    p = _write(
        tmp_path,
        f"""instrument: LATISS
exposures:
  - {{start: "{T0}", exptime: thirty, ra: 10.0, dec: -30.0}}
""",
    )
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert "scenario night.yaml: exposures.0.exptime: Input should be a valid number" in str(exc.value)


def test_unknown_field_is_named(tmp_path):
    p = _write(
        tmp_path,
        f"""instrument: ComCam
exposures:
  - {{start: "{T0}", exptime: 2}}
  - {{start: "2026-11-25T03:05:00", exptime: 2, filtr: r_03}}
""",
    )
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert "exposures.1.filtr: Extra inputs are not permitted" in str(exc.value)
    with pytest.raises(ScenarioError, match=r"background\.mount_hzz"):
        scenario_from_dict(
            {"instrument": "LATISS", "background": {"mount_hzz": 5}, "exposures": [{"start": T0, "exptime": 1}]}
        )


def test_unknown_omit_topic_is_named(tmp_path):
    p = _write(
        tmp_path,
        f"""instrument: LATISS
exposures:
  - start: "{T0}"
    exptime: 5
    omit: [ATPtg.currentTargetStatus, ATPtg.currentTargetStatuss]
""",
    )
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    msg = str(exc.value)
    assert "scenario night.yaml: exposures.0.omit.1:" in msg
    assert "ATPtg.currentTargetStatuss" in msg
    assert "omit.0" not in msg  # the real topic is fine


def test_time_order_and_overlap_rules():
    t = _t0()
    # starting during the previous readout is allowed
    ok = scenario_from_dict({"instrument": "LATISS", "exposures": [_exp(t, exptime=5), _exp(t + 6, exptime=5)]})
    assert [i.name for i in ok.image_ids()] == ["AT_O_20261124_000001", "AT_O_20261124_000002"]
    with pytest.raises(ScenarioError, match=r"exposures\.1\.start: .*time order"):
        scenario_from_dict({"instrument": "LATISS", "exposures": [_exp(t, exptime=5), _exp(t - 60, exptime=5)]})
    with pytest.raises(ScenarioError, match=r"exposures\.1\.start: .*integration"):
        scenario_from_dict({"instrument": "LATISS", "exposures": [_exp(t, exptime=5), _exp(t + 3, exptime=5)]})
    with pytest.raises(ScenarioError, match=r"exposures\.0\.changes: .*no field 'azimuth'"):
        scenario_from_dict(
            {"instrument": "LATISS", "exposures": [_exp(t, exptime=5, changes={"ATDome.position.azimuth": 1.0})]}
        )


def test_default_scenario_shape():
    for inst in ("LATISS", "ComCam", "LSSTCam"):
        sc = default_scenario(inst, n=4)
        assert len(sc.exposures) == 4
        assert sc.exposures[0].imgtype == "BIAS" and sc.exposures[0].exptime == 0
        objects = [e for e in sc.exposures if e.imgtype == "OBJECT"]
        assert all(2 <= e.exptime <= 5 for e in objects)
        assert len({e.filter for e in objects}) >= 2
        assert len({(e.ra, e.dec) for e in objects}) >= 2
        assert all(o.alt > 20 for o in Night(sc).outlines)  # targets well above the horizon


# ---------------------------------------------------------------------------------------------
# The planned night
# ---------------------------------------------------------------------------------------------
def _overlapping_latiss() -> Scenario:
    t = _t0()
    return scenario_from_dict(
        {
            "instrument": "LATISS",
            "seed": 3,
            "background": {"mount_hz": 5},
            "exposures": [
                _exp(t, exptime=4.0, ra=30.0, dec=-30.0, rotpa=10.0, filter="SDSSr_65mm", object="A"),
                # starts 1 s into the 2 s readout of the first one
                _exp(t + 5.0, exptime=3.0, omit=["ATPtg.currentTargetStatus", "ATCamera.endOfImageTelemetry"]),
                _exp(t + 9.0, exptime=2.0, ra=35.0, dec=-40.0, filter="SDSSg_65mm", object="B"),
            ],
        }
    )


def test_camera_events_in_order_with_matching_image_names_when_overlapping():
    sc = _overlapping_latiss()
    sc = sc.model_copy(update={"exposures": [e.model_copy(update={"omit": []}) for e in sc.exposures]})
    ems = plan_night(sc)
    assert [e.tai for e in ems] == sorted(e.tai for e in ems)
    cam = [e for e in ems if e.component == "ATCamera" and e.topic in PER_IMAGE]
    names = [img.name for img in sc.image_ids()]
    for img, exp in zip(sc.image_ids(), sc.exposures):
        s, t = exp.tai_start, exp.exptime
        mine = [e for e in cam if e.fields.get("imageName") == img.name or (
            e.topic in ("startShutterOpen", "endShutterClose") and s <= e.tai <= s + t)]  # fmt: skip
        assert [e.topic for e in mine] == CAMERA_SEQUENCE
        si = mine[0].fields
        assert mine[0].tai == s and si["timestampAcquisitionStart"] == s
        assert si["imageSource"] == "AT" and si["imageController"] == "O"
        assert si["imageDate"] == img.dayobs == "20261124" and si["imageNumber"] == img.seqnum
        assert si["exposureTime"] == t and si["timeout"] == t + 30
        keys, values = si["additionalKeys"].split(":"), si["additionalValues"].split(":")
        assert len(keys) == len(values) and dict(zip(keys, values))["imageType"] == "OBJECT"
        sr = mine[3]
        assert sr.tai == s + t and sr.fields["timestampStartOfReadout"] == s + t
        assert mine[4].tai == pytest.approx(s + t + 2.0)
        eoit = mine[6]
        assert eoit.tai == pytest.approx(s + t + 2.3)
        assert eoit.fields["timestampDateObs"] == s and eoit.fields["timestampDateEnd"] == s + t
        assert eoit.fields["measuredShutterOpenTime"] == t
        irp = mine[5].fields
        assert (irp["preCols"], irp["overCols"], irp["overRows"], irp["readRows"], irp["readCols"]) == (3, 32, 48, 2000, 509)
    # the second exposure starts while the first is still reading out
    order = [(e.topic, e.fields.get("imageName")) for e in cam if "imageName" in e.fields]
    assert order.index(("startIntegration", names[1])) < order.index(("endReadout", names[0]))
    # pointing events precede their exposure, in radians
    tgt = [e for e in ems if e.topic == "currentTarget"]
    assert [e.fields["targetName"] for e in tgt] == ["A", "B"]
    assert tgt[1].tai < sc.exposures[2].tai_start
    assert tgt[1].fields["ra"] == pytest.approx(0.6108652, abs=1e-6)
    filt = [e.fields["name"] for e in ems if e.topic == "reportedFilterPosition"]
    assert filt == ["SDSSr_65mm", "SDSSg_65mm"]


def test_omitted_topic_absent_in_its_window_only():
    sc = _overlapping_latiss()
    night = Night(sc)
    ems = list(night.emissions())
    o = night.outlines[1]
    status = [e.tai for e in ems if e.topic == "currentTargetStatus"]
    assert not [t for t in status if o.setup <= t <= o.end_telemetry]
    assert [t for t in status if t < o.setup] and [t for t in status if t > o.end_telemetry]
    # the omitting exposure loses its own endOfImageTelemetry, its overlapping neighbour keeps its one
    eoit = [e.fields["imageName"] for e in ems if e.topic == "endOfImageTelemetry"]
    names = [i.name for i in sc.image_ids()]
    assert eoit == [names[0], names[2]]
    # background telemetry carries the full set of 100-element mount arrays
    mp = next(e for e in ems if e.topic == "mountPositions")
    assert len(mp.fields["ra"]) == 100 and mp.fields["cRioTimestamp"] == mp.tai


def test_changes_apply_from_mid_exposure_and_env_drifts():
    t = _t0()
    sc = scenario_from_dict(
        {
            "instrument": "LATISS",
            "background": {"mount_hz": 2},
            "exposures": [
                _exp(
                    t,
                    exptime=10.0,
                    ra=40.0,
                    dec=-30.0,
                    changes={"ATDome.position.azimuthPosition": 123.0, "ATDomeTrajectory.telescopeVignetted.vignetted": 3},
                )
            ],
        }
    )
    ems = plan_night(sc)
    end = sc.exposures[0].tai_end_telemetry
    dome = [(e.tai, e.fields["azimuthPosition"]) for e in ems if e.topic == "position"]
    assert all(v == 123.0 for tt, v in dome if t + 5.0 <= tt <= end)
    before = [v for tt, v in dome if tt < t + 5.0]
    assert before and all(v != 123.0 for v in before) and len(set(before)) > 1  # the dome follows the sky
    assert all(v != 123.0 for tt, v in dome if tt > end)
    vign = [(e.tai, e.fields["vignetted"]) for e in ems if e.topic == "telescopeVignetted"]
    assert (t + 5.0, 3) in vign and vign[-1][1] == 1 and vign[-1][0] > end
    temps = [e.fields["temperatureItem"][0] for e in ems if e.topic == "temperature" and t <= e.tai <= t + 10]
    assert len(set(temps)) > 1


def test_lsstcam_focal_plane_summary():
    sc = default_scenario("LSSTCam", n=1)
    ems = plan_night(sc)
    fp = next(e for e in ems if e.topic == "focalPlaneSummaryInfo")
    assert fp.component == "MTCamera" and fp.tai < sc.exposures[0].tai_start
    locs = fp.fields["ccdLocation"].split(":")
    assert len(locs) == len(set(locs)) == 205
    assert locs[:4] == ["R00_SG0", "R00_SG1", "R00_SW0", "R00_SW1"] and locs[4] == "R01_S00"
    assert sum(1 for x in locs if x[4:6] == "SG") == 8 and sum(1 for x in locs if x[4:6] == "SW") == 8
    manu = fp.fields["ccdManufacturer"].split(":")
    assert len(manu) == 205 and set(manu) == {"ITL", "E2V"}
    by_loc = dict(zip(locs, manu))
    assert all(by_loc[f"{r}_{s}"] == "ITL" for r in ("R00", "R04", "R40", "R44") for s in ("SG0", "SG1", "SW0", "SW1"))
    for f in ("raftBay", "ccdSlot", "ccdManSerNum", "ccdLSSTName", "rebSerialNumber", "sequencerKey"):
        assert len(fp.fields[f].split(":")) == 205, f
    assert len(fp.fields["ccdType"]) == 212 and fp.fields["ccdType"][205:] == [0] * 7
    assert len(focal_plane("ComCam")) == 9 and len(readout_sensors("LSSTCam")) == 197
    irp = next(e for e in ems if e.topic == "imageReadoutParameters").fields
    locs_r = irp["ccdLocation"].split(":")
    e2v = locs_r.index("R22_S11")
    assert (irp["preCols"][e2v], irp["overCols"][e2v], irp["overRows"][e2v], irp["readRows"][e2v]) == (10, 54, 46, 2002)


def test_every_keyword_source_topic_is_published():
    want = {
        "LATISS": {"ATCamera.vacuum", "ATCamera.focal_plane_Ccd", "ATPtg.mountPositions", "ATPtg.currentTargetStatus",
                   "ATAOS.focusOffsetSummary", "ATSpectrograph.settingsAppliedValues", "ATMCS.m3PortSelected",
                   "ATMCS.target", "ATDome.position", "ATDomeTrajectory.telescopeVignetted",
                   "ATSpectrograph.reportedFilterPosition", "ATSpectrograph.reportedDisperserPosition",
                   "ATSpectrograph.reportedLinearStagePosition", "ATHexapod.simulationMode",
                   "ATPneumatics.simulationMode"},
        "ComCam": {"CCCamera.focal_plane_Ccd", "CCCamera.endSetFilter", "MTPtg.mountPosition", "MTMount.azimuth",
                   "MTMount.elevation", "MTHexapod:1.application", "MTDomeTrajectory.telescopeVignetted",
                   "MTHexapod:2.simulationMode", "MTM1M3.simulationMode"},
        "LSSTCam": {"MTRotator.rotation", "MTCamera.endSetFilter", "MTPtg.currentTarget", "MTPtg.currentTargetStatus"},
    }  # fmt: skip
    common = {"ESS:301.temperature", "ESS:301.pressure", "ESS:301.relativeHumidity", "ESS:301.airFlow",
              "DIMM:1.dimmMeasurement"}  # fmt: skip
    for inst, topics in want.items():
        ems = plan_night(default_scenario(inst, n=2))
        counts = topic_counts(ems)
        cam = {"LATISS": "ATCamera", "ComCam": "CCCamera", "LSSTCam": "MTCamera"}[inst]
        missing = (topics | common | {f"{cam}.{t}" for t in CAMERA_SEQUENCE}) - set(counts)
        assert not missing, (inst, missing)
        hexa = [e for e in ems if e.topic == "application"]
        if hexa:
            assert len(hexa[0].fields["demand"]) == 6 and abs(hexa[0].fields["demand"][2]) < 200  # um


def test_same_scenario_same_night():
    sc = _overlapping_latiss()
    a, b = plan_night(sc), plan_night(sc)
    assert len(a) == len(b) and repr(a) == repr(b)  # repr: NaN-padded ESS arrays compare unequal


def test_every_emission_builds_a_dds_sample():
    ensure_loopback_dds()
    from tools.sim.player import build_sample

    for inst in ("LATISS", "ComCam", "LSSTCam"):
        seen = set()
        for e in plan_night(default_scenario(inst, n=2)):
            if (e.component, e.topic) in seen:
                continue
            seen.add((e.component, e.topic))
            s = build_sample(e.component, e.topic, e.sal_index, e.fields, private_sndStamp=e.tai)
            assert s.salIndex == e.sal_index


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_list_images_and_bad_scenario(tmp_path, capsys):
    assert sim_main(["--default", "ComCam", "--exposures", "3", "--list-images"]) == 0
    assert capsys.readouterr().out.split() == ["CC_O_20261124_000001", "CC_O_20261124_000002", "CC_O_20261124_000003"]
    bad = _write(tmp_path, "instrument: LATISS\nexposures:\n  - {start: 2026-11-25T03:04:06, exptime: x}\n", "bad.yaml")
    assert sim_main(["--scenario", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "scenario bad.yaml: exposures.0.exptime" in err and "Traceback" not in err
    assert sim_main(["--default", "LATISS", "--exposures", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "AT_O_20261124_000002" in out and "ATCamera.startIntegration" in out


# ---------------------------------------------------------------------------------------------
# Real DDS
# ---------------------------------------------------------------------------------------------
def test_play_one_exposure_on_dds(domain_id: int) -> None:
    ensure_loopback_dds()
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from tools.sim.player import Player

    t = _t0()
    name = "AT_O_20261124_000917"
    sc = scenario_from_dict(
        {
            "instrument": "LATISS",
            "background": {"mount_hz": 2},
            "exposures": [_exp(t, exptime=1.0, ra=40.0, dec=-30.0, image_name=name)],
        }
    )
    night = Night(sc)
    dp = DomainParticipant(domain_id)
    st = get_topic("ATCamera", "startIntegration")
    qos = qos_for(st.kind)
    reader = DataReader(dp, Topic(dp, st.dds_name, idl_class("ATCamera", "startIntegration"), qos=qos), qos=qos)

    player = Player(domain_id)
    try:
        player.prepare_topics(night.topics())
        assert player.wait_for_readers(5.0) >= 1
        t_play = time.monotonic()
        counts = player.play(night.emissions(), speed=0)
        assert time.monotonic() - t_play < 10  # speed 0 does not sleep through the ~15 s night
        assert counts["ATCamera.startIntegration"] == 1
        got = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not got:
            got = [s for s in reader.take(N=100) if getattr(s, "imageName", None) == name]
            time.sleep(0.05)
    finally:
        player.close()
    assert len(got) == 1
    s = got[0]
    assert s.private_sndStamp == pytest.approx(t)
    assert s.timestampAcquisitionStart == pytest.approx(t)
    assert s.private_identity == "ATCamera" and s.private_seqNum == 1
    assert s.sample_info.source_timestamp == pytest.approx((t - 37.0) * 1e9, abs=1e3)
