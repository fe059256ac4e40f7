"""What every Header Service process shares: argument parsing, logging, counters, shutdown."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections import Counter
from typing import Any, Callable

from protocols.config import ConfigError, InstanceConfig, check_configuration, load_instance


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--instance",
        default="LATISS",
        help="instrument name (LATISS, ComCam, LSSTCam) or path to an instance.yaml (default LATISS)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


#: Exit status of a process refusing its configuration; supervisord.conf lists it in every
#: program's ``exitcodes``, so that (with the process alive past ``startsecs``) it is not restarted.
CONFIG_EXIT = 2
#: Longer than supervisord's ``startsecs`` (1 s): an exit sooner would count as a failed start, retried.
CONFIG_EXIT_DELAY = 1.5


def setup(args: argparse.Namespace, role: str) -> InstanceConfig:
    """Configure logging and load the instance's whole configuration (instance.yaml, keyword map,
    templates); a bad file ends the process with one error line naming it and exit status 2."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {role}[%(process)d] %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = load_instance(args.instance)
        check_configuration(cfg)
        return cfg
    except ConfigError as exc:
        logging.getLogger(role).error("configuration error: %s", exc)
        time.sleep(CONFIG_EXIT_DELAY)
        sys.exit(CONFIG_EXIT)


class Stop:
    """Set by SIGTERM/SIGINT so loops end cleanly (supervisord stops with SIGTERM)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, *_: Any) -> None:
        self.requested = True


def run_process(prog: str, doc: str | None, build: Callable[[InstanceConfig], Callable[[Stop], None]], argv: list[str] | None = None) -> None:
    """The whole ``main()`` of a Header Service process: arguments (``--instance``, ``--log-level``),
    logging and the checked configuration (exit 2 on a bad file, see :func:`setup`), then
    ``build(cfg)`` makes the process (sockets bound, state restored) and returns its loop, which
    runs until SIGTERM or SIGINT. Signals are caught once the process is built: a SIGTERM while it
    starts (restoring its state, waiting for the CSC) ends it at once."""
    args = base_parser(prog, (doc or prog).strip().splitlines()[0]).parse_args(argv)
    cfg = setup(args, prog)
    loop = build(cfg)
    loop(Stop())


def drain(sock: Any, handle: Any, limit: int = 100000) -> None:
    """Hand every message waiting on a ZeroMQ socket to ``handle`` without blocking."""
    import zmq

    for _ in range(limit):
        try:
            handle(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return


class Counters(Counter):
    """Named event counts (samples, errors by kind...) reported in status messages."""

    def as_dict(self) -> dict[str, int]:
        return dict(self)


def release_free_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class GcPacer:
    """Cyclic garbage collection at quiet moments rather than whenever allocations pile up.

    Python's automatic collector runs in the middle of whatever is allocating: in the composer a
    full collection of its memoized header parts took tens of milliseconds, landing inside a
    header's composition. A process using this pacer freezes what it built at start-up (never
    scanned again), turns automatic collection off, and calls :meth:`step` from its loop: young
    objects are collected when the loop is quiet (at most every ``young_s``, and at least every
    ``busy_s`` under continuous load), everything else when quiet every ``full_s``. After the
    start-up collection and every full one, freed heap pages go back to the system
    (``malloc_trim``): reading the IERS table at start-up alone leaves some 80 MB of freed memory
    resident in the composer otherwise.
    """

    def __init__(self, young_s: float = 1.0, busy_s: float = 10.0, full_s: float = 300.0):
        import gc

        self.gc = gc
        self.young_s, self.busy_s, self.full_s = young_s, busy_s, full_s
        gc.collect()
        gc.freeze()
        gc.disable()
        release_free_memory()
        self.last_young = self.last_full = time.monotonic()

    def step(self, quiet: bool) -> None:
        now = time.monotonic()
        since = now - self.last_young
        if quiet and now - self.last_full >= self.full_s:
            self.gc.collect()
            release_free_memory()
            self.last_full = self.last_young = time.monotonic()
        elif (quiet and since >= self.young_s) or since >= self.busy_s:
            self.gc.collect(1)
            self.last_young = time.monotonic()
