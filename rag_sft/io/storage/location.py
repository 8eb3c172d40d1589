"""Where the project's files live: a local folder, or a prefix in an object store (`s3://bucket/prefix`).

`location(uri)` gives a `pathlib.Path` for a local folder, so everything local behaves as it
always has, and an `ObjectPath` for an `s3://` URI: the part of Path's API the project uses
(joining, listing, reading, writing small files, removing) over pyarrow's S3 filesystem. The
operations whose meaning differs between the two are the functions below: `open_input`,
`publish` (a rename on a disk, an upload to a store) and `spool_dir` (where a file is written
before it is published: beside it on a disk, a local folder for a store).

An object store has no rename, but one PUT (or CompleteMultipartUpload) replaces one object
atomically: a file is written whole on the local disk first and then uploaded to its final
key, so a reader sees the old object or the new one, never a part (docs/s3.md, "Publication on an object store").

The store's endpoint, region and credentials come from the standard AWS variables
(AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
or the AWS SDK's other sources): no secret is a setting, shown in metadata, or logged.
"""

from __future__ import annotations

import functools
import io
import mmap
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

S3_SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
# A stopped store fails a step within seconds instead of hanging it.
CONNECT_TIMEOUT_S = 5
REQUEST_TIMEOUT_S = 60


class StorageUnavailable(OSError):
    """An object store refused or failed a request; the message names the endpoint and bucket."""


def is_uri(value: str | os.PathLike) -> bool:
    return str(value).startswith(S3_SCHEME)


@dataclass(frozen=True)
class ObjectStore:
    """One S3 endpoint as the environment describes it, and the local folder where files bound
    for it are written before their upload."""

    endpoint: str
    region: str
    spool: Path | None

    def filesystem(self) -> pafs.S3FileSystem:
        return _s3_filesystem(self.endpoint, self.region)

    def describe(self, key: str) -> str:
        bucket = key.split("/", 1)[0]
        return f"the object store at {self.endpoint or 'AWS S3'} (bucket {bucket!r})"


@functools.cache
def _s3_filesystem(endpoint: str, region: str) -> pafs.S3FileSystem:
    # Credentials are left to the AWS SDK (environment, profile, instance role): never passed here.
    return pafs.S3FileSystem(
        endpoint_override=endpoint or None,
        region=region or None,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
    )


def object_store(spool: Path | None = None) -> ObjectStore:
    endpoint = next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), "")
    region = next((os.environ[name] for name in REGION_VARIABLES if os.environ.get(name)), "us-east-1")
    return ObjectStore(endpoint, region, spool)


@dataclass(frozen=True)
class ObjectPath:
    """A key or key prefix in an object store, with the Path methods the project uses on its
    outputs. Folders are prefixes: they exist while something is under them."""

    store: ObjectStore
    key: str  # "bucket/prefix/name", no leading or trailing slash

    def __truediv__(self, name: str) -> ObjectPath:
        return replace(self, key=f"{self.key}/{str(name).strip('/')}")

    def __str__(self) -> str:
        return S3_SCHEME + self.key

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1]

    @property
    def parent(self) -> ObjectPath:
        return replace(self, key=self.key.rsplit("/", 1)[0])

    def absolute(self) -> ObjectPath:
        return self

    def relative_to(self, other: ObjectPath) -> str:
        if not self.key.startswith(other.key + "/"):
            raise ValueError(f"{self} is not under {other}")
        return self.key[len(other.key) + 1 :]

    def _info(self) -> pafs.FileInfo:
        with naming_errors(self, "looking up"):
            return self.store.filesystem().get_file_info(self.key)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def iterdir(self) -> Iterator[ObjectPath]:
        with naming_errors(self, "listing"):
            infos = self.store.filesystem().get_file_info(pafs.FileSelector(self.key, allow_not_found=True))
        return iter(sorted(replace(self, key=info.path) for info in infos))

    def __lt__(self, other: ObjectPath) -> bool:
        return self.key < other.key

    # compression=None: the bytes as they are (Arrow would otherwise (de)compress by the name's suffix, .gz).
    def read_bytes(self) -> bytes:
        with naming_errors(self, "reading"), self.store.filesystem().open_input_stream(self.key, compression=None) as stream:
            return stream.read()

    def write_bytes(self, data: bytes) -> int:
        """One upload: the object is replaced whole or not at all."""
        with naming_errors(self, "writing"), self.store.filesystem().open_output_stream(self.key, compression=None) as stream:
            stream.write(data)
        return len(data)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        with naming_errors(self, "deleting"):
            self.store.filesystem().delete_file(self.key)


