"""Metadata keys and tags shared by the asset factory, the checks and the tests."""

TABLE_NAME = "dagster/table_name"
COLUMN_SCHEMA = "dagster/column_schema"
ROW_COUNT = "dagster/row_count"
PRIMARY_KEY = "primary_key"
CURSOR_FIELD = "cursor_field"
ENDPOINT = "endpoint"
CONNECTOR = "integrations_pipeline/connector"  # which spec and stream a stream asset loads: the
STREAM = "integrations_pipeline/stream"  # warehouse IO manager reads its table for downstream assets

RECORDS_FETCHED = "records_fetched"
PAGES = "pages"
API_CALLS = "api_calls"
RETRIES = "retries"
RATE_LIMITED = "responses_429"
SECONDS = "seconds"
INSERTED = "rows_inserted"
UPDATED = "rows_updated"
WINDOW = "window"
SKIPPED = "skipped_connections"
CONNECTIONS = "connections"

VENDOR_TAG = "integrations_pipeline/vendor"
# On the webhook events assets: the events sensor runs them; the main job leaves them out.
EVENTS_TAG = "integrations_pipeline/webhook_events"
WAREHOUSE_RESOURCE = "warehouse"
# Opens the connection tokens the link flow stored (INTEGRATIONS_PIPELINE_SECRET_KEY).
VAULT_RESOURCE = "connection_vault"


def credentials_resource_key(connector: str) -> str:
    return f"{connector}_credentials"
