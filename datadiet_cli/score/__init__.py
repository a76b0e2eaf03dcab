"""Supervised difficulty scores from probe models.

registry.py lists the metrics (what each needs, its formula, citation); config.py the options;
probes.py trains the probes; readings.py reads finished probe runs; pipeline.py's
`score_manifest` ties them together. The formulas are in metrics.py and grand.py.
"""