Location = Path | ObjectPath


@dataclass(frozen=True)
class FileVersion:
    """What tells one version of a file from the next without reading it: `stat` on a disk, the
    listing (or a HEAD) in a store."""

    size: int
    mtime_ns: int


def location(uri: str | os.PathLike, spool: Path | None = None) -> Location:
    """A local path (made absolute) or, for `s3://bucket/prefix`, an ObjectPath whose uploads are
    written first under `spool`, a local folder."""
    if is_uri(uri):
        key = str(uri)[len(S3_SCHEME) :].strip("/")
        if not key:
            raise ValueError(f"{uri!r} names no bucket: write s3://bucket/prefix")
        return ObjectPath(object_store(spool), key)
    return Path(uri)


def remote(path: Location) -> bool:
    """Whether `path` is in an object store, where each read is a request with its latency."""
    return isinstance(path, ObjectPath)


def spool_dir(folder: Location) -> Path:
    """Where a file bound for `folder` is written before `publish`: the folder itself on a disk
    (the rename that publishes it stays on one disk), the store's local spool otherwise."""
    if isinstance(folder, Path):
        return folder
    if folder.store.spool is None:
        raise ValueError(f"{folder} has no local spool folder to write files before their upload")
    return folder.store.spool


def publish(staged: Path, final: Location) -> Location:
    """Replace `final` by the finished local file `staged` in one step readers cannot split: a
    rename on a disk, an upload (one PUT, or a multipart upload the store shows only once it
    completes) to a store. `staged` is gone afterwards."""
    if isinstance(final, Path):
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        return final
    with naming_errors(final, "uploading"):
        pafs.copy_files(
            str(staged), final.key, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=final.store.filesystem()
        )
    staged.unlink()
    return final


@contextmanager
def open_input(path: Location) -> Iterator[pafs.NativeFile]:
    """A random-access file (what Parquet readers take)."""
    if isinstance(path, Path):
        with pafs.LocalFileSystem().open_input_file(str(path)) as handle:
            yield handle
        return
    with naming_errors(path, "reading"), path.store.filesystem().open_input_file(path.key) as handle:
        yield handle


@contextmanager
def open_lines(path: Location) -> Iterator[io.BufferedReader]:
    """A file to read line by line, streamed from the disk or the store."""
    if isinstance(path, Path):
        with path.open("rb") as handle:
            yield handle
        return
    with naming_errors(path, "reading"), path.store.filesystem().open_input_stream(path.key) as stream:
        yield io.BufferedReader(stream)


def remove_tree(folder: Location) -> None:
    """The folder (prefix) and everything in it; nothing when it is not there."""
    if isinstance(folder, Path):
        shutil.rmtree(folder, ignore_errors=True)
        return
    if folder.exists():
        with naming_errors(folder, "deleting"):
            # The prefix itself too: a store with real folders (SeaweedFS's filer) keeps an empty one.
            folder.store.filesystem().delete_dir(folder.key)


@contextmanager
def naming_errors(path: Location, action: str) -> Iterator[None]:
    """A store's failure as a StorageUnavailable naming the endpoint, the bucket and the key (a
    stopped server otherwise shows as a bare SDK message); a local path's errors pass as they are."""
    try:
        yield
    except StorageUnavailable:
        raise
    except OSError as error:
        if isinstance(path, Path) or isinstance(error, FileNotFoundError):
            raise
        raise StorageUnavailable(f"{path.store.describe(path.key)} failed while {action} {path}: {error}") from error


