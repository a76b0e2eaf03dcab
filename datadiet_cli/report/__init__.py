"""Reports: results of many runs as a table, figures and a Markdown summary."""
