"""Deterministic, lazy record generation shared by the sandbox vendors.

Records are never built up front: record ``i`` of a stream is a pure function of ``(seed, stream,
i)``, so a sandbox can pretend to hold a million inventory rows while keeping only the records a test
changed (``touch``/``add``) in memory. Two design choices make windows and paging cheap:

- record ``i``'s cursor timestamp is a strictly increasing function of ``i`` (``Timeline``), so the
  records in a time window are an index range found by bisection, never by a scan;
- pages are keyset pages: a page token carries the ``(timestamp, id)`` of the last record served,
  so the next page starts by bisection too, whatever the stream size.

Timestamps are whole UTC seconds, rendered as ``YYYY-MM-DDTHH:MM:SSZ`` (that fixed format also sorts
lexicographically in time order, which the filters rely on).

Other sandboxes may import the small helpers here: ``rng``, ``mix64``, ``iso``, ``parse_iso``,
``fake_person``, ``fake_email``, ``fake_phone``, ``fake_address``, ``money``.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import copy
import hashlib
import json
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

WINDOW_START = datetime(2026, 10, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 21, tzinfo=UTC)
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_MASK = (1 << 64) - 1
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# ---------------------------------------------------------------------------------------------
# Hashing, RNG and time
# ---------------------------------------------------------------------------------------------


def splitmix64(x: int) -> int:
    """One splitmix64 step: a fast, well-mixed 64-bit hash of an integer (pure integer maths)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def salt(text: str) -> int:
    """A stable integer for a name (``hash()`` is randomised per process, crc32 is not)."""
    return zlib.crc32(text.encode())


def mix64(*parts: int | str) -> int:
    """Combine ints and strings into one deterministic 64-bit value."""
    h = 0x243F6A8885A308D3
    for part in parts:
        h = splitmix64(h ^ (salt(part) if isinstance(part, str) else part & _MASK))
    return h


def rng(*parts: int | str) -> random.Random:
    """A ``random.Random`` seeded from ``parts``; same parts, same sequence, on every platform."""
    return random.Random(mix64(*parts))


def iso(ts: int) -> str:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime(ISO_FORMAT, time.gmtime(ts))


def parse_iso(text: str) -> int | None:
    """Strict ``YYYY-MM-DDTHH:MM:SSZ`` → epoch seconds; ``None`` if it is not exactly that form."""
    if not isinstance(text, str) or not _ISO_RE.match(text):
        return None
    try:
        return calendar.timegm(time.strptime(text, ISO_FORMAT))
    except ValueError:
        return None


def parse_iso_lenient(text: str) -> int | None:
    """Any ISO 8601 date or date-time (``Z``, offsets, fractions; naive = UTC) → epoch seconds."""
    try:
        dt = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return to_epoch(dt)


