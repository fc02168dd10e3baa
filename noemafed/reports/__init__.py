"""What each command found or did, as frozen values: commands/ builds them, render/ prints them.

One module per family of commands (status, sync, the configuration commands), because each report class costs
some 80 microseconds to define at import and `status --check`, which a monitoring system runs every minute,
should define only its own (docs/performance.md, status). Here: the schema versions every command shares; the
error document, which only a failing command needs, is in `reports.error`.
"""

from __future__ import annotations

# The `schema_version` of each JSON document (docs/*.schema.json).
STATUS_SCHEMA_VERSION = 2  # docs/status.schema.json
PEERS_SCHEMA_VERSION = 1  # docs/peers.schema.json
SYNC_SCHEMA_VERSION = 2  # docs/sync.schema.json
DOCTOR_SCHEMA_VERSION = 1  # docs/doctor.schema.json
