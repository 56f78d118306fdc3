"""Real services for the tests: PostgreSQL and Mosquitto on free 127.0.0.1 ports.

Set ROBODENSITY_TEST_DATABASE_URL / ROBODENSITY_TEST_BROKER_URL to reuse running
servers; otherwise each session starts throwaway ones and removes them afterwards.
Every test that touches the database gets a schema of its own.

Tests marked ``storage_modes`` run twice: on plain PostgreSQL (events in month partitions)
and on a second cluster that preloads TimescaleDB (events a hypertable; set
ROBODENSITY_TEST_TIMESCALE_URL to reuse one), skipped with the reason where it is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from robodensity.app.embedded import embedded_mosquitto, embedded_postgres, timescaledb_installed
from robodensity.storage.db import drop_schema, migrate

STORAGE_MODES = ("partitions", "timescaledb")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("storage_modes"):
        metafunc.parametrize("pg_url", STORAGE_MODES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    """The plain cluster's URL, or the TimescaleDB one's for a ``storage_modes`` test's second run."""
    mode = getattr(request, "param", "partitions")
    return str(request.getfixturevalue("timescale_pg_url" if mode == "timescaledb" else "plain_pg_url"))


@pytest.fixture
def storage_mode(request: pytest.FixtureRequest) -> str:
    """How this run stores events: 'timescaledb' on a ``storage_modes`` test's second run."""
    callspec = getattr(request.node, "callspec", None)
    return str(callspec.params.get("pg_url", "partitions")) if callspec else "partitions"


@pytest.fixture(scope="session")
def plain_pg_url() -> Iterator[str]:
    url = os.environ.get("ROBODENSITY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def timescale_pg_url() -> Iterator[str]:
    url = os.environ.get("ROBODENSITY_TEST_TIMESCALE_URL")
    if url:
        yield url
        return
    if not timescaledb_installed():
        pytest.skip("TimescaleDB is not installed beside PostgreSQL (./dev test builds it from ../shared/vendor)")
    with embedded_postgres(timescaledb=True) as url:
        yield url


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("ROBODENSITY_TEST_BROKER_URL")
    if url:
        yield url
        return
    with embedded_mosquitto() as url:
        yield url


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A freshly migrated schema of this test's own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, name)
    yield name
    drop_schema(pg_url, name)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
