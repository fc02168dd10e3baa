"""The commands: one module per command family; each function returns a frozen report from reports.py."""
