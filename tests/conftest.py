"""Real services for the tests: PostgreSQL and Mosquitto on free 127.0.0.1 ports.

Set ROBODENSITY_TEST_DATABASE_URL / ROBODENSITY_TEST_BROKER_URL to reuse running
servers; otherwise each session starts throwaway ones and removes them afterwards.
Every test that touches the database gets a schema of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from robodensity.app.embedded import embedded_mosquitto, embedded_postgres
from robodensity.storage.db import drop_schema, migrate


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("ROBODENSITY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres() as url:
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
