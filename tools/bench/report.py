"""Targets (met / not met / not measured, never asserted) and the short human summary."""

from __future__ import annotations

from typing import Any

MIN_EXPOSURES = 200
SUSTAIN_S = 60.0


def _get(d: dict[str, Any] | None, *keys: str) -> Any:  # noqa: ANN401
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _target(name: str, measured: float | None, limit: float, unit: str, why_missing: str, note: str = "",
            higher_is_better: bool = False) -> dict[str, Any]:  # fmt: skip
    if measured is None:
        return {"target": name, "limit": limit, "unit": unit, "measured": None, "status": "not measured", "note": why_missing}
    ok = measured >= limit if higher_is_better else measured <= limit
    out = {"target": name, "limit": limit, "unit": unit, "measured": measured, "status": "met" if ok else "not met"}
    if note:
        out["note"] = note
    return out


#: (camera, path, p99 limit in ms): the latency goals, each checked in every scenario the camera ran.
LATENCY_GOALS = (
    ("LSSTCam", "announcement", 20.0),
    ("LSSTCam", "fast_path", 10.0),
    ("ComCam", "announcement", 12.0),
    ("LATISS", "announcement", 8.0),
)
INGEST_GOAL = 50000.0  # samples/s for a minute, zero loss
MEMORY_GOALS = (("LSSTCam", 250.0), ("LATISS", 200.0))  # peak RSS of the whole instance, MB
FLOOR_RATIO_GOAL = 3.0  # announcement p99 as a multiple of the physical floor (an aim)
PATH_LABEL = {"announcement": "largeFileObjectAvailable", "fast_path": "fast path"}


