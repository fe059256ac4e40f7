"""hs-sim: play a simulated observing night onto the DDS bus (loopback only).

Examples::

    hs-sim --default LATISS --exposures 6 --speed 10 --domain 42
    hs-sim --scenario night.yaml --dry-run
    hs-sim --scenario night.yaml --list-images
    hs-sim --scenario night.yaml --start-now           # a live demo, in real time from now
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from protocols.timescale import tai_now
from tools.sim.scenario import INSTRUMENTS, Scenario, ScenarioError, default_scenario, load_scenario, tai_iso

START_NOW_MARGIN = 1.0  # seconds between discovery and the first emission with --start-now

EPILOG = """\
scenario file (YAML; times are TAI):
  instrument: LATISS            # LATISS | ComCam | LSSTCam
  controller: O                 # optional (O C H S P), default O
  first_seq: 1                  # optional SEQNUM of the first derived image name
  seed: 7                       # optional RNG seed (default: derived from the scenario)
  background: {mount_hz: 20, env_hz: 1, dimm_period: 60}
  simulation_modes: {ATMCS: 1}  # optional simulationMode.mode per component (default 0)
  omit: [DIMM.dimmMeasurement]  # optional topics never published
  exposures:
    - start: "2026-11-25T03:04:06.457"   # start of integration (TAI)
      exptime: 30.0
      ra: 225.1167                       # deg ICRS (omit ra/dec to stay on the previous target)
      dec: -40.0301
      rotpa: 183.74                      # deg
      filter: SDSSr_65mm
      imgtype: OBJECT
      image_name: AT_O_20261124_000001   # optional, default from DAYOBS and a running SEQNUM
      omit: [ATPtg.currentTargetStatus]  # not published from this exposure's slew to its
                                         # endOfImageTelemetry
      changes: {ATDome.position.azimuthPosition: 123.0}   # from mid-exposure to its end
      # also: object, group_id, program, reason, test_type, disperser (LATISS),
      #       readout_delay (2.0 s), end_telemetry_delay (0.3 s)

Exposures must be in time order; one may start during the previous readout, not during the
previous integration. DDS: Cyclone DDS on loopback only (protocols/cyclonedds-loopback.xml unless
CYCLONEDDS_URI is set); every SAL sample carries private_sndStamp = simulated TAI and the DDS
source timestamp is the simulated time too.

