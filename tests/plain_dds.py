"""A DDS reader written without the Header Service's code: types built straight from the SAL YAML,
as the EFD, the archiver or any other observatory program would build them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml
from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct
from cyclonedds.idl import types as t
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

YAML = Path(__file__).resolve().parent.parent / "protocols" / "sal_topics.yaml"
TYPES = {"double": t.float64, "float": t.float32, "long": t.int32, "int": t.int32, "short": t.int16,
         "long long": t.int64, "boolean": bool, "string": str}


def plain_type(component: str, generic_name: str) -> tuple[str, type]:
    spec = yaml.safe_load(YAML.read_text())["SALGeneric"][generic_name]
    fields: dict[str, Any] = {"salIndex": t.int32, "private_sndStamp": t.float64, "private_rcvStamp": t.float64,
                              "private_seqNum": t.int32, "private_identity": str, "private_origin": t.int32}
    for f in spec["fields"]:
        fields[f["name"]] = TYPES[f["type"]]
    name = f"{component}_{generic_name}"
    return name, make_idl_struct(name, f"{component}::{generic_name}", fields, field_annotations={"salIndex": {"key": True}})


class PlainReader:
    def __init__(self, domain: int, component: str, generic_name: str):
        name, cls = plain_type(component, generic_name)
        qos = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(100),
                  Policy.Durability.TransientLocal)
        self.dp = DomainParticipant(domain)
        self.reader = DataReader(self.dp, Topic(self.dp, name, cls, qos=qos), qos=qos)
        self.got: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for s in self.reader.take(N=1000):
            self.got.append({k: getattr(s, k) for k in s.__annotations__})
        return self.got

    def wait(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.poll()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got
