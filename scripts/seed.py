#!/usr/bin/env python3
"""Author realistic local activity in a cortex the way noema does: real traces, local events, clock increments.

Usage: python scripts/seed.py CORTEX_DIR [--traces N] [--seed S] [--body-bytes B] [--quiet]

Every change goes through `tests/authoring.py`, which writes the trace file, the rows and one local event with
the incremented vector clock in one transaction, exactly like a noema mutation. Tests, benchmarks and the demo all
make their data here; nothing writes fake rows by hand.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

# The authoring API is test support (tests/authoring.py): noemafed itself never authors traces.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import authoring

from noemafed.cortex.open import Cortex, open_cortex

TOPICS = (
    ("storage", "Why the index lives in SQLite", "decision"),
    ("sync", "Peers pull, nobody pushes", "fact"),
    ("agents", "Agents prefer short traces", "preference"),
    ("ops", "Cron runs sync every five minutes", "context"),
    ("security", "The ring shares one bearer key", "fact"),
    ("memory", "Consolidation folds short traces into mid", "observation"),
    ("release", "Upgrade peers before emitting new actions", "intent"),
    ("tools", "How to read status --json", "skill"),
)
SENTENCES = (
    "The event log is append-only, so every replica can replay it in id order.",
    "A vector clock tells concurrent edits from ordered ones.",
    "Trace files are the source of truth for content & the database indexes them.",
    "When two cortexes edit the same trace at once, a divergence trace records both versions.",
    "Operators read `noemafed status --json` from scripts; the exit code says what kind of trouble it is.",
    'Bodies may hold <markup>, quotes "like these", and non-ASCII text: café, 日本語, naïve.',
)


@dataclass(frozen=True)
class SeedReport:
    created: list[str]
    events: int


def _body(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < size:
        parts.append(rng.choice(SENTENCES))
    return " ".join(parts)[:size].rstrip() + "\n"


def seed(
    cortex: Cortex, traces: int, *, rng_seed: int = 7, body_bytes: int = 400, label: str = ""
) -> SeedReport:
    """Create `traces` traces and then edit, tag, archive, trash, vote and promote some of them."""
    rng = random.Random(rng_seed)
    created: list[str] = []
    events = 0
    prefix = f"{label} " if label else ""
    for n in range(traces):
        topic, title, kind = TOPICS[n % len(TOPICS)]
        trace_id, _ = authoring.create_trace(
            cortex,
            f"{prefix}{title} ({n})",
            kind,
            _body(rng, body_bytes),
            tags=(topic, rng.choice(("team", "ring", "notes"))),
            author=f"{cortex.manifest.name}-agent",
        )
        created.append(trace_id)
        events += 1
    for index, trace_id in enumerate(created):
        roll = rng.random()
        if roll < 0.25:
            authoring.update_trace(
                cortex, trace_id, body=_body(rng, body_bytes) + "Revisited after review.\n"
            )
        elif roll < 0.40:
            authoring.set_tags(cortex, trace_id, (TOPICS[index % len(TOPICS)][0], "reviewed"))
        elif roll < 0.50:
            authoring.archive(cortex, trace_id)
        elif roll < 0.58:
            authoring.trash(cortex, trace_id)
        elif roll < 0.66:
            authoring.vote(cortex, trace_id, rng.choice((1, -1)))
        elif roll < 0.72:
            authoring.promote(cortex, trace_id, "mid")
        else:
            continue
        events += 1
    return SeedReport(created, events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("cortex", type=Path)
    parser.add_argument("--traces", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--body-bytes", type=int, default=400)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cortex = open_cortex(args.cortex)
    try:
        report = seed(cortex, args.traces, rng_seed=args.seed, body_bytes=args.body_bytes)
    finally:
        cortex.close()
    if not args.quiet:
        print(f"seeded {len(report.created)} traces, {report.events} local events in {args.cortex}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