def listed_files(folder: Location, wanted: tuple[str, ...] | Callable[[str], bool] = ("",)) -> dict[Location, FileVersion]:
    """Every file under `folder` whose name ends with one of the suffixes `wanted` (or that the
    test `wanted` accepts), recursively and in path order, with its version; hidden names (a leading dot, a shipper's file being written) and
    what is under hidden folders left out.

    On a disk, links to folders are followed (each real folder once, so a link loop ends), a file
    removed while listed is left out and a missing folder is a FileNotFoundError. In a store it is
    one listing (no request per file), a prefix with nothing under it is an empty folder, and a
    missing bucket a StorageUnavailable.
    """
    if isinstance(wanted, tuple):
        suffixes = wanted

        def wanted(name: str) -> bool:
            return name.endswith(suffixes)

    if isinstance(folder, Path):
        return _listed_local_files(folder, wanted)
    with naming_errors(folder, "listing"):
        filesystem = folder.store.filesystem()
        bucket = folder.key.split("/", 1)[0]
        if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageUnavailable(f"{folder.store.describe(folder.key)} has no such bucket (listing {folder})")
        infos = filesystem.get_file_info(pafs.FileSelector(folder.key, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        hidden = any(part.startswith(".") for part in info.path[len(folder.key) + 1 :].split("/"))
        if info.type == pafs.FileType.File and not hidden and wanted(info.base_name):
            found[replace(folder, key=info.path)] = FileVersion(info.size, info.mtime_ns)
    return dict(sorted(found.items()))


def _listed_local_files(folder: Path, wanted: Callable[[str], bool]) -> dict[Location, FileVersion]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist or is not a folder")
    found, visited = [], set()
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in visited:
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files = (Path(parent) / name for name in names if not name.startswith(".") and wanted(name))
        found.extend(path for path in files if path.is_file())
    listing: dict[Location, FileVersion] = {}
    for path in sorted(found):
        try:
            listing[path] = version(path)
        except FileNotFoundError:  # removed since the walk saw it
            continue
    return listing


def version(path: Location) -> FileVersion:
    """One file's version: `stat` on a disk, a HEAD request in a store."""
    if isinstance(path, Path):
        status = path.stat()
        return FileVersion(status.st_size, status.st_mtime_ns)
    info = path._info()
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{path} is not an object")
    return FileVersion(info.size, info.mtime_ns)


def range_view(path: str | Location, start: int, end: int) -> memoryview:
    """Bytes [start, end) of a file: on a disk a view of a read-only memory map (no copy), in a
    store one ranged GET. `path` may be the text of a location (what a worker process is given:
    it opens the object itself, its credentials from the AWS variables as here)."""
    path = path if isinstance(path, ObjectPath) else location(path)
    if isinstance(path, Path):
        with path.open("rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(mapped)[start:end]
    with open_input(path) as handle:
        return memoryview(handle.read_at(end - start, start))


def read_range(path: str | Location, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file (a small part: a seek and a read on a disk, a ranged GET in a store)."""
    path = path if isinstance(path, ObjectPath) else location(path)
    with open_binary(path) as handle:
        handle.seek(start)
        return handle.read(max(0, end - start))


@contextmanager
def open_binary(path: Location, buffer_bytes: int = io.DEFAULT_BUFFER_SIZE) -> Iterator[BinaryIO]:
    """A buffered binary file to read from the start or seek in: `open` on a disk (it takes any
    file name, Arrow only UTF-8 ones), the object read in requests of `buffer_bytes` in a store."""
    if isinstance(path, Path):
        with path.open("rb", buffering=buffer_bytes) as handle:
            yield handle
        return
    with open_input(path) as raw, naming_errors(path, "reading"):
        yield io.BufferedReader(raw, buffer_size=buffer_bytes)

# --- folders published whole: dataset versions, training datasets, model versions -----------
# A folder on a store is many objects, and no request makes them appear at once: each folder is
# built on the local disk, its files uploaded, and the one file (or registry entry) that marks it
# as finished is written last. Readers look for that marker and ignore a folder without it.


def ensure_dir(folder: Location) -> None:
    """A folder to write into: made on a disk; on a store a prefix needs nothing."""
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)


def claim_dir(folder: Location) -> bool:
    """Create `folder` as a claim on its name: False when it is taken. A disk makes the claim
    atomic (mkdir); a store cannot (a prefix exists once something is uploaded under it), so two
    writers there at the same moment can claim one name: they must take turns (docs/s3.md, "Who
    excludes whom")."""
    if isinstance(folder, Path):
        try:
            folder.mkdir()
        except FileExistsError:
            return False
        return True
    return not folder.exists()


def publish_folder(staged: Path, final: Location, last: str | None = None) -> bool:
    """Make the finished local folder `staged` the folder `final`; `staged` is gone afterwards.
    On a disk, one rename (onto nothing or an empty folder). On a store, an upload of each file,
    `last` (the file that marks the folder finished) after all the others, over the remains of
    an unfinished upload, which are deleted first. Returns False, publishing nothing, when a
    finished folder is already there (a disk: a folder with files; a store: `last` exists)."""
    if isinstance(final, Path):
        try:
            staged.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(staged, ignore_errors=True)
            return False
        return True
    if last is not None and (final / last).exists():
        shutil.rmtree(staged, ignore_errors=True)
        return False
    remove_tree(final)
    for name in _files_last(staged, (last,) if last else ()):
        publish(staged / name, final / name)
    shutil.rmtree(staged, ignore_errors=True)
    return True


def replace_files(folder: Location, changes: Path, last: Sequence[str]) -> None:
    """Replace files of the finished folder `folder` by those of the local folder `changes` (the
    same names under it); `changes` is gone afterwards. On a disk the folder is swapped whole, so
    a reader sees the old folder or the new one: a copy made of hard links to its files takes the
    changed ones, is renamed into its place, and the old folder is deleted. A store cannot swap a
    prefix: each changed file is uploaded over its object (one PUT: the old file or the new one,
    never a part), those named in `last` (the files that describe others: records files, then the
    manifest) after all the others, in that order."""
    names = _files_last(changes, last)
    if isinstance(folder, ObjectPath):
        for name in names:
            publish(changes / name, folder / name)
        shutil.rmtree(changes, ignore_errors=True)
        return
    staging = folder.parent / f".{folder.name}.rewriting-{uuid.uuid4().hex}"
    retired = folder.parent / f".{folder.name}.replaced-{uuid.uuid4().hex}"
    try:
        copy_in(folder, staging)
        for name in names:
            os.replace(changes / name, staging / name)  # a new file over the link: the old bytes stay the old folder's
        folder.rename(retired)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(changes, ignore_errors=True)
    shutil.rmtree(retired)


def _files_last(folder: Path, last: Sequence[str]) -> list[str]:
    """The files under a local folder (relative names, sorted), those named in `last` at the end
    in that order: the order of their uploads, so a reader finds the describing file last."""
    order = {name: n for n, name in enumerate(last)}
    names = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return sorted(names, key=lambda name: order.get(name, -1))  # stable: the others first, in name order


def replace_bytes(final: Location, data: bytes) -> None:
    """Replace a small file whole (a registry, a manifest): written beside it and renamed on a
    disk, one PUT on a store."""
    staged = spool_dir(final.parent) / f".{final.name}.{uuid.uuid4().hex}"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(data)
    publish(staged, final)


def point(link: Location, target: str) -> None:
    """Make `link` name `target` (a sibling's name): a symlink replaced by rename on a disk, a
    small object holding the name on a store (which has no links)."""
    if isinstance(link, Path):
        staged = link.parent / f".{link.name}-{uuid.uuid4().hex}"
        staged.symlink_to(target)
        os.replace(staged, link)
        return
    link.write_bytes(target.encode())


def pointed(link: Location) -> str | None:
    """The name `link` points at (see `point`), or None when there is no link."""
    if isinstance(link, Path):
        return os.readlink(link) if link.is_symlink() else None
    return link.read_bytes().decode() if link.is_file() else None


def copy_in(source: Location, target: Path) -> None:
    """A file or folder of the store or a disk at `target` on this disk: hard links where the disk
    allows (files the project publishes are replaced by rename, never rewritten, so a link keeps
    its bytes), copies across disks, a download from a store."""
    if isinstance(source, ObjectPath):
        _download(source, target)
        return
    if os.path.isdir(source):  # copytree hands each file back as a str
        shutil.copytree(source, target, copy_function=copy_in)
        return
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, target)


def local_copy(folder: Location, downloads: Path) -> Path:
    """A finished, immutable folder readable as local files: itself on a disk; from a store, its
    download under `downloads` (made once: downloaded beside and renamed, so it is whole)."""
    if isinstance(folder, Path):
        return folder
    target = downloads / folder.key
    if target.is_dir():
        return target
    staged = downloads / f".{uuid.uuid4().hex}.tmp"
    staged.mkdir(parents=True)
    _download(folder, staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        staged.rename(target)
    except OSError:  # another process downloaded it meanwhile
        shutil.rmtree(staged, ignore_errors=True)
    return target


def forget_local_copy(folder: Location, downloads: Path) -> None:
    """The download `local_copy` made of `folder`, removed once the folder was rewritten (an
    erasure): the next reader downloads it again. Nothing on a disk, where the folder is its own copy."""
    if isinstance(folder, ObjectPath):
        shutil.rmtree(downloads / folder.key, ignore_errors=True)


def _download(source: ObjectPath, target: Path) -> None:
    """An object, or every object under a prefix, to a local file or folder."""
    with naming_errors(source, "downloading"):
        pafs.copy_files(
            source.key, str(target), source_filesystem=source.store.filesystem(), destination_filesystem=pafs.LocalFileSystem()
        )
