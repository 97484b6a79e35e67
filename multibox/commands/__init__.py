"""CLI commands: argument handling, printing and file output over the library."""
