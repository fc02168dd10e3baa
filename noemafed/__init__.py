"""noemafed: noema federation as one file you copy to a host."""

__version__ = "0.1.0"
# The git commit the build came from: build.sh writes it into the copy it builds the wheel from; a checkout
# (tests, `pip install -e`) leaves it empty and `--version` says "unknown".
__commit__ = ""
