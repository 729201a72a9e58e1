"""Everything under this folder is loaded by Dagster (``dg.load_from_defs_folder``)."""