def to_epoch(dt: datetime) -> int:
    """A datetime (naive = UTC) → whole epoch seconds (fractions dropped: records are per second)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() // 1)


# ---------------------------------------------------------------------------------------------
# Fake values
# ---------------------------------------------------------------------------------------------

FIRST_NAMES = (
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Oliver",
    "Sophia",
    "Elijah",
    "Isabella",
    "James",
    "Mia",
    "William",
    "Charlotte",
    "Lucas",
    "Amelia",
    "Henry",
    "Harper",
    "Jack",
    "Evelyn",
    "Leo",
    "Chloe",
    "Mateo",
    "Grace",
    "Ethan",
    "Zoe",
    "Aarav",
    "Mei",
    "Hiroshi",
    "Fatima",
    "Omar",
    "Priya",
    "Diego",
    "Sofia",
    "Lars",
    "Ingrid",
    "Kwame",
    "Amara",
    "Tomasz",
    "Zofia",
    "Ruby",
)
LAST_NAMES = (
    "Smith",
    "Nguyen",
    "Brown",
    "Wilson",
    "Taylor",
    "Johnson",
    "Williams",
    "Martin",
    "Anderson",
    "Thompson",
    "Walker",
    "Harris",
    "Lee",
    "Ryan",
    "Robinson",
    "Kelly",
    "King",
    "Davis",
    "Wright",
    "Evans",
    "Patel",
    "Singh",
    "Chen",
    "Garcia",
    "Rodriguez",
    "Kowalski",
    "Nowak",
    "Larsen",
    "Okafor",
    "Haddad",
    "Tanaka",
    "Müller",
    "Rossi",
    "Dubois",
    "O'Brien",
    "Murphy",
    "Campbell",
    "Mitchell",
    "Clarke",
    "Hughes",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
STREETS = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Lakeview Rd",
    "Harbor Blvd",
    "Sunset Ave",
    "Park Pl",
    "River Rd",
    "Hillcrest Dr",
    "Willow Way",
    "Market St",
    "2nd Ave",
)
# (city, state, postal prefix, country)
CITIES = (
    ("Reno", "NV", "895", "US"),
    ("Columbus", "OH", "432", "US"),
    ("Dallas", "TX", "752", "US"),
    ("Atlanta", "GA", "303", "US"),
    ("Newark", "NJ", "071", "US"),
    ("Ontario", "CA", "917", "US"),
    ("Seattle", "WA", "981", "US"),
    ("Denver", "CO", "802", "US"),
    ("Chicago", "IL", "606", "US"),
    ("Louisville", "KY", "402", "US"),
    ("Toronto", "ON", "M5V", "CA"),
    ("Brooklyn", "NY", "112", "US"),
    ("Austin", "TX", "787", "US"),
    ("Portland", "OR", "972", "US"),
    ("Phoenix", "AZ", "850", "US"),
)
COMPANIES = (
    None,
    None,
    None,
    "Acme Retail",
    "Northwind Traders",
    "Bluebird Goods",
    "Summit Outfitters",
    "Harbor & Co",
    "Greenleaf Market",
)


def fake_person(r: random.Random) -> tuple[str, str]:
    return r.choice(FIRST_NAMES), r.choice(LAST_NAMES)


def fake_email(first: str, last: str, unique: int, domain: str | None = None) -> str:
    """An email made unique by ``unique`` (e.g. the record index): realistic and collision-free."""
    local = f"{first}.{last}".lower().replace("'", "").replace("ü", "u").replace(" ", "")
    return f"{local}.{unique}@{domain or EMAIL_DOMAINS[unique % len(EMAIL_DOMAINS)]}"


def fake_phone(r: random.Random, country: str = "US") -> str:
    if country == "AU":
        return f"+61 4{r.randrange(10, 100)} {r.randrange(100, 1000)} {r.randrange(100, 1000)}"
    return f"+1 {r.randrange(201, 990)}-{r.randrange(200, 1000)}-{r.randrange(1000, 10000)}"


def fake_address(r: random.Random) -> dict[str, Any]:
    """Street, city, state, postal code and country (Trackstar's ``ShipFromAddress`` fields)."""
    city, state, prefix, country = r.choice(CITIES)
    postal = (
        f"{prefix} {r.randrange(0, 10)}{chr(65 + r.randrange(26))}{r.randrange(0, 10)}"
        if country == "CA"
        else f"{prefix}{r.randrange(10, 100)}"
    )
    return {
        "address1": f"{r.randrange(1, 9999)} {r.choice(STREETS)}",
        "address2": f"Suite {r.randrange(100, 999)}" if r.random() < 0.2 else None,
        "address3": None,
        "city": city,
        "state": state,
        "postal_code": postal,
        "country": country,
    }


def money(r: random.Random, low: float, high: float) -> float:
    return round(r.uniform(low, high), 2)


# ---------------------------------------------------------------------------------------------
# Page tokens
# ---------------------------------------------------------------------------------------------


def fingerprint(*parts: Any) -> str:
    """A short digest of the filters a page token was issued for (tokens are only valid for them)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


Key = tuple[int, str]  # (cursor epoch seconds, id): the order records are served in


def encode_token(after: Key, previous: Key | None, fp: str) -> str:
    """Opaque token: where the next page starts, where the page before began (for the duplicate
    fault), and the fingerprint of the filters it belongs to."""
    raw = json.dumps({"a": list(after), "p": list(previous) if previous else None, "f": fp}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[Key, Key | None, str] | None:
    """The inverse of ``encode_token``; ``None`` for anything that is not one of our tokens."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = json.loads(raw)
        after = (int(obj["a"][0]), str(obj["a"][1]))
        prev = (int(obj["p"][0]), str(obj["p"][1])) if obj.get("p") else None
        return after, prev, str(obj["f"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Timeline and lazy store
# ---------------------------------------------------------------------------------------------


class Timeline:
    """Strictly increasing timestamps for indices ``0..n-1`` spread over ``[start, end)``.

    ``ts(i) = start + floor(i * span / n) + jitter(i)`` with ``0 <= jitter < floor(span / n)``:
    consecutive steps are at least ``floor(span / n) - jitter`` > 0, so the order is strict, and a
    window's index range is found by bisection on ``ts``.
    """

    def __init__(self, n: int, key: int, start: datetime = WINDOW_START, end: datetime = WINDOW_END) -> None:
        self.n = n
        self.key = key
        self.start = to_epoch(start)
        self.span = to_epoch(end) - self.start
        if n > self.span:
            # Strictness needs one distinct second per record.
            raise ValueError(f"got {n} records, at most {self.span} fit one per second in the window")
        self.step = self.span // n if n else 1

    def ts(self, i: int) -> int:
        jitter = splitmix64(self.key ^ i) % self.step if self.step > 1 else 0
        return self.start + (i * self.span) // self.n + jitter

    def created(self, i: int) -> int:
        """A creation time up to 45 days before ``ts(i)`` (so ``created <= updated`` always)."""
        return self.ts(i) - splitmix64(self.key ^ ~i) % (45 * 86400)

    def first_at_or_after(self, t: int) -> int:
        """Smallest ``i`` with ``ts(i) >= t`` (``n`` if none)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ts(mid) < t:
                lo = mid + 1
            else:
                hi = mid
        return lo


Generator = Callable[[int, int, int], dict[str, Any]]  # (index, updated ts, created ts) -> record


@dataclass
class Window:
    """Half-open ``[low, high)`` in epoch seconds on the cursor field; ``None`` = unbounded."""

    low: int | None = None
    high: int | None = None


class LazyStore:
    """One stream of one tenant: base records generated on demand, plus touched/added overrides.

    ``generate(i, updated_ts, created_ts)`` builds record ``i`` from scratch; ``id_of(i)`` and
    ``index_of(id)`` map between index and id without generating the record.
    """

    def __init__(
        self,
        size: int,
        key: int,
        generate: Generator,
        id_of: Callable[[int], str],
        index_of: Callable[[str], int | None],
        cursor_field: str,
        created_field: str | None,
    ) -> None:
        self.size = size
        self.key = key
        self.timeline = Timeline(size, key)
        self.generate = generate
        self.id_of = id_of
        self.index_of = index_of
        self.cursor_field = cursor_field
        self.created_field = created_field
        self.added = 0
        # index -> record for touched and added records; they also sit in ``moved`` by key.
        self.overrides: dict[int, dict[str, Any]] = {}
        self.moved: list[tuple[int, str, int]] = []
        self.changes = 0  # how many touch/add calls so far: seeds the next one
        self.lock = threading.RLock()

    # -- single records -----------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self.size + self.added

    def base(self, i: int) -> dict[str, Any]:
        return self.generate(i, self.timeline.ts(i), self.timeline.created(i))

    def get(self, i: int) -> dict[str, Any] | None:
        """The current record ``i`` (shared, do not mutate), or ``None`` if it does not exist."""
        if i < 0 or i >= self.count:
            return None
        found = self.overrides.get(i)
        return found if found is not None else self.base(i)

    def by_id(self, record_id: str) -> dict[str, Any] | None:
        i = self.index_of(record_id)
        if i is None or self.id_of(i) != record_id:
            return None
        return self.get(i)

    def all(self) -> Iterator[dict[str, Any]]:
        """Every current record in index order (deep copies)."""
        for i in range(self.count):
            rec = self.overrides.get(i)
            yield copy.deepcopy(rec) if rec is not None else self.base(i)

    # -- changes ------------------------------------------------------------------------------

    def _place(self, i: int, record: dict[str, Any], ts: int) -> None:
        old = self.overrides.get(i)
        if old is not None:
            old_key = (parse_iso(old[self.cursor_field]), old["id"], i)
            pos = bisect.bisect_left(self.moved, old_key)
            if pos < len(self.moved) and self.moved[pos] == old_key:
                del self.moved[pos]
        self.overrides[i] = record
        bisect.insort(self.moved, (ts, record["id"], i))

    def touch(self, n: int, at: datetime, mutate: Callable[[dict[str, Any], random.Random], None]) -> list[str]:
        """Change ``n`` distinct existing records: ``mutate`` edits a visible field, the cursor
        moves to ``at``. Which records is decided by a RNG seeded by the number of earlier changes."""
        ts = to_epoch(at)
        with self.lock:
            if n > self.count:
                raise ValueError(f"cannot touch {n} records: the stream has {self.count}")
            r = random.Random(mix64(self.key, "touch", self.changes))
            self.changes += 1
            picked = sorted(r.sample(range(self.count), n))
            ids = []
            for i in picked:
                record = copy.deepcopy(self.get(i))
                assert record is not None
                mutate(record, r)
                record[self.cursor_field] = iso(ts)
                if (
                    self.created_field
                    and record.get(self.created_field)
                    and record[self.created_field] > record[self.cursor_field]
                ):
                    record[self.created_field] = record[self.cursor_field]
                self._place(i, record, ts)
                ids.append(record["id"])
            return ids

    def add(self, n: int, at: datetime) -> list[str]:
        """Create ``n`` new records (indices after the base ones) created and updated at ``at``."""
        ts = to_epoch(at)
        with self.lock:
            self.changes += 1
            ids = []
            for _ in range(n):
                i = self.count
                record = self.generate(i, ts, ts)
                self.added += 1
                self._place(i, record, ts)
                ids.append(record["id"])
            return ids

    def set_record(self, i: int, record: dict[str, Any]) -> None:
        """Replace record ``i`` wholesale (for vendors with write endpoints)."""
        with self.lock:
            ts = parse_iso(record[self.cursor_field])
            if ts is None:
                raise ValueError(f"record {record.get('id')} has no valid {self.cursor_field}")
            self._place(i, record, ts)

    # -- windows and pages --------------------------------------------------------------------

    def _base_start(self, window: Window, after: Key | None) -> int:
        tl = self.timeline
        start = tl.first_at_or_after(window.low) if window.low is not None else 0
        if after is not None:
            j = tl.first_at_or_after(after[0])
            if j < self.size and tl.ts(j) == after[0] and self.id_of(j) <= after[1]:
                j += 1
            start = max(start, j)
        return start

    def iter_window(self, window: Window, after: Key | None = None) -> Iterator[tuple[Key, dict[str, Any]]]:
        """Records with key > ``after`` inside ``window``, in (cursor, id) order, lazily."""
        tl = self.timeline
        i = self._base_start(window, after)
        end = tl.first_at_or_after(window.high) if window.high is not None else self.size
        with self.lock:
            # Snapshot the few moved records in range so concurrent touches do not upset the walk.
            lo = (window.low,) if window.low is not None else ()
            m = bisect.bisect_left(self.moved, lo) if lo else 0
            if after is not None:
                m = max(m, bisect.bisect_right(self.moved, (after[0], after[1], 1 << 62)))
            m_end = bisect.bisect_left(self.moved, (window.high,)) if window.high is not None else len(self.moved)
            moved = self.moved[m:m_end]
            overrides = dict(self.overrides) if moved or self.overrides else {}
        k = 0
        while i < end or k < len(moved):
            # Skip base indices whose record was touched: it lives in ``moved`` now.
            while i < end and i in overrides:
                i += 1
            base_key = (tl.ts(i), self.id_of(i)) if i < end else None
            if k < len(moved) and (base_key is None or moved[k][:2] < base_key):
                ts, rid, idx = moved[k]
                k += 1
                yield (ts, rid), overrides[idx]
            elif base_key is not None:
                yield base_key, self.base(i)
                i += 1

    def page(
        self,
        window: Window,
        after: Key | None,
        limit: int,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], Key | None, bool]:
        """Up to ``limit`` records after ``after``; returns (records, key of the last, more left?)."""
        out: list[dict[str, Any]] = []
        last: Key | None = None
        for key, record in self.iter_window(window, after):
            if predicate is not None and not predicate(record):
                continue
            if len(out) == limit:
                return out, last, True
            out.append(record)
            last = key
        return out, last, False


# ---------------------------------------------------------------------------------------------
# Conformance (tests use it to check records against the connector specs' schemas)
# ---------------------------------------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def schema_errors(record: dict[str, Any], schema: dict[str, Any], exact: bool = True) -> list[str]:
    """Where ``record`` breaks a stream schema of the connector specs: required fields, each
    property's ``type`` (a name or a list, ``"null"`` for nullable), ``format: date-time`` in the
    strict ``YYYY-MM-DDTHH:MM:SSZ`` form, and (``exact``) no fields beyond ``properties``."""
    errors: list[str] = []
    props: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in record:
            errors.append(f"{name}: required but missing")
    if exact:
        errors.extend(f"{name}: not in the schema" for name in record if name not in props)
    for name, prop in props.items():
        if name not in record:
            continue
        value = record[name]
        types = prop.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if types and not any(_JSON_TYPES[t](value) for t in types):
            errors.append(f"{name}: {value!r} is not of type {types}")
        elif prop.get("format") == "date-time" and isinstance(value, str) and parse_iso(value) is None:
            errors.append(f"{name}: {value!r} is not YYYY-MM-DDTHH:MM:SSZ")
    return errors
