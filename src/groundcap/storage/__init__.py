"""Files that must survive a kill: atomic writes, Parquet parts with markers, the work-folder lock."""
