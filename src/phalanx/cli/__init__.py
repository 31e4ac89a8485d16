"""Command-line composition root: picks adapters, maps errors to exit codes."""
