"""One module per subcommand: each is a thin typer function over one library call."""
