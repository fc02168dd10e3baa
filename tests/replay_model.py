"""An independent reference model of replay, written from cortex.md §6 and docs/compatibility.md (section "Replay").

It computes the end state a replica must reach (the same shape as replay_helpers.end_state) with plain
dicts. It deliberately imports nothing from noemafed's replay path (replay, local, traces): only the event
parser (its input) and the frontmatter emitter (a foundation module with its own tests). Expected end states
in tests/data/replay/ are produced by this model, so a bug in replay.py cannot hide in its own expectation.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from noemafed.cortex import frontmatter
from noemafed.cortex.events import Event, parse_page

ACTIVE, ARCHIVE, TRASH = "traces", "archive/traces", "trash/traces"
ID_RE = re.compile(r"[0-9]{8}-[a-z0-9][a-z0-9-]{0,99}")
COORD = ("consolidation_claim", "consolidation_success", "consolidation_fail")
VISIBILITY = ("archive", "unarchive", "trash", "recover")
TAG_SETTERS = ("create", "update", "tag_update", "purge_long_term")
CHANGES = (
    "tag_update",
    *VISIBILITY,
    "promote",
    "demote",
    "consolidate",
    "vote",
    "purge",
    "purge_hard",
    "purge_long_term",
)
EVENT_FIELDS = (
    "id",
    "action",
    "trace_id",
    "cortex_id",
    "origin",
    "timestamp",
    "data",
    "vclock",
    "signature",
    "pubkey",
)
KEY_ORDER = (
    "id",
    "title",
    "type",
    "tier",
    "author",
    "tags",
    "derived_from",
    "origin",
    "created",
    "updated",
    "content_hash",
    "source_hash",
    "source_locked",
)


def sha(body: str) -> str:
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def uniq(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def cmp(a: dict[str, int], b: dict[str, int]) -> int:
    keys = set(a) | set(b)
    le = all(a.get(k, 0) <= b.get(k, 0) for k in keys)
    ge = all(a.get(k, 0) >= b.get(k, 0) for k in keys)
    if le and not ge:
        return -1
    if ge and not le:
        return 1
    return 0


def same(a: dict[str, int], b: dict[str, int]) -> bool:
    """Equal clocks: a key one of them lacks counts 0."""
    return all(a.get(k, 0) == b.get(k, 0) for k in set(a) | set(b))


def above_or_same(a: dict[str, int], b: dict[str, int]) -> bool:
    return cmp(a, b) == 1 or same(a, b)


def only26(clock: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in clock.items() if len(k.encode()) == 26}


def clock_text(clock: dict[str, int]) -> str:
    return json.dumps(dict(sorted(clock.items())), separators=(",", ":"))


def render(doc: dict[str, Any]) -> str:
    """A trace file: Go's key order, empty optional keys dropped, `source_locked` only when true."""
    raw: dict[str, Any] = {}
    for key in KEY_ORDER:
        value = doc.get(key)
        if key in ("id", "title", "type", "created", "updated"):
            raw[key] = value
        elif value:
            raw[key] = list(value) if isinstance(value, list) else value
    return "---\n" + frontmatter.dumps(raw) + "---\n\n" + doc["body"]


