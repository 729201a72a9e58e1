"""The Dagster layer: spec → AssetSpec translation, asset factories, resources, partitions, checks."""
