"""Kafka test harness: the embedded bus (Tansu + hs-registry), one per test module, and a fresh
topic subname per test so tests never see each other's topics."""

from __future__ import annotations

import itertools
import os
from typing import Iterator

import pytest

from tools import kafka_local

_names = itertools.count()


@pytest.fixture(scope="module")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.LocalKafka]:
    with kafka_local.start(tmp_path_factory.mktemp("kafka")) as bus:
        yield bus


@pytest.fixture
def subname() -> str:
    """A LSST_TOPIC_SUBNAME of this test's own."""
    return f"t{os.getpid()}x{next(_names)}"
