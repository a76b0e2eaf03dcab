from datadiet_cli.cli import main

main()
