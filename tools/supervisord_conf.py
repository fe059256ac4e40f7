"""supervisord.conf from one program template: ``python -m tools.supervisord_conf > supervisord.conf``.

Every instance (a folder of ``templates/`` holding an ``instance.yaml``) runs the same five
processes; their ``[program:]`` blocks differ only in names, so they are written once, in
``templates/supervisord.program.conf``, and repeated here per instance and role after the global
sections of ``templates/supervisord.head.conf``. tests/test_supervisord_conf.py checks that the
committed supervisord.conf is this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protocols.config import TEMPLATES

#: The processes of one instance, in start order; each runs as the console script ``hs-<role>``.
ROLES = ("listener", "cache", "composer", "publisher", "csc")
HEAD = TEMPLATES / "supervisord.head.conf"
PROGRAM = TEMPLATES / "supervisord.program.conf"


def instances(templates: Path = TEMPLATES) -> list[str]:
    """The instruments with an instance in ``templates`` (their folder names), sorted."""
    return sorted(p.parent.name for p in templates.glob("*/instance.yaml"))


def group(instrument: str) -> str:
    """The supervisord group of an instance (``latiss`` for LATISS): ``supervisorctl start latiss:*``."""
    return instrument.lower()


def program(instrument: str, role: str) -> str:
    """The supervisord program (and log file) name of one process: ``latiss-composer``."""
    return f"{group(instrument)}-{role}"


def _block(text: str) -> str:
    """A template without its leading comment lines (they describe the template, not the file)."""
    lines = text.splitlines()
    while lines and lines[0].startswith(";"):
        lines.pop(0)
    return "\n".join(lines).strip("\n") + "\n"


def render(names: list[str] | None = None) -> str:
    """The whole supervisord.conf for ``names`` (default: every instance in templates/)."""
    head = HEAD.read_text().rstrip("\n") + "\n"
    block = _block(PROGRAM.read_text())
    parts = [head]
    for instrument in instances() if names is None else names:
        g = group(instrument)
        for role in ROLES:
            parts.append(block.format(program=program(instrument, role), group=g, role=role, instrument=instrument))
        parts.append(f"[group:{g}]\nprograms={','.join(program(instrument, r) for r in ROLES)}\n")
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
