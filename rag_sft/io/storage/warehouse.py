"""Hive-partitioned Parquet tables (`<root>/<table>/date=YYYY-MM-DD/part-0.parquet`) and
per-day dataset files, each replaced whole on every write so re-runs never append.

The root is a local folder or an object store prefix (`rag_sft.io.storage.location`). A partition's file
is written on the local disk first: on a local warehouse in its staging folder (`<root>/.staging`,
beside the tables, so no table's glob can match it) and moved over the old one with one atomic
rename; on an object store in the local spool folder, then uploaded to its final key, which the
store replaces in one step. Either way readers (pyarrow, pandas, DuckDB) listing a table see the
old file or the whole new one, never a half-written file or a missing day. Staged files carry
their host and process id, so what a killed run left behind is removed by the next run on that host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from rag_sft.io.storage.location import Location, open_input, publish, remote, remove_tree, spool_dir

PART_FILE = "part-0.parquet"
STAGING = ".staging"


class MissingPartition(Exception):
    """An upstream partition has not been materialized."""


def partition_dir(table_dir: Location, day: str) -> Location:
    return table_dir / f"date={day}"


def staging_dir(warehouse_root: Path) -> Path:
    """The warehouse's staging folder, with what dead processes of this host left there removed."""
    folder = warehouse_root / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if _owned_by_dead_process(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
    return folder


def staged_name(suffix: str = "") -> str:
    """A name in the staging folder owned by this process: `<host>_<pid>-<uuid><suffix>`."""
    return f"{socket.gethostname()}_{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _owned_by_dead_process(name: str) -> bool:
    """`<host>_<pid>-…` of this host whose process is gone."""
    owner_host, _, rest = name.partition("_")
    pid = rest.split("-", 1)[0]
    return owner_host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _remove_dead_stages(final: Location) -> None:
    """Staged copies of `final` that a killed process left where it is staged."""
    prefix = f".{final.name}.tmp-"
    folder = spool_dir(final.parent)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(prefix) and _owned_by_dead_process(entry.name.removeprefix(prefix)):
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PartitionWriter:
    """Streams record batches into one day of a table; `commit` replaces the old day whole.

    Batches are coalesced into row groups of about `ROW_GROUP_ROWS` rows: a day read from
    20,000 one-event files would otherwise be 20,000 row groups, slow to write and to read."""

    ROW_GROUP_ROWS = 65_536
    # Later assets work a row group at a time: 64 MB groups took the bench day's peak RSS from
    # 660 MB to 1.5 GB (50,000 events); 8 MB is about what one 16 MB range of JSON gives.
    ROW_GROUP_BYTES = 8 << 20

    def __init__(
        self, table_dir: Location, day: str, schema: pa.Schema, compression: str = "lz4", free_text: Iterable[str] = ()
    ):
        """`free_text`: column paths (as Parquet names them) written plain and without min/max
        statistics: for long, mostly unique texts both cost write time and help no query."""
        self.table_dir = table_dir
        self.final_dir = partition_dir(table_dir, day)
        self.staged = staging_dir(spool_dir(table_dir.parent)) / staged_name(".parquet")
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = self._pending_bytes = 0
        indexed = [path for path in leaf_paths(schema) if path not in set(free_text)]
        self._writer = pq.ParquetWriter(
            self.staged, schema, compression=compression, use_dictionary=indexed, write_statistics=indexed
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            self._pending_bytes += batch.nbytes
            self.rows += batch.num_rows
            if self._pending_rows >= self.ROW_GROUP_ROWS or self._pending_bytes >= self.ROW_GROUP_BYTES:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending), row_group_size=max(self._pending_rows, 1))
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def commit(self) -> Location:
        self._flush()
        self._writer.close()
        return publish_partition_file(self.staged, self.table_dir, self.final_dir.name.removeprefix("date="))

    def abort(self) -> None:
        self._pending = []
        self._writer.close()
        self.staged.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def publish_partition_file(staged: Path, table_dir: Location, day: str) -> Location:
    """Put a finished local Parquet file in place of the day's file in one step (a rename on
    the same disk, one upload to an object store)."""
    final_dir = partition_dir(table_dir, day)
    final = publish(staged, final_dir / PART_FILE)
    # What older versions of the project left in a local table: hidden swap folders of killed runs.
    if isinstance(table_dir, Path):
        for leftover in table_dir.glob(f".{final_dir.name}.*"):
            remove_tree(leftover)
    return final


