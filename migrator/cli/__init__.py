"""The command line: parsing, rendering and exit codes. The only place that prints or exits."""
