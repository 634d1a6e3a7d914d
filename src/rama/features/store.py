"""The feature store: one SQLite file per SAE, holding everything a feature page shows.

The schema is documented in docs/features.md. A store is written to a staging file beside its
target and renamed into place only when complete (`creating`), so an interrupted build leaves
nothing that looks finished; an existing store is replaced only when asked. Opening checks that
the file is a whole SQLite database written by rama (`kind` and `schema_version` in `meta`) and,
given an SAE, that it was built for that SAE (its fingerprint). All SQL takes values as parameters.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rama.atomic import staged_file
from rama.errors import OutputError, RamaError
from rama.models.fingerprint import weights_fingerprint
from rama.sae.base import SAE

KIND = "rama-features"
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE units (
    kind TEXT NOT NULL CHECK (kind IN ('latent', 'neuron')),
    id INTEGER NOT NULL,
    density REAL NOT NULL,
    mean REAL NOT NULL,
    max REAL NOT NULL,
    count INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    histogram TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX units_label ON units (label COLLATE NOCASE);
CREATE INDEX units_density ON units (kind, density);
CREATE TABLE examples (
    kind TEXT NOT NULL,
    unit INTEGER NOT NULL,
    sample TEXT NOT NULL CHECK (sample IN ('top', 'quantile')),
    bin INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    activation REAL NOT NULL,
    token_index INTEGER NOT NULL,
    focus INTEGER NOT NULL,
    token_ids TEXT NOT NULL,
    tokens TEXT NOT NULL,
    activations TEXT NOT NULL,
    PRIMARY KEY (kind, unit, sample, bin, rank)
);
CREATE TABLE logits (
    unit INTEGER NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('direct', 'norm')),
    direction TEXT NOT NULL CHECK (direction IN ('promoted', 'suppressed')),
    rank INTEGER NOT NULL,
    token_id INTEGER NOT NULL,
    token TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (unit, via, direction, rank)
);
CREATE INDEX logits_token ON logits (token, direction, via);
CREATE TABLE neighbours (
    unit INTEGER NOT NULL,
    measure TEXT NOT NULL CHECK (measure IN ('cosine', 'cofiring')),
    rank INTEGER NOT NULL,
    other INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (unit, measure, rank)
);
CREATE TABLE explanations (
    kind TEXT NOT NULL,
    unit INTEGER NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    score REAL,
    scorer TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    PRIMARY KEY (kind, unit, source)
);
CREATE INDEX explanations_text ON explanations (text COLLATE NOCASE);
"""

SORTABLE = ("id", "density", "mean", "max", "label")


class StoreError(RamaError, ValueError):
    """A file that is not a usable feature store: missing, foreign, truncated or malformed."""


class StoreMismatchError(StoreError):
    """A feature store built for another SAE than the one it is asked to serve."""


