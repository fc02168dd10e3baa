"""noemafed: noema federation as one file you copy to a host."""

__version__ = "0.1.0"
