"""Files and their owners: the manifest, lineage, per-example tables, run folders, atomic writes."""
