from migrator.cli.main import entry

entry()