def sae_fingerprint(sae: SAE) -> str:
    """16 hex digits from the SAE's weights (sampled, `rama.models.fingerprint`) and its config."""
    digest = hashlib.sha256(weights_fingerprint(sae).encode())
    digest.update(json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@contextmanager
def creating(path: str | Path, replace: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to a new, empty store with the schema; on success the store replaces `path` in
    one rename, on failure nothing is left. An existing `path` is refused unless `replace`."""
    check_target(path, replace)
    with staged_file(path, suffix=".db") as staging:
        connection = sqlite3.connect(staging)
        try:
            connection.execute("PRAGMA journal_mode = OFF")  # the staging file is the journal
            connection.execute("PRAGMA synchronous = OFF")
            connection.executescript(SCHEMA)
            yield connection
            connection.commit()
        finally:
            connection.close()


def check_target(path: str | Path, replace: bool) -> None:
    """Refuse (OutputError) to build onto an existing file unless `replace`."""
    if Path(path).exists() and not replace:
        raise OutputError(f"{str(path)!r} already exists; pass --replace (replace=True) to rebuild it")


def write_meta(connection: sqlite3.Connection, meta: dict[str, Any]) -> None:
    """Every meta value is stored as JSON; `kind` and `schema_version` are added here."""
    rows = {"kind": KIND, "schema_version": SCHEMA_VERSION, **meta}
    connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])


def check_file(path: Path) -> None:
    """A StoreError unless `path` is a whole SQLite file (magic bytes; size covers every page)."""
    if not path.is_file():
        raise StoreError(f"{str(path)!r}: no feature store there (build one with `rama features build`)")
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{str(path)!r} is not a feature store (not an SQLite database)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if path.stat().st_size < page_size * pages:
        raise StoreError(f"{str(path)!r} is truncated ({path.stat().st_size} of {page_size * pages} bytes)")


class FeatureStore:
    """A finished store, opened read-only (or `writable` for labels); checked on opening."""

    def __init__(self, path: str | Path, sae: SAE | None = None, writable: bool = False) -> None:
        self.path = Path(path)
        check_file(self.path)
        mode = "rw" if writable else "ro"
        try:
            self.connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True,
                                              check_same_thread=False)  # fmt: skip
            self.connection.row_factory = sqlite3.Row
            self.meta = self.read_meta()
        except sqlite3.DatabaseError as error:
            self.close()
            raise StoreError(f"{str(self.path)!r} is not a readable feature store: {error}") from None
        except StoreError:
            self.close()
            raise
        if sae is not None and self.meta.get("sae_fingerprint") != sae_fingerprint(sae):
            self.close()
            raise StoreMismatchError(
                f"{str(self.path)!r} was built for another SAE (fingerprint {self.meta.get('sae_fingerprint')}, "
                f"this SAE's is {sae_fingerprint(sae)}); rebuild it with `rama features build`"
            )

    def read_meta(self) -> dict[str, Any]:
        check = self.connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(f"{str(self.path)!r} is damaged: {check}")
        tables = {
            row[0] for row in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "meta" not in tables:
            raise StoreError(f"{str(self.path)!r} is an SQLite database but not a rama feature store")
        meta = {
            key: json.loads(value) for key, value in self.connection.execute("SELECT key, value FROM meta")
        }
        if meta.get("kind") != KIND:
            raise StoreError(f"{str(self.path)!r} is an SQLite database but not a rama feature store")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} has store schema {meta.get('schema_version')}, this rama reads "
                f"{SCHEMA_VERSION}; rebuild it with `rama features build --replace`"
            )
        return meta

    def close(self) -> None:
        if getattr(self, "connection", None) is not None:
            self.connection.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unit(self, id: int, kind: str = "latent") -> dict[str, Any] | None:
        """A unit's summary row (histogram decoded), or None for an id not in the store."""
        row = self.connection.execute("SELECT * FROM units WHERE kind = ? AND id = ?", (kind, id)).fetchone()
        return None if row is None else {**dict(row), "histogram": json.loads(row["histogram"])}

    def examples(self, id: int, sample: str = "top", kind: str = "latent") -> list[dict[str, Any]]:
        """A unit's top examples (strongest first) or quantile samples (weakest bin first)."""
        rows = self.connection.execute(
            "SELECT * FROM examples WHERE kind = ? AND unit = ? AND sample = ? ORDER BY bin, rank",
            (kind, id, sample),
        )
        decoded = ("token_ids", "tokens", "activations")
        return [{**dict(row), **{name: json.loads(row[name]) for name in decoded}} for row in rows]

    def logits(self, id: int, via: str = "norm", direction: str = "promoted") -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT token_id, token, value FROM logits WHERE unit = ? AND via = ? AND direction = ? ORDER BY rank",
            (id, via, direction),
        )
        return [dict(row) for row in rows]

    def neighbours(self, id: int, measure: str = "cosine") -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT other, value FROM neighbours WHERE unit = ? AND measure = ? ORDER BY rank", (id, measure)
        )
        return [dict(row) for row in rows]

    def by_label(self, text: str, limit: int = 50) -> list[int]:
        """Latent ids whose label contains `text` (case-insensitive)."""
        rows = self.connection.execute(
            "SELECT id FROM units WHERE kind = 'latent' AND label LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
            (like_pattern(text), limit),
        )
        return [row[0] for row in rows]

    def by_promoted_token(self, token: str, limit: int = 50, via: str = "norm") -> list[dict[str, Any]]:
        """Latents that promote `token` (its exact text) among their top tokens, strongest first."""
        rows = self.connection.execute(
            "SELECT unit, value FROM logits WHERE token = ? AND direction = 'promoted' AND via = ? "
            "ORDER BY value DESC LIMIT ?",
            (token, via, limit),
        )
        return [dict(row) for row in rows]

    def count(self, kind: str = "latent", label_contains: str = "") -> int:
        """How many units of `kind` (whose label contains `label_contains`, case-insensitive)."""
        if not label_contains:  # the primary key answers this without reading any row
            return int(
                self.connection.execute("SELECT COUNT(*) FROM units WHERE kind = ?", (kind,)).fetchone()[0]
            )
        query = "SELECT COUNT(*) FROM units WHERE kind = ? AND label LIKE ? ESCAPE '\\'"
        return int(self.connection.execute(query, (kind, like_pattern(label_contains))).fetchone()[0])

    def units_page(
        self,
        kind: str = "latent",
        sort: str = "id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
        label_contains: str = "",
    ) -> list[dict[str, Any]]:
        """One page of the unit table (no histograms), sorted by one of SORTABLE, ties by id."""
        if sort not in SORTABLE:
            raise StoreError(f"cannot sort units by {sort!r}; choose one of {', '.join(SORTABLE)}")
        order = "DESC" if descending else "ASC"  # both from fixed sets, never from the caller's text
        rows = self.connection.execute(
            f"SELECT kind, id, density, mean, max, count, label FROM units WHERE kind = ? "
            f"AND label LIKE ? ESCAPE '\\' ORDER BY {sort} {order}, id LIMIT ? OFFSET ?",
            (kind, like_pattern(label_contains), limit, offset),
        )
        return [dict(row) for row in rows]

    def set_explanation(
        self, id: int, source: str, text: str, created: str, score: float | None = None, scorer: str = "",
        kind: str = "latent",
    ) -> None:  # fmt: skip
        """Save (or replace) the explanation `source` gave unit `id` (store opened `writable`)."""
        if self.unit(id, kind) is None:
            raise StoreError(f"no {kind} {id} in {str(self.path)!r}")
        with self.connection:
            self.connection.execute(
                "INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, id, source, text, score, scorer, created),
            )

    def set_explanation_score(
        self, id: int, source: str, score: float, scorer: str, kind: str = "latent"
    ) -> None:
        """Record how well `source`'s explanation of unit `id` scored under `scorer`."""
        with self.connection:
            changed = self.connection.execute(
                "UPDATE explanations SET score = ?, scorer = ? WHERE kind = ? AND unit = ? AND source = ?",
                (score, scorer, kind, id, source),
            ).rowcount
        if not changed:
            raise StoreError(f"no explanation of {kind} {id} from {source!r} in {str(self.path)!r}")

    def explanations(self, id: int, kind: str = "latent") -> list[dict[str, Any]]:
        """Every explanation of unit `id`, by source."""
        rows = self.connection.execute(
            "SELECT source, text, score, scorer, created FROM explanations WHERE kind = ? AND unit = ? "
            "ORDER BY source",
            (kind, id),
        )
        return [dict(row) for row in rows]

    def explained(self, source: str, kind: str = "latent") -> set[int]:
        """Ids of the units `source` has already explained (so a rerun skips them)."""
        rows = self.connection.execute(
            "SELECT unit FROM explanations WHERE kind = ? AND source = ?", (kind, source)
        )
        return {row[0] for row in rows}

    def set_label(self, id: int, label: str, kind: str = "latent") -> None:
        """Save a human label (the store must be opened `writable`)."""
        with self.connection:
            changed = self.connection.execute(
                "UPDATE units SET label = ? WHERE kind = ? AND id = ?", (label, kind, id)
            ).rowcount
        if not changed:
            raise StoreError(f"no {kind} {id} in {str(self.path)!r}")


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % _ and \\ taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
