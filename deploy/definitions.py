"""The code location of a deployment: the project's definitions, with every step run on a Celery worker.

The daemon launches each run (a run worker on the machine of the code server); the run worker sends each of the
run's steps to RabbitMQ, and a Celery worker on any machine executes it (``dagster-celery worker start``). Steps
pass nothing in memory: stream assets write to the warehouse and syncs read from it, so every worker must reach
the same warehouse (``WAREHOUSE_URL=postgresql://...``; the embedded DuckDB file takes one writer at a time) and
see the same variables (credentials, ``RATE_LIMIT_URL``, ``INTEGRATIONS_PIPELINE_SECRET_KEY``).

The broker is dagster-celery's default, ``pyamqp://guest@$DAGSTER_CELERY_BROKER_HOST:5672//`` (``localhost``
when unset; ``dagster_celery/defaults.py``), for the run workers and the Celery workers alike; a broker with
a password is set in the run config's ``execution.config.broker`` as ``{env: NAME}`` and in the workers'
``-y`` file the same way. https://docs.dagster.io/integrations/libraries/celery
"""

from __future__ import annotations

import dagster as dg
from dagster_celery import celery_executor

from integrations_pipeline.dagster import build_definitions

defs = dg.Definitions.merge(build_definitions(), dg.Definitions(executor=celery_executor))
