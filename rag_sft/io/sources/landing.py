"""The landing folder: JSON Lines files (plain, gzip or zstd) under a local folder or an
`s3://bucket/prefix`, read through the landing index (`landing_index`) and judged on every core
(`landing_scan`). Which day a line belongs to: `lines`."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from rag_sft.core.ingest import JudgedChunk, SourceLine
from rag_sft.io.sources import landing_scan
from rag_sft.io.sources.landing_index import LandingIndex
from rag_sft.io.sources.lines import DEFAULT_LANDING_PATTERN, SourceUnavailable, day_of_file, line_date, source_name
from rag_sft.io.storage.location import FileVersion, Location, StorageUnavailable, listed_files, location, open_binary, version

_READ_BUFFER = 1 << 20


class LandingFolder:
    """Every JSON Lines file under `root` (a local folder or an `s3://bucket/prefix`), recursively,
    in path order: the names `pattern` matches (searched in the name).

    `index_path`: where the landing index (which files hold which days) is kept between runs;
    None keeps it in memory, so every use reads the folder once.
    """

    def __init__(
        self,
        root: str | Location,
        index_path: Path | None = None,
        valid_days: tuple[date, date] | None = None,
        pattern: str = DEFAULT_LANDING_PATTERN,
    ):
        """`valid_days`: the first and last day an event may have (see `lines.out_of_range`); None: any."""
        self.root = location(root)
        self.index_path = index_path
        self.valid_days = valid_days
        self.pattern = re.compile(pattern)
        self._index = None
        self._ignored: list[str] | None = None  # set by each listing
        self._scratch: tempfile.TemporaryDirectory | None = None

    def index(self):
        if self._index is None:
            self._index = LandingIndex(self, self.index_path)
        return self._index

    def refresh_index(self, workers: int = 1) -> dict[str, Location]:
        """Bring the index up to date; returns each file's source name and path, in path order."""
        listing = self.listing()
        self.index().refresh(workers, listing=listing)
        self.forget_old_copies(listing)
        return {source_name(path, self.root): path for path in listing}

    def files(self) -> list[Location]:
        return list(self.listing())

    def listing(self) -> dict[Location, FileVersion]:
        """Landing files in path order with their versions (see `pattern`; compressed as `.gz` or
        `.zst` as logs are shipped); hidden names (a shipper's file being written) are not
        landing files (see `storage.listed_files`: one listing in an object store)."""
        try:
            everything = listed_files(self.root, lambda name: True)
        except FileNotFoundError:
            raise SourceUnavailable(
                f"landing folder {self.root} does not exist or is not a folder; "
                "point RAG_SFT_LANDING_DIR at the folder that holds your *.jsonl quality events"
            ) from None
        landing = {path: status for path, status in everything.items() if self.pattern.search(path.name)}
        self._ignored = [source_name(path, self.root) for path in everything if path not in landing]
        return landing

    def ignored_files(self) -> list[str]:
        """The other files of the folder (hidden ones aside), as the latest listing found them:
        named so that a person sees that `events.json` or `events.csv` was not read, and can
        rename it or widen the pattern."""
        if self._ignored is None:
            self.listing()
        return self._ignored

    def readable(self, path: Location, status: FileVersion | None = None) -> Location:
        """The file as plain JSON Lines: itself, or for a compressed file its decompressed copy
        (made once per version of the file, under the index's local folder, an object's too;
        same name less the compression suffix and same modification time, so the file-date
        fallback is unchanged). `status`: the file's version when a listing gave it already."""
        suffix = path.suffix.lower()
        if suffix not in _DECOMPRESSORS:
            return path
        status = status or version(path)
        key = hashlib.sha256(f"{path}\0{status.size}\0{status.mtime_ns}".encode()).hexdigest()[:16]
        target = self._decompressed_dir() / key / path.name.removesuffix(suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            _decompress(path, staged, _DECOMPRESSORS[suffix])
            os.utime(staged, ns=(status.mtime_ns, status.mtime_ns))
            os.replace(staged, target)
        return target

    def _decompressed_dir(self) -> Path:
        if self.index_path is not None:
            return self.index_path.parent / "decompressed"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="rag_sft_decompressed_")
        return Path(self._scratch.name)

    def forget_old_copies(self, listing: dict[Location, FileVersion]) -> None:
        """Remove decompressed copies of compressed files that changed or went away."""
        folder = self._decompressed_dir()
        if not folder.is_dir():
            return
        compressed = {path: status for path, status in listing.items() if path.suffix.lower() in _DECOMPRESSORS}
        current = {self.readable(path, status).parent for path, status in compressed.items()}
        for entry in folder.iterdir():
            if entry not in current:
                shutil.rmtree(entry, ignore_errors=True)

    def has_events(self) -> bool:
        try:
            return any(found.size > 0 for found in self.listing().values())
        except SourceUnavailable:
            return False

    def changes_after(self, after: str | None) -> tuple[set[date], str]:
        """The days whose lines changed since the watermark `after` (all days when None), and the
        watermark now: `<index identity>@<its change counter>`. A counter numbers the changes of
        one index only, so a watermark of another index (another landing folder or first
        partition day, which `make ui` moves when older files land, or a deleted index file)
        counts as none: every day is compared with its latest run again, and only days whose
        content differs run."""
        self.refresh_index()
        index, identity = self.index(), self.index().identity()
        origin, _, counter = after.rpartition("@") if isinstance(after, str) else ("", "", "")
        since = int(counter) if origin == identity else 0
        return index.days_changed_after(since), f"{identity}@{index.change_counter()}"

    def fingerprint(self, day: date) -> str:
        """Changes whenever the day's lines do (the index must be fresh: see `changes_after`)."""
        return self.index().fingerprint(day)

    def loss(self, day: date):
        """The day's lines lost with files that went away or shrank, not yet accepted (or None)."""
        self.refresh_index()
        return self.index().loss(day)

    def accept_loss(self, day: date):
        self.refresh_index()
        return self.index().accept_loss(day)

    def lines_for_day(self, day: date) -> Iterator[SourceLine]:
        for path in self.files():
            for line_day, line in self._dated_lines(path):
                if line_day == day:
                    yield line

    def judged_chunks(
        self, day: date, max_field_chars: int, batch_size: int, workers: int, scratch: Path
    ) -> Iterator[JudgedChunk]:
        """The day's lines judged on `workers` processes (see `landing_scan`)."""
        return landing_scan.judged_chunks(self, day, max_field_chars, workers, scratch)

    def days_present(self) -> Counter:
        """Lines per day over the whole folder (blank lines excluded), from the index: only files
        that changed since it was last refreshed are read."""
        self.refresh_index()
        return self.index().days_present()

    def _dated_lines(self, path: Location) -> Iterator[tuple[date, SourceLine]]:
        source = source_name(path, self.root)
        waiting: list[SourceLine] = []  # lines with no readable date before the first dated one
        last_day: date | None = None
        for number, raw in _numbered_lines(self.readable(path)):
            line = SourceLine(source, number, raw)
            line_day = line_date(line)
            if line_day is None:
                if last_day is None:
                    waiting.append(line)
                else:
                    yield last_day, line
                continue
            for earlier in waiting:
                yield line_day, earlier
            waiting = []
            last_day = line_day
            yield line_day, line
        if waiting:
            fallback = day_of_file(path)
            for line in waiting:
                yield fallback, line


