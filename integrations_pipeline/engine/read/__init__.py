"""The read side of the engine (forward ETL): pages in, rows out, loads committed with their cursor.

The path a page takes, one module each: ``pagination`` (which page comes next, per paginator kind) →
``extract`` (request a stream's pages per connection and window, pull records and cursors out of them) →
``load`` (hand the rows to a warehouse load and commit them together with the merged cursor state).
No Dagster and no environment here: callers hand in specs, credentials and a warehouse.
"""
