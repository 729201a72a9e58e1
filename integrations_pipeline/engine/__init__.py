"""The connector engine: spec models, auth and paginator registries, HTTP client, extraction.

No Dagster import happens anywhere below this package; it can run from a plain script.
"""
