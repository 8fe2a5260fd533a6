"""Selecting from Objaverse-XL's annotation tables without holding them.

The tables (``allenai/objaverse-xl``: one parquet file per source, about 10M rows together, with a
``metadata`` JSON column that is large for GitHub) are read a record batch at a time with pyarrow,
only the columns a filter needs. Every filter is a vectorized pyarrow/numpy expression on the batch.
The rows a selection keeps are appended to an uncompressed Arrow IPC file beside the cache, which is
then memory-mapped: records are made from it a batch at a time, reading only the pages of the rows
taken. What stays in the driver's own memory is 8 bytes per selected row (its position in that file,
in the seeded order) and, while ordering, 10 more (a category code and a 64-bit key).

The seeded order of a category is the order of a keyed hash (SipHash through
``pandas.util.hash_array``, key derived from the seed) of each row's ``fileIdentifier``: it depends on
the seed and the identifier only, not on where a row sits in the table, so the same ``--seed`` and
``--limit`` choose the same objects however the tables are laid out, and rows added upstream do not
reorder the ones already there.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCAN_ROWS = 65_536  # rows per record batch read: ~10 MB of projected columns for GitHub's table
COLUMNS = ("source", "fileIdentifier", "fileType", "license", "sha256", "metadata", "lvis")


@dataclass
class Query:
    """One requested category: its label and the LVIS names it matches."""

    label: str
    lvis_names: frozenset[str]
    words: tuple[str, ...]  # for --match-keywords: whole words in the file name and metadata
    by_lvis: int = 0
    by_keyword: int = 0


@dataclass
class ScanCounts:
    rows: Counter = field(default_factory=Counter)  # per source, as in the tables
    after_types: int = 0
    after_licenses: int = 0
    without_lvis: int = 0  # rows after the filters that carry no LVIS label (not Sketchfab)


def keyword_pattern(word: str) -> str:
    """RE2 pattern for ``word`` as a whole word: not preceded or followed by a letter or digit."""
    return rf"(^|[^a-z0-9]){re.escape(word)}([^a-z0-9]|$)"


def words_of(query: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[^a-z0-9]+", query.lower()) if w)


def order_key(seed: int) -> str:
    """The 16-character SipHash key of a seed (``pandas.util.hash_array`` takes 16 bytes)."""
    return hashlib.sha256(f"objaverse-xl:{seed}".encode()).hexdigest()[:16]


def _strings(batch, name: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    if name not in batch.schema.names:
        return pa.array(["{}" if name == "metadata" else None] * batch.num_rows, type=pa.string())
    column = batch.column(name)
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _by_value(column, predicate: Callable[[object], bool], cache: dict) -> np.ndarray:
    """``predicate`` of every value of a string column as a bool array, evaluated once per distinct value
    (licence texts: a few hundred distinct among millions of rows)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    values = encoded.dictionary.to_pylist() + [None]
    flags = np.array([cache[v] if v in cache else cache.setdefault(v, bool(predicate(v))) for v in values])
    indices = pc.fill_null(encoded.indices, len(values) - 1).to_numpy(zero_copy_only=False)
    return flags[indices]


def _identifier_tail(identifiers, strip_slash: bool):
    """The last ``/`` segment of each identifier (a Sketchfab uid, a file name)."""
    import pyarrow.compute as pc

    pattern = r"(?P<tail>[^/]*)/*$" if strip_slash else r"(?P<tail>[^/]*)$"
    return pc.struct_field(pc.extract_regex(identifiers, pattern), [0])


