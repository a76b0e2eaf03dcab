"""datadiet: make training sets smaller without making models worse."""

__version__ = "0.1.0"
