"""Put scripts/pyz_main.py in place of the `__main__.py` shiv wrote, keeping every other byte's meaning.

Usage: python scripts/replace_main.py dist/noemafed.pyz

The archive is rewritten entry by entry in the same order with the same metadata (shiv's reproducible
timestamps, permissions, compression but for the two entries every run reads), after the same shebang line, so
one commit still builds one sha256.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

MAIN = Path(__file__).with_name("pyz_main.py")
# What every run reads from the archive itself (the rest is read from the extracted copy): stored, not deflated,
# so that no run imports zlib (0.2 ms of every cron start) before it needs it.
READ_AT_EVERY_START = frozenset({"__main__.py", "environment.json"})


def replace_main(archive_path: Path, main_source: bytes) -> None:
    temporary = archive_path.with_name(archive_path.name + ".tmp")
    with zipfile.ZipFile(archive_path) as original:
        entries = original.infolist()
        if "__main__.py" not in {entry.filename for entry in entries}:
            raise SystemExit(f"{archive_path}: no __main__.py to replace; is this a shiv archive?")
        prefix = archive_path.read_bytes()[: min(entry.header_offset for entry in entries)]  # the shebang
        with temporary.open("wb") as out:
            out.write(prefix)
            with zipfile.ZipFile(out, "w") as rewritten:
                for entry in entries:
                    data = main_source if entry.filename == "__main__.py" else original.read(entry)
                    if entry.filename in READ_AT_EVERY_START:
                        entry.compress_type = zipfile.ZIP_STORED
                    rewritten.writestr(entry, data)
    os.chmod(temporary, os.stat(archive_path).st_mode)
    os.replace(temporary, archive_path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    replace_main(Path(sys.argv[1]), MAIN.read_bytes())