class Model:
    def __init__(self, own_id: str, own_name: str, now: str) -> None:
        self.own_id, self.own_name, self.now = own_id, own_name, now
        self.rows: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, list[str]] = {}
        self.lineage: dict[str, list[str]] = {}
        self.fts: list[list[str]] = []
        self.docs: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (folder, frontmatter + body)
        self.events: dict[str, dict[str, Any]] = {}
        self.clock: dict[str, int] = {}
        self.fed: dict[str, Any] = {}
        self.local_n = 0

    # -- plumbing
    def store(self, e: Event) -> None:
        self.events[e.id] = {
            "id": e.id,
            "action": e.action,
            "trace_id": e.trace_id,
            "origin": e.origin,
            "timestamp": e.timestamp,
            "data": e.data,
            "vclock": e.vclock,
            "cortex_id": e.cortex_id,
            "signature": e.signature,
            "pubkey": e.pubkey,
        }

    def of(self, tid: str, actions: tuple[str, ...]) -> list[dict[str, Any]]:
        """Stored events of a trace with one of `actions`, in id order."""
        return [
            ev for _, ev in sorted(self.events.items()) if ev["trace_id"] == tid and ev["action"] in actions
        ]

    def seen_by_another(self, e: Event, actions: tuple[str, ...]) -> bool:
        """Issue 12: some other stored event of `actions` on the trace has a clock strictly above e's."""
        mine = only26(e.vclock or {})
        return bool(mine) and any(
            ev["id"] != e.id and cmp(only26(ev["vclock"] or {}), mine) == 1
            for ev in self.of(e.trace_id, actions)
        )

    def above_all(self, e: Event, actions: tuple[str, ...]) -> bool:
        """e's clock is strictly above every other stored event of `actions` that has a clock."""
        mine = only26(e.vclock or {})
        others = [only26(ev["vclock"] or {}) for ev in self.of(e.trace_id, actions) if ev["id"] != e.id]
        return bool(mine) and all(cmp(mine, c) == 1 for c in others if c)

    def tier_of(self, tid: str) -> str:
        """Issue 12: the tier from the stored events: first snapshot's tier, newest promote/demote, consolidate."""
        snaps = self.of(tid, ("create",)) or self.of(tid, ("update",))
        tier = (json.loads(snaps[0]["data"]).get("tier") if snaps else None) or "short"
        changes = [ev for ev in self.of(tid, ("promote", "demote")) if only26(ev["vclock"] or {})]
        newest = [
            ev
            for ev in changes
            if not any(cmp(only26(o["vclock"]), only26(ev["vclock"])) == 1 for o in changes)
            # equal clocks: the first (by id) stands for all
            and not any(
                same(only26(o["vclock"]), only26(ev["vclock"])) and o["id"] < ev["id"] for o in changes
            )
        ]
        last: dict[str, int] = {}
        if newest:
            chosen = max(newest, key=lambda ev: ev["id"])
            tier, last = json.loads(chosen["data"])["to"], only26(chosen["vclock"])
        if tier == "short":
            for ev in self.of(tid, ("consolidate",)):
                target = json.loads(ev["data"]).get("distilled_id")
                if isinstance(target, str) and target and target != tid:
                    continue
                clock = only26(ev["vclock"] or {})
                if not (last and clock and above_or_same(last, clock)):
                    return "mid"
        return tier

    def put_tier(self, tid: str, tier: str) -> None:
        row = self.rows[tid]
        if row["tier"] == tier:
            return
        row["tier"] = tier
        if row["purged_at"] is None:
            folder, doc = self.docs[tid]
            self.docs[tid] = (folder, {**doc, "tier": tier})

    def set_fts(self, tid: str, title: str, body: str, tags: list[str]) -> None:
        self.fts = [r for r in self.fts if r[0] != tid] + [[tid, title, body, " ".join(tags)]]

    def folder(self, row: dict[str, Any]) -> str:
        if row["trashed_at"] is not None:
            return TRASH
        return ARCHIVE if row["archived_at"] is not None else ACTIVE

    def new_row(self, tid: str, **cols: Any) -> None:
        row = dict.fromkeys(
            (
                "archived_at",
                "trashed_at",
                "last_read_at",
                "purged_at",
                "purge_reason",
                "source_hash",
                "content_hash",
            )
        )
        row.update(
            read_count=0, modify_count=0, tier_votes=0, source_locked=0, author="", origin="", cortex_id=""
        )
        row.update(cols, id=tid)
        self.rows[tid] = row

    # -- the event entry point (cortex.md §6 with the documented decisions)
    def apply(self, e: Event, peer: str) -> None:
        if e.id not in self.events:
            self.dispatch(e)
        if e.vclock:
            merged = dict(only26(self.clock))
            for k, v in only26(e.vclock).items():
                if v > merged.get(k, 0):
                    merged[k] = v
            if len(merged) <= 256:
                self.clock = merged
        self.fed[f"peer:{peer}:last_event"] = e.id

    def dispatch(self, e: Event) -> None:
        p = json.loads(e.data) if e.data not in ("", "null") else {}
        a, tid = e.action, e.trace_id
        if a in COORD or a in ("consolidate_fallback", "divergence_long_term"):
            self.store(e)
            return
        if not ID_RE.fullmatch(tid):
            assert a == "purge", f"stream holds an invalid id for {a}"
            self.rows.pop(tid, None)
            self.fts = [r for r in self.fts if r[0] != tid]
            self.store(e)
            return
        row = self.rows.get(tid)
        if a == "create" or (a == "update" and row is None):
            self.create(e, p)
        elif a == "update":
            self.update(e, p, row)
        elif a in CHANGES:
            self.store(e)
            self.change(e, p)
        else:
            raise AssertionError(f"unknown action {a}")

    def change(self, e: Event, p: dict[str, Any]) -> None:
        """Every action but create and update, once stored (also when a new row takes in earlier events)."""
        a, tid = e.action, e.trace_id
        row = self.rows.get(tid)
        if a == "purge":
            if row is not None and row["tier"] == "long":
                return  # issue 12: stored only, never a cursor pinned for good
            self.rows.pop(tid, None)
            self.tags.pop(tid, None)
            self.lineage.pop(tid, None)
            self.docs.pop(tid, None)
            self.fts = [r for r in self.fts if r[0] != tid]
            return
        if a == "consolidate":
            target = p.get("distilled_id")
            target = target if isinstance(target, str) and target else tid
            r = self.rows.get(target)
            if r is None:
                return
            if target == tid and only26(e.vclock or {}):
                self.put_tier(tid, self.tier_of(tid))
            elif r["tier"] == "short":
                self.put_tier(target, "mid")
            return
        if row is None:
            return  # applied when a row is made (create)
        if a == "tag_update":
            if row["purged_at"] is None and not self.seen_by_another(e, TAG_SETTERS):
                tags = uniq(p.get("tags") or [])
                self.tags[tid] = tags
                folder, doc = self.docs[tid]
                doc = {**doc, "tags": tags, "tier": row["tier"], "content_hash": row["content_hash"] or ""}
                self.docs[tid] = (folder, doc)
                self.set_fts(tid, row["title"], doc["body"], tags)
        elif a in VISIBILITY:
            if self.seen_by_another(e, VISIBILITY):
                return
            arch, trash = row["archived_at"] is not None, row["trashed_at"] is not None
            if self.above_all(e, VISIBILITY):
                # The newest visibility change leaves its whole state.
                row["archived_at"] = e.timestamp if a == "archive" else None
                row["trashed_at"] = e.timestamp if a == "trash" else None
            elif a == "archive" and not arch and not trash:
                row["archived_at"] = e.timestamp
            elif a == "unarchive" and arch and not trash:
                row["archived_at"] = None
            elif a == "trash" and not trash:
                row["trashed_at"], row["archived_at"] = e.timestamp, None
            elif a == "recover" and trash:
                row["trashed_at"] = None
            else:
                return
            if tid in self.docs:
                self.docs[tid] = (self.folder(row), self.docs[tid][1])
        elif a in ("promote", "demote"):
            self.put_tier(tid, self.tier_of(tid) if only26(e.vclock or {}) else p["to"])
        elif a == "vote":
            d = p.get("delta", 0)
            row["tier_votes"] += (d > 0) - (d < 0)
        elif a == "purge_long_term":
            reason = p.get("reason") or "remote purge"
            row.update(purged_at=e.timestamp, updated_at=e.timestamp, purge_reason=reason)
            self.tags.pop(tid, None)
            self.set_fts(tid, "", f"[purged: {reason}]", [])
            self.docs.pop(tid, None)  # every folder, the trash copy too
        elif a == "purge_hard":
            self.rows.pop(tid)
            self.tags.pop(tid, None)
            self.lineage.pop(tid, None)
            for parents in self.lineage.values():
                if tid in parents:
                    parents.remove(tid)
            self.docs.pop(tid, None)
            self.fts = [r for r in self.fts if r[0] != tid]

    def heads(self, tid: str) -> list[dict[str, Any]]:
        """Stored snapshots (create, update) with a clock no other one is >= to (of equal ones, the first)."""
        snaps = [ev for ev in self.of(tid, ("create", "update")) if only26(ev["vclock"] or {})]
        return [
            ev
            for i, ev in enumerate(snaps)
            if not any(
                cmp(only26(o["vclock"]), only26(ev["vclock"])) == 1
                or (same(only26(o["vclock"]), only26(ev["vclock"])) and j < i)
                for j, o in enumerate(snaps)
                if j != i
            )
        ]

    def create(self, e: Event, p: dict[str, Any]) -> None:
        tid = e.trace_id
        if tid in self.rows:
            own = not [ev for ev in self.of(tid, ("create",)) if ev["id"] != e.id] and self.seen_by_another(
                e, ("create", "update")
            )
            self.store(e)
            if own:
                # The trace's own create, after an update made the row: it dates it and names its owner.
                row = self.rows[tid]
                row.update(created_at=e.timestamp, cortex_id=e.cortex_id)
                if tid in self.docs:
                    folder, doc = self.docs[tid]
                    self.docs[tid] = (folder, {**doc, "created": e.timestamp})
                self.put_tier(tid, self.tier_of(tid))
            return
        earlier = any(ev["trace_id"] == tid for ev in self.events.values())
        self.store(e)
        created, owner, tier = e.timestamp, e.cortex_id, p.get("tier") or "short"
        if earlier:
            if self.seen_by_another(e, ("create", "update")):
                newest = max(self.heads(tid), key=lambda ev: ev["id"])
                e = Event(**{k: newest[k] for k in EVENT_FIELDS})
                p = json.loads(e.data)
            creates = self.of(tid, ("create",))
            if creates:
                created, owner = creates[0]["timestamp"], creates[0]["cortex_id"]
            tier = self.tier_of(tid)
        locked = bool(p.get("source_locked")) and e.cortex_id != self.own_id
        parents, tags = uniq(p.get("derived_from") or []), uniq(p.get("tags") or [])
        self.new_row(
            tid,
            title=p["title"],
            type=p["type"],
            author=p.get("author", ""),
            created_at=created,
            updated_at=e.timestamp,
            origin=p.get("origin", ""),
            cortex_id=owner,
            content_hash=p.get("content_hash", ""),
            source_locked=int(locked),
            source_hash=p.get("source_hash") or None,
            tier=tier,
        )
        self.tags[tid], self.lineage[tid] = list(tags), list(parents)
        self.set_fts(tid, p["title"], p["body"], tags)
        doc = {
            "id": tid,
            "title": p["title"],
            "type": p["type"],
            "tier": tier,
            "author": p.get("author", ""),
            "tags": tags,
            "derived_from": parents,
            "origin": p.get("origin", ""),
            "created": created,
            "updated": e.timestamp,
            "content_hash": p.get("content_hash", ""),
            "source_hash": p.get("source_hash", ""),
            "source_locked": locked,
            "body": p["body"],
        }
        self.docs[tid] = (ACTIVE, doc)
        if earlier:
            # Events of the trace that arrived before its row: taken in now, in id order.
            for ev in self.of(tid, CHANGES):
                row = self.rows.get(tid)
                if row is None:
                    break
                self.change(Event(**{k: ev[k] for k in EVENT_FIELDS}), json.loads(ev["data"]))

    def update(self, e: Event, p: dict[str, Any], row: dict[str, Any]) -> None:
        tid = e.trace_id
        # The trace's current versions: stored snapshot clocks that no other stored snapshot clock is >= to
        # (for equal clocks, the first one stands for all).
        clocks = [
            only26(ev["vclock"] or {})
            for _, ev in sorted(self.events.items())
            if ev["trace_id"] == tid and ev["action"] in ("create", "update")
        ]
        clocks = [c for c in clocks if c]
        heads = [
            c
            for i, c in enumerate(clocks)
            if not any(cmp(o, c) == 1 or (same(o, c) and j < i) for j, o in enumerate(clocks) if j != i)
        ]
        incoming = only26(e.vclock or {})
        if incoming and heads:
            if any(cmp(h, incoming) == 1 or same(h, incoming) for h in heads):
                self.store(e)  # stale or equal: stored, never applied
                return
            if not all(cmp(incoming, h) == 1 for h in heads):
                self.diverge(e, p, row)
                return
        self.store(e)
        mine = only26(e.vclock or {})
        promoted_after = [
            ev
            for ev in self.of(tid, ("promote",))
            if json.loads(ev["data"]).get("to") == "long"
            and (
                ev["id"] > e.id
                or (mine and only26(ev["vclock"] or {}) and above_or_same(only26(ev["vclock"]), mine))
            )
        ]
        if row["tier"] == "long" and not promoted_after:
            return
        locked = bool(p.get("source_locked")) and e.cortex_id != self.own_id
        row.update(
            title=p["title"],
            type=p["type"],
            author=p.get("author", ""),
            origin=p.get("origin", ""),
            content_hash=p.get("content_hash", ""),
            source_locked=int(locked),
            source_hash=p.get("source_hash") or None,
        )
        parents = uniq(p.get("derived_from") or [])
        self.lineage[tid] = list(parents)
        if row["purged_at"] is not None:
            return  # a tombstone keeps its time, tags, text and (no) file
        row["updated_at"] = e.timestamp
        tags = uniq(p.get("tags") or [])
        if self.seen_by_another(e, TAG_SETTERS):
            tags = list(self.docs[tid][1]["tags"])  # newer tags are in: the edit's content, those tags
        self.tags[tid] = list(tags)
        self.set_fts(tid, p["title"], p["body"], tags)
        folder, old = self.docs[tid]
        self.docs[tid] = (
            folder,
            {
                **old,
                "title": p["title"],
                "type": p["type"],
                "tier": row["tier"],
                "author": p.get("author", ""),
                "tags": tags,
                "derived_from": parents,
                "origin": p.get("origin", ""),
                "updated": e.timestamp,
                "content_hash": p.get("content_hash", ""),
                "source_hash": p.get("source_hash", ""),
                "source_locked": locked,
                "body": p["body"],
            },
        )

    def diverge(self, e: Event, p: dict[str, Any], row: dict[str, Any]) -> None:
        self.store(e)
        tid = e.trace_id
        versions = sorted(
            [
                (self.own_id, self.own_name, dict(self.clock), self.docs[tid][1]["body"]),
                (e.cortex_id, e.origin, e.vclock or {}, p["body"]),
            ]
        )
        labels = [f"{name} ({cid[:8]})" if cid else name for cid, name, _, _ in versions]
        text = f"## Concurrent edits detected\n\n**Trace:** {tid}\n**Conflicting origins:** {', '.join(labels)}\n"
        for label, (_, _, clock, body) in zip(labels, versions, strict=True):
            text += f"\n### Version from {label}\n**Vector clock:** {clock_text(clock)}\n\n{body}"
            text += "" if body.endswith("\n") else "\n"
        body = text.rstrip("\n")
        slug = re.sub("-+", "-", f"divergence-{tid}")[:100].rstrip("-")
        base = f"{self.now[:10].replace('-', '')}-{slug}"
        did, n = base, 2
        while did in self.rows:
            did = f"{base[:9]}{base[9:][: 100 - len(str(n)) - 1].rstrip('-')}-{n}"
            n += 1
        tags = ["divergence", "needs-resolution"]
        self.new_row(
            did,
            title=f"Divergence: {row['title']}",
            type="divergence",
            author="system",
            created_at=self.now,
            updated_at=self.now,
            origin=self.own_name,
            cortex_id=self.own_id,
            tier="short",
        )
        self.tags[did], self.lineage[did] = tags, [tid]
        self.set_fts(did, f"Divergence: {row['title']}", body, tags)
        doc = {
            "id": did,
            "title": f"Divergence: {row['title']}",
            "type": "divergence",
            "tier": "short",
            "author": "system",
            "tags": tags,
            "derived_from": [tid],
            "origin": self.own_name,
            "created": self.now,
            "updated": self.now,
            "body": body,
        }
        self.docs[did] = (ACTIVE, doc)
        self.clock = only26(self.clock)
        self.clock[self.own_id] = self.clock.get(self.own_id, 0) + 1
        self.local_n += 1
        payload = {
            "title": doc["title"],
            "type": "divergence",
            "author": "system",
            "tags": tags,
            "derived_from": [tid],
            "origin": self.own_name,
            "tier": "short",
            "body": body,
        }
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        for raw, esc in (
            ("<", "\\u003c"),
            (">", "\\u003e"),
            ("&", "\\u0026"),
            ("\u2028", "\\u2028"),
            ("\u2029", "\\u2029"),
        ):
            data = data.replace(raw, esc)
        local_id = f"<LOCAL_EVENT_{self.local_n}>"
        self.events[local_id] = {
            "id": local_id,
            "action": "create",
            "trace_id": did,
            "origin": self.own_name,
            "timestamp": self.now,
            "data": data,
            "vclock": dict(self.clock),
            "cortex_id": self.own_id,
            "signature": "",
            "pubkey": "",
        }

    # -- output
    def state(self) -> dict[str, Any]:
        files = {f"{folder}/{tid}.md": render(doc) for tid, (folder, doc) in self.docs.items()}
        fed = dict(self.fed)
        if self.clock:
            fed["vclock"] = self.clock
        return {
            "files": dict(sorted(files.items())),
            "traces": [{**self.rows[t], "id": t} for t in sorted(self.rows)],
            "trace_tags": sorted([t, g] for t, tags in self.tags.items() for g in tags),
            "trace_lineage": sorted([t, d] for t, ds in self.lineage.items() for d in ds),
            "traces_fts": sorted(self.fts),
            "events": [self.events[k] for k in sorted(self.events)],
            "federation_state": dict(sorted(fed.items())),
        }


def expected_state(deliveries: list[tuple[str, str]], own_id: str, own_name: str, now: str) -> dict[str, Any]:
    model = Model(own_id, own_name, now)
    for peer, text in deliveries:
        for event in parse_page(text):
            # The syncer asks for `since = cursor`: nothing at or below the cursor comes back.
            if event.id > model.fed.get(f"peer:{peer}:last_event", ""):
                model.apply(event, peer)
    return model.state()