exit status: 0 done, 2 bad scenario or arguments, 130 interrupted.
"""


def _default_domain() -> int:
    raw = os.environ.get("HS_DDS_DOMAIN")
    if raw is None or raw == "":
        return 0
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"hs-sim: HS_DDS_DOMAIN={raw!r} is not an integer DDS domain id") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hs-sim",
        description="Play a simulated night (camera events, pointing, dome, weather...) onto the DDS bus "
        "as the observatory's SAL components would publish it, for the Header Service to listen to.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", type=Path, metavar="FILE", help="scenario YAML file (see below)")
    src.add_argument(
        "--default",
        choices=list(INSTRUMENTS),
        metavar="INSTRUMENT",
        help="play the built-in night for LATISS, ComCam or LSSTCam (a BIAS then short OBJECT exposures)",
    )
    p.add_argument(
        "--exposures", type=int, metavar="N", help="number of exposures of the built-in night (default 4; with --default)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated clock speed: 1 real time (default), N N-times faster, 0 as fast as possible",
    )
    p.add_argument(
        "--domain",
        type=int,
        default=None,
        metavar="ID",
        help="DDS domain id (default: $HS_DDS_DOMAIN, else 0)",
    )
    p.add_argument(
        "--start-now",
        action="store_true",
        help="shift the night so its first exposure starts a few seconds from now and play it in true "
        "time (live demos); explicit image names get the new DAYOBS",
    )
    p.add_argument(
        "--bus",
        choices=("dds", "kafka"),
        default=os.environ.get("HS_BUS") or "dds",
        help="SAL transport (default $HS_BUS or dds); kafka uses ts_salobj's LSST_* variables",
    )
    p.add_argument("--dry-run", action="store_true", help="print the timeline summary and exit (no DDS)")
    p.add_argument("--list-images", action="store_true", help="print the image names, one per line, and exit (no DDS)")
    p.add_argument(
        "--wait-readers",
        type=float,
        default=2.0,
        metavar="SEC",
        help="give DDS discovery up to SEC seconds to match readers before playing (default 2)",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=1.0,
        metavar="SEC",
        help="keep the DDS participant alive SEC seconds after the last sample (default 1)",
    )
    p.add_argument("--seed", type=int, help="override the scenario's RNG seed")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-exposure progress on stderr")
    return p


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Scenario:
    now_tai = tai_now()
    first_start = now_tai + max(args.wait_readers, 0.0) + START_NOW_MARGIN
    from tools.sim.night import NIGHT_LEAD

    first_start += NIGHT_LEAD
    if args.default:
        n = 4 if args.exposures is None else args.exposures
        if n < 1:
            parser.error("--exposures must be at least 1")
        sc = default_scenario(args.default, n, start=first_start if args.start_now else None)
    else:
        if args.exposures is not None:
            parser.error("--exposures goes with --default (a scenario file lists its own exposures)")
        sc = load_scenario(args.scenario)
        if args.start_now:
            sc = sc.shifted(first_start - sc.exposures[0].tai_start)
    if args.seed is not None:
        sc = sc.model_copy(update={"seed": args.seed})
    return sc


def _dry_run(sc: Scenario) -> None:
    from tools.sim.night import Night, topic_counts

    night = Night(sc)
    print(
        f"hs-sim dry run: {sc.instrument}, {len(sc.exposures)} exposures, night {tai_iso(night.t_start)} .. "
        f"{tai_iso(night.t_end)} TAI ({night.t_end - night.t_start:.1f} s), seed {night.seed}"
    )
    for line in night.outline_lines():
        print(line)
    counts = topic_counts(night.emissions())
    print(f"{sum(counts.values())} samples on {len(counts)} topics:")
    width = max(len(k) for k in counts)
    for k, v in sorted(counts.items()):
        print(f"  {k:<{width}} {v}")


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.speed < 0:
        parser.error("--speed must be >= 0")
    domain = args.domain if args.domain is not None else _default_domain()
    try:
        sc = _load(args, parser)
    except ScenarioError as exc:
        print(f"hs-sim: {exc}", file=sys.stderr)
        return 2
    if args.list_images:
        for img in sc.image_ids():
            print(img.name)
        return 0
    if args.dry_run:
        _dry_run(sc)
        return 0

    from tools.sim.night import Night
    from tools.sim.player import Player

    night = Night(sc)
    log = sys.stderr
    low = [o.image.name for o in night.outlines if o.alt < 0]
    if low:
        print(f"hs-sim: warning: target below the horizon at the start of {', '.join(low)}", file=log)
    print(
        f"hs-sim: {sc.instrument} night of {len(sc.exposures)} exposures, {tai_iso(night.t_start)} .. "
        f"{tai_iso(night.t_end)} TAI, {'Kafka' if args.bus == 'kafka' else f'domain {domain}'}, speed {args.speed:g}",
        file=log,
        flush=True,
    )
    out = open(os.devnull, "w") if args.quiet else log  # noqa: SIM115
    if args.bus == "kafka":
        from protocols.bus import BusUnavailable
        from tools.sim.player import KafkaPlayer

        try:
            player: Player = KafkaPlayer(log=out)
        except BusUnavailable as exc:
            print(f"hs-sim: {exc}", file=sys.stderr)
            return 2
    else:
        player = Player(domain, log=out)
    try:
        player.prepare_topics(night.topics())
        if args.wait_readers > 0:
            matched = player.wait_for_readers(args.wait_readers)
            print(f"hs-sim: {matched}/{player.n_writers} topics have a reader", file=log, flush=True)
        anchor = tai_now() if args.start_now else None
        player.play(
            night.emissions(),
            args.speed,
            total_exposures=len(sc.exposures),
            camera=night.camera,
            anchor_tai=anchor,
        )
        player.linger(args.linger)
        print(player.summary(), file=log, flush=True)
    finally:
        player.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("hs-sim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. hs-sim --dry-run | head
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's final flush quiet
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
