"""The write side of the engine (reverse ETL): sync specs and mapping, sinks, the plan, the push, reads.

The path a record takes, one module each, never back to a module already left:
``mapping`` (source record → target records) → ``plan`` (de-duplicate, validate, diff against what was
delivered) → ``push`` (per call: intent → send through ``sinks`` → record) ; ``reads`` fetches what a
target holds now. No Dagster and no environment here: callers hand in specs, credentials and a ledger.
"""