class XLSelection:
    """The rows of the tables that the filters and categories keep, in the seeded order, as dicts.

    ``tables`` maps a source name (``sketchfab``, ``github``, ...) to its parquet file; ``lvis`` maps an
    LVIS category name to its Sketchfab uids (Objaverse 1.0's LVIS annotations). ``categories`` None or
    empty selects everything, labelled by LVIS name or ``unlabeled``. Call :meth:`scan` once, then
    iterate :meth:`rows`.
    """

    def __init__(self, tables: dict[str, Path], lvis: dict[str, list[str]], file_types: list[str],
                 license_keep: Callable[[object], bool] | None, queries: list[Query] | None,
                 match_keywords: bool, seed: int, workdir: Path) -> None:
        self.tables, self.file_types = tables, [t.lower() for t in file_types]
        self.license_keep, self.queries = license_keep, queries or []
        self.match_keywords, self.seed, self.workdir = match_keywords, seed, Path(workdir)
        names = sorted(lvis)
        self.lvis_uid_names = {u: name for name in names for u in lvis[name]}
        self.counts = ScanCounts()
        self.labels: list[str] = []  # in order of first appearance
        self.groups: list[tuple[str, np.ndarray]] = []  # (label, positions in the selection file, seeded order)
        self._reader = None  # the kept rows: an Arrow IPC file, memory-mapped, a record batch per scanned batch
        self._offsets = np.zeros(1, dtype=np.int64)  # first position of each record batch
        self._license_flags: dict = {}  # licence text -> kept (a few hundred distinct texts)

    # -- scanning ----------------------------------------------------------------------------------------

    def scan(self) -> None:
        """Read every table once, keep the selected rows in a memory-mapped file and order them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.workdir.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([(name, pa.string()) for name in COLUMNS])
        # categories in the order asked, so the interleave starts with the first one asked
        label_index: dict[str, int] = {query.label: i for i, query in enumerate(self.queries)}
        codes, keys = [], []
        handle, path = tempfile.mkstemp(prefix="selection-", suffix=".arrow", dir=self.workdir)
        os.close(handle)
        try:
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                for source, table_path in self.tables.items():
                    # mapped: read through buffered reads, pyarrow's reader kept decoded pages in anonymous
                    # memory growing with the table (200 MB more at 8M rows, pyarrow 25); mapped, it stays flat
                    parquet = pq.ParquetFile(table_path, memory_map=True)
                    self.counts.rows[source] += parquet.metadata.num_rows
                    wanted = [c for c in ("fileIdentifier", "fileType", "license", "sha256", "metadata")
                              if c in parquet.schema_arrow.names]
                    for batch in parquet.iter_batches(batch_size=SCAN_ROWS, columns=wanted):
                        kept = self._select(source, batch)
                        if kept is None:
                            continue
                        rows, labels = kept
                        writer.write_table(rows)
                        codes.append(self._codes(labels, label_index))
                        keys.append(self._keys(rows.column("fileIdentifier")))
            self.labels = list(label_index)
            self._order(np.concatenate(codes) if codes else np.zeros(0, np.uint32),
                        np.concatenate(keys) if keys else np.zeros(0, np.uint64))
            del codes, keys
            # mapped, then unlinked: the pages stay readable until the mapping goes, the file cannot leak
            self._reader = pa.ipc.open_file(pa.memory_map(path, "r"))
            self._offsets = np.cumsum([0] + [self._reader.get_batch(i).num_rows
                                             for i in range(self._reader.num_record_batches)])
        finally:
            os.unlink(path)

    def _select(self, source: str, batch):
        """(selected rows as a table of ``COLUMNS``, their labels as a numpy array of str) or None."""
        import pyarrow as pa
        import pyarrow.compute as pc

        identifiers = _strings(batch, "fileIdentifier")
        file_types = pc.utf8_lower(_strings(batch, "fileType"))
        mask = pc.fill_null(pc.is_in(file_types, value_set=pa.array(self.file_types)), False).to_numpy(
            zero_copy_only=False)
        self.counts.after_types += int(mask.sum())
        licenses = _strings(batch, "license")
        if self.license_keep is not None:
            mask &= _by_value(licenses, self.license_keep, self._license_flags)
        self.counts.after_licenses += int(mask.sum())
        if not mask.any():
            return None
        chosen = pa.array(mask)
        identifiers = pc.filter(identifiers, chosen)
        metadata = pc.filter(_strings(batch, "metadata"), chosen)
        n = len(identifiers)
        if source == "sketchfab":
            uids = _identifier_tail(identifiers, strip_slash=True).to_pylist()
            lvis = np.array([self.lvis_uid_names.get(u, "") for u in uids], dtype=object)
        else:
            lvis = np.full(n, "", dtype=object)
            self.counts.without_lvis += n
        if not self.queries:
            labels = np.where(lvis == "", "unlabeled", lvis).astype(object)
            selected = np.ones(n, dtype=bool)
        else:
            selected, labels = np.zeros(n, dtype=bool), np.full(n, "", dtype=object)
            text_words = self._words(identifiers, metadata) if self.match_keywords and source != "sketchfab" else None
            for query in self.queries:
                by_lvis = np.fromiter((name in query.lvis_names for name in lvis), dtype=bool, count=n)
                by_keyword = np.zeros(n, dtype=bool)
                if text_words is not None and query.words:
                    by_keyword = np.ones(n, dtype=bool)
                    for word in query.words:
                        by_keyword &= text_words(word)
                    by_keyword &= ~by_lvis
                query.by_lvis += int(by_lvis.sum())
                query.by_keyword += int(by_keyword.sum())
                take = (by_lvis | by_keyword) & ~selected
                labels[take] = query.label
                selected |= take
            if not selected.any():
                return None
        keep = pa.array(selected)
        table = pa.table({
            "source": pa.array([source] * int(selected.sum()), type=pa.string()),
            "fileIdentifier": pc.filter(identifiers, keep),
            "fileType": pc.filter(pc.filter(file_types, chosen), keep),
            "license": pc.filter(pc.filter(licenses, chosen), keep),
            "sha256": pc.filter(pc.filter(_strings(batch, "sha256"), chosen), keep),
            "metadata": pc.filter(metadata, keep),
            "lvis": pa.array(lvis[selected].tolist(), type=pa.string()),
        })
        return table, labels[selected]

    @staticmethod
    def _codes(labels: np.ndarray, label_index: dict[str, int]) -> np.ndarray:
        """Each row's category code; new labels get the next code (so codes follow first appearance)."""
        distinct, first, inverse = np.unique(labels.astype(str), return_index=True, return_inverse=True)
        for position in np.argsort(first):
            label_index.setdefault(str(distinct[position]), len(label_index))
        return np.array([label_index[d] for d in distinct.tolist()], dtype=np.uint32)[inverse]

    @staticmethod
    def _words(identifiers, metadata):
        """A function word -> bool array: the word appears whole in the file name or the metadata."""
        import pyarrow.compute as pc

        names = _identifier_tail(identifiers, strip_slash=False)
        text = pc.utf8_lower(pc.binary_join_element_wise(names, pc.fill_null(metadata, ""), " "))
        return lambda word: pc.fill_null(pc.match_substring_regex(text, keyword_pattern(word)), False).to_numpy(
            zero_copy_only=False)

    def _keys(self, identifiers) -> np.ndarray:
        import pandas as pd

        values = np.asarray(identifiers.to_numpy(zero_copy_only=False), dtype=object)
        return pd.util.hash_array(values, hash_key=order_key(self.seed), categorize=False)

    def _order(self, codes: np.ndarray, keys: np.ndarray) -> None:
        """Each category's positions by key; categories in the order asked, or by name when none were."""
        labels = list(enumerate(self.labels))
        if not self.queries:
            labels.sort(key=lambda pair: pair[1])
        for code, label in labels:
            positions = np.flatnonzero(codes == code)
            if not len(positions):
                continue
            # ties (a repeated identifier) keep the tables' order
            positions = positions[np.argsort(keys[positions], kind="stable")]
            self.groups.append((label, positions))

    # -- reading -----------------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return sum(len(positions) for _, positions in self.groups)

    def chosen(self, limit: int | None) -> Iterator[tuple[str, int]]:
        """(label, position): one object of each category in turn, in each category's seeded order."""
        taken = 0
        longest = max((len(p) for _, p in self.groups), default=0)
        for index in range(longest):
            for label, positions in self.groups:
                if index < len(positions):
                    if limit is not None and taken >= limit:
                        return
                    taken += 1
                    yield label, int(positions[index])

    def rows(self, pairs: list[tuple[str, int]]) -> list[dict]:
        """The selected rows at these positions, as dicts of ``COLUMNS`` (in the order given)."""
        # taken from each mapped record batch in turn: a take across a chunked table would first
        # concatenate every chunk into memory
        positions = np.array([p for _, p in pairs], dtype=np.int64)
        chunks = np.searchsorted(self._offsets, positions, side="right") - 1
        rows: list = [None] * len(positions)
        for chunk in np.unique(chunks):
            where = np.flatnonzero(chunks == chunk)
            batch = self._reader.get_batch(int(chunk)).take(positions[where] - self._offsets[chunk])
            for at, row in zip(where.tolist(), batch.to_pylist()):
                rows[at] = row
        return rows
