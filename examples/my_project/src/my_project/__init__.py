"""An example user project: the connectors come from integrations_pipeline, as a Dagster Component."""
