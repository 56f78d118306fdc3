"""Storage layer: the PostgreSQL connection, migrations, roles, registry import, rollup refresh.

Everything that touches PostgreSQL reaches it through here. Imports only :mod:`robodensity.core`.
"""
