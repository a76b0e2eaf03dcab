"""Supervised difficulty scores: the metric formulas, the probe models they are measured on."""