def leaf_paths(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of a schema's leaves ("docs.list.element.content")."""

    def leaves(name: str, kind: pa.DataType) -> Iterator[str]:
        if pa.types.is_map(kind):
            yield from leaves(f"{name}.key_value.key", kind.key_type)
            yield from leaves(f"{name}.key_value.value", kind.item_type)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            yield from leaves(f"{name}.list.element", kind.value_type)
        elif pa.types.is_struct(kind):
            for child in kind:
                yield from leaves(f"{name}.{child.name}", child.type)
        else:
            yield name

    return [path for field in schema for path in leaves(field.name, field.type)]


def read_batches(
    table_dir: Location, day: str, columns: Sequence[str] | None = None, batch_size: int = 8192
) -> Iterator[pa.RecordBatch]:
    # Row group by row group: `iter_batches` keeps buffers of the groups it has read (measured:
    # +30 MiB every ten batches), which breaks the memory bound on a large day.
    for group in row_groups(table_dir, day):
        yield from pa.Table.from_batches([group.read(columns)]).to_batches(max_chunksize=batch_size)


@dataclass(frozen=True)
class RowGroup:
    """One row group of a day's Parquet file: the unit the stages hand to their threads."""

    path: Location
    index: int
    metadata: pq.FileMetaData | None = None  # the file's footer, parsed once for all its groups

    def read(self, columns: Sequence[str] | None = None) -> pa.RecordBatch:
        with open_input(self.path) as handle:
            # On a store, the group's column chunks are fetched in a few coalesced requests
            # instead of one per page (measured: half the read time of a day on SeaweedFS).
            parquet = pq.ParquetFile(handle, metadata=self.metadata, pre_buffer=remote(self.path))
            table = parquet.read_row_group(self.index, columns=list(columns) if columns else None)
        return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], table.schema)


def row_groups(table_dir: Location, day: str) -> list[RowGroup]:
    path = partition_dir(table_dir, day) / PART_FILE
    if not path.exists():
        raise MissingPartition(f"{table_dir.name} has no partition {day} (expected {path}); materialize it first")
    with open_input(path) as handle:
        metadata = pq.read_metadata(handle)
    return [RowGroup(path, index, metadata) for index in range(metadata.num_row_groups)]


class StagedFile:
    """A file written under a hidden temporary name where `final` is staged (beside it on a disk,
    the spool folder for an object store) and put in its place only by `publish`, so readers see
    the old file or the whole new one; unpublished, it is removed."""

    def __init__(self, final: Location):
        self.final = final
        self.path = spool_dir(final.parent) / f".{final.name}.tmp-{staged_name()}"
        _remove_dead_stages(final)
        self.published = False
        self.size = 0
        self._digest = hashlib.sha256()
        self._handle = None

    def append(self, chunk: bytes | pa.Buffer) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("wb")
        self._handle.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def write(self, chunks: Iterable[bytes | pa.Buffer]) -> tuple[int, str]:
        """Write the bytes-like `chunks`; returns (bytes, sha256)."""
        for chunk in chunks:
            self.append(chunk)
        return self.finish()

    def finish(self) -> tuple[int, str]:
        """Close the file (an empty one if nothing was appended); returns (bytes, sha256)."""
        if self._handle is None:
            self.append(b"")
        self._handle.close()
        return self.size, self._digest.hexdigest()

    def publish(self) -> Location:
        publish(self.path, self.final)
        self.published = True
        return self.final

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._handle is not None:
            self._handle.close()
        if not self.published:
            self.path.unlink(missing_ok=True)