def _open_zstd(compressed):
    import zstandard  # loaded when a .zst file is read, as below (not to break an import circle)

    return zstandard.open(compressed, "rb")


_DECOMPRESSORS = {".gz": gzip.open, ".zst": _open_zstd}


def _decompress(path: Location, target: Path, opener) -> None:
    """Decompress `path` into `target`. A damaged stream keeps what could be read and ends with
    one line saying what went wrong, which the rule book rejects (invalid_json) on the day of
    its neighbours: the day goes on and the dead letter says why."""
    with target.open("wb") as out:
        try:
            with open_binary(path) as compressed, opener(compressed) as stream:
                # read1: what each step decompressed is written before a damaged part stops it
                while chunk := stream.read1(1 << 16):
                    out.write(chunk)
        except StorageUnavailable:
            raise  # the store failed, not the stream
        except (OSError, EOFError, ValueError) as error:
            import zstandard

            if isinstance(error, ValueError) and not isinstance(error, zstandard.ZstdError):
                raise
            out.write(f"\n(the rest of {path.name} could not be decompressed: {error})\n".encode())


def _numbered_lines(path: Location) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers (the buffered file iterator is the fastest
    way to split lines in CPython)."""
    with open_binary(path, _READ_BUFFER) as handle:
        for number, raw in enumerate(handle, 1):
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield number, raw
