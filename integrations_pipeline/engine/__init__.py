"""The connector engine: a flat core (spec models, registries, auth, client, rate limits, errors) and two rooms,
``read/`` (forward ETL: pagination, extraction, stream loads) and ``write/`` (reverse ETL: mapping → plan → push).

No Dagster import happens anywhere below this package; it can run from a plain script.
"""
