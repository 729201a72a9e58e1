"""integrations_pipeline: declarative ETL connector plugins on Dagster.

Layers import one way only: ``engine`` (no Dagster) ← ``warehouse`` ← ``defs`` (Dagster);
``connectors`` is data; ``sandbox`` imports nothing of the others but the shared fault helpers.
"""