def scenarios(res: dict[str, Any], camera: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(label, result) of every scenario the camera ran: alone, overlapping exposures, beside another."""
    out = [("alone", _get(res, "latency", camera))]
    ov = _get(res, "overlap", "overlapping_exposures", camera)
    if ov is not None:
        out.append(("overlapping exposures", ov))
    side = _get(res, "overlap", "side_by_side") or {}
    if camera in side:
        other = "LSSTCam" if camera == "ComCam" else "ComCam"
        out.append((f"beside {other}", side.get(camera)))
    return out


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for cam, path, limit in LATENCY_GOALS:
        for label, r in scenarios(res, cam):
            n = _get(r, path, "n") or 0
            reason = " | ".join(x.strip() for x in str((r or {}).get("reason", "?")).splitlines() if x.strip())
            why = "camera not run" if r is None else f"run failed: {reason[:300]}" if r.get("status") != "ok" else "no data"
            note = f"over {n} exposures (the target asks for at least {MIN_EXPOSURES})" if 0 < n < MIN_EXPOSURES and label == "alone" else ""
            name = f"{cam} endOfImageTelemetry -> {PATH_LABEL[path]} p99 <= {limit:g} ms, {label}"
            out.append(_target(name, _get(r, path, "p99_ms"), limit, "ms", why, note))
    ing = res.get("ingest") or {}
    sus = ing.get("sustain")
    name = f"ingest >= {INGEST_GOAL:,.0f} samples/s for a minute, zero loss"
    if ing.get("status") != "ok":
        out.append(_target(name, None, INGEST_GOAL, "samples/s", f"ingest failed: {ing.get('reason', 'not run')}"))
    elif not sus or sus["seconds"] < SUSTAIN_S * 0.95:
        step_s = ing["steps"][0]["seconds"] if ing.get("steps") else 0
        why = f"no {SUSTAIN_S:.0f} s run (quick mode, or no lossless step); best lossless step {ing.get('max_lossless_step_per_s')}/s over {step_s} s"
        out.append(_target(name, None, INGEST_GOAL, "samples/s", why))
    else:
        rate = sus["achieved_per_s"] if sus["lost"] == 0 else 0.0
        out.append(_target(name, rate, INGEST_GOAL, "samples/s", "",
                           f"{sus['seconds']:.0f} s at {sus['achieved_per_s']:.0f}/s, lost {sus['lost']}", True))  # fmt: skip
    for cam, limit in MEMORY_GOALS:
        mem = _get(res, "memory", cam)
        out.append(_target(f"whole {cam} instance <= {limit:g} MB RSS", _get(mem, "peak_total_mb"), limit, "MB",
                           f"{cam} not run" if mem is None else "no samples"))  # fmt: skip
    for cam, per in (_get(res, "floor", "per_camera") or {}).items():
        if isinstance(per, dict) and "announcement_ms" in per:
            out.append(_target(f"{cam} announcement p99 <= {FLOOR_RATIO_GOAL:g} x the physical floor (aim)",
                               per.get("announcement_ratio_p99"), FLOOR_RATIO_GOAL, "x", "no floor"))  # fmt: skip
    return out


def _f(v: Any, w: int = 7, d: int = 1) -> str:  # noqa: ANN401
    return f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"


def _row(label: str, r: dict[str, Any] | None, floor: dict[str, Any] | None = None) -> str:
    if not r or r.get("status") != "ok":
        reason = " | ".join(x.strip() for x in str((r or {}).get("reason", "not run")).splitlines() if x.strip())
        return f"  {label:<22} FAILED: {reason[:300]}"
    fp, an = r["fast_path"], r["announcement"]
    s = (f"  {label:<22} {r['exposures']:>4} {_f(fp['p50_ms'])} {_f(fp['p99_ms'])} {_f(fp['max_ms'])}   "
         f"{_f(an['p50_ms'])} {_f(an['p99_ms'])} {_f(an['max_ms'])}")  # fmt: skip
    if floor:
        s += f"   {_f(floor.get('fast_path_ms'), 5, 2)} {_f(floor.get('announcement_ms'), 6, 2)}"
        s += f"   x{_f(floor.get('fast_path_ratio_p50'), 5)} x{_f(floor.get('announcement_ratio_p50'), 5)}"
        s += f"   x{_f(floor.get('fast_path_ratio_p99'), 5)} x{_f(floor.get('announcement_ratio_p99'), 5)}"
    miss = r["missing_fast_path"] + r["missing_announcement"]
    if miss or r.get("incomplete_headers"):
        s += f"   (missing {r['missing_fast_path']}/{r['missing_announcement']}, incomplete {r['incomplete_headers']})"
    return s


def summary_text(res: dict[str, Any]) -> str:
    b = res["bench"]
    lines = [f"hs-bench: {', '.join(b['cameras'])}; {b['exposures']} exposures at {b['speed']:g}x; annex {b.get('annex', 'local')}; "
             f"{b['host']['cpus']} CPUs, load {b['host']['loadavg'][0]:.2f}; {b['wall_s']:.0f} s"]  # fmt: skip
    lines.append(f"  {'latency (ms)':<22} {'n':>4} {'fast p50':>7} {'p99':>7} {'max':>7}   {'LFO p50':>7} {'p99':>7} {'max':>7}"
                 f"   {'floor f':>5} {'floor a':>6}   {'ratio p50 f/a':>13}   {'ratio p99 f/a':>13}")  # fmt: skip
    per = _get(res, "floor", "per_camera") or {}
    for inst, r in res.get("latency", {}).items():
        lines.append(_row(inst, r, per.get(inst)))
    for inst, r in (_get(res, "overlap", "overlapping_exposures") or {}).items():
        lines.append(_row(f"{inst} overlapping", r))
    sbs = _get(res, "overlap", "side_by_side") or {}
    if any(k in sbs for k in ("ComCam", "LSSTCam")):
        for inst in ("ComCam", "LSSTCam"):
            lines.append(_row(f"{inst} side by side", sbs.get(inst)))
    elif sbs:
        lines.append(f"  side by side: {sbs.get('status')}: {sbs.get('reason', '')}")
    for inst, r in res.get("latency", {}).items():
        st = (r or {}).get("stages_ms")
        if not st:
            continue
        part = lambda k: f"{_f(st[k]['p50_ms'], 1, 1)}/{_f(st[k]['p99_ms'], 1, 1)}"  # noqa: E731
        rtt = r.get("cache_status_rtt") or {}
        split = ""
        if _get(st, "collect", "n"):
            split = (f" = bus to listener {part('bus_to_listener')} + on to composer {part('listener_to_composer')}"
                     f" + event handling {part('composer_before_collect')} + cache collect {part('collect')}")
        lines.append(f"  where the time goes, {inst} (p50/p99 ms): before compose {part('before_compose')}{split} "
                     f"(DDS, listener, cache), compose {part('compose')}, fast-path hop {part('fast_path_transfer')}, "
                     f"publisher + DDS {part('publisher_write_and_announce')}; cache status RTT p99 "
                     f"{_f(rtt.get('p99_ms'), 1, 1)} max {_f(rtt.get('max_ms'), 1, 1)}")  # fmt: skip
    for inst, r in res.get("latency", {}).items():
        for path in ("fast_path", "announcement"):
            for t in (_get(r, "tail", path, "images") or [])[:3]:
                st = ", ".join(f"{k} {v:.1f}" for k, v in t["stages_ms"].items() if k != "eoit_to_composer_send")
                run = " (first run)" if _get(res, "bench", "repeat") else ""
                lines.append(f"  p99 tail{run}, {inst} {PATH_LABEL[path]}: {t['image']} {t['ms']:.1f} ms ({st}); "
                             f"grew most: {t['grew_most']} (+{t['grew_by_ms']} ms over its median)")  # fmt: skip
    fl = res.get("floor") or {}
    if fl:
        dds = fl.get("dds_hop_ddsperf") or {}
        lines.append(f"  floor: DDS hop {_f(dds.get('hop_p50_ms'), 1, 3)} ms (ddsperf), {_f(_get(fl, 'dds_hop_python', 'p50_ms'), 1, 3)} ms (Python); "
                     f"ZMQ hop {_f(_get(fl, 'zmq_hop_event', 'p50_ms'), 1, 3)} ms (event); durable write+MD5 p50/p99 "
                     + ", ".join(f"{k} {_f(v.get('p50_ms'), 1, 2)}/{_f(v.get('p99_ms'), 1, 2)} ms" for k, v in (fl.get('durable_write_md5') or {}).items() if isinstance(v, dict))
                     + "; fitsio+MD5 (reference) "
                     + ", ".join(f"{k} {_f(v.get('p50_ms'), 1, 1)} ms" for k, v in (fl.get('fitsio_write_md5') or {}).items() if isinstance(v, dict)))  # fmt: skip
    ing = res.get("ingest") or {}
    if ing.get("status") == "ok":
        steps = ", ".join(f"{s['requested_per_s']:.0f}/s -> {s['achieved_per_s']:.0f}/s written, lost {s['lost']}" for s in ing["steps"])
        lines.append(f"  ingest ({ing['topic']}): {steps}")
        for sus in ing.get("sustain_runs") or []:
            lines.append(f"  ingest sustained: {sus['achieved_per_s']:.0f}/s for {sus['seconds']:.0f} s, lost {sus['lost']}")
        if ing.get("bus") == "kafka":
            kr = _get(res, "floor", "kafka_raw") or {}
            lines.append(f"  Kafka raw (plain confluent-kafka, end to end): {kr.get('end_to_end_per_s', '-')} samples/s; "
                         f"ratio {ing.get('ratio_to_kafka_raw')}")  # fmt: skip
        else:
            dp = ing.get("ddsperf") or {}
            lines.append(f"  ddsperf raw: {dp.get('samples_per_s', '-')} samples/s; ratio {ing.get('ratio_to_ddsperf')}")
    elif ing:
        lines.append(f"  ingest FAILED: {ing.get('reason')}")
    for inst, m in (res.get("memory") or {}).items():
        if isinstance(m, dict) and "peak_total_mb" in m:
            per_role = ", ".join(f"{k} {v:.0f}" for k, v in m["peak_rss_mb"].items())
            pss = f"; PSS {m['peak_pss_total_mb']:.0f} MB" if m.get("peak_pss_total_mb") else ""
            lines.append(f"  memory {inst}: peak total RSS {m['peak_total_mb']:.0f} MB ({per_role} MB){pss}")
            if m.get("cpu_s"):
                cpu = ", ".join(f"{k} {v:.1f}/{m['waited_for_cpu_s'].get(k, 0.0):.1f}" for k, v in m["cpu_s"].items())
                lines.append(f"  CPU {inst} (s used/s waiting for a CPU): {cpu}; machine {m.get('machine_busy_pct')}% busy")
    for t in res.get("targets", []):
        mark = {"met": "[met]    ", "not met": "[NOT MET]", "not measured": "[n/a]    "}[t["status"]]
        m = f"{t['measured']:.1f} {t['unit']}" if t["measured"] is not None else t.get("note", "")
        extra = f" ({t['note']})" if t.get("note") and t["measured"] is not None else ""
        lines.append(f"  {mark} {t['target']}: {m}{extra}")
    if res.get("plot"):
        lines.append(f"  plot: {res['plot']}")
    return "\n".join(lines)
