"""Locations are URIs: local paths, ``file://``, ``s3://``/``s3a://``, ``gs://``, ``abfss://``,
``dbfs:/`` and ``/Volumes/...``, kept as strings wherever they may be remote.

A table may also be named instead of placed: ``catalog.schema.table`` (Unity Catalog, or a
Spark session's own catalog), read and written through Spark.

Files beside the tables (run summaries, samples, the model file, reports) go through Arrow's
file systems, which read the usual environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AZURE_STORAGE_ACCOUNT_NAME`` …) and the config's ``storage_options``.

Example:
    >>> join("s3://bucket/out", "runs", "r1")
    's3://bucket/out/runs/r1'
    >>> is_remote("/Volumes/main/crm/out"), is_remote("s3a://bucket/x")
    (False, True)
    >>> is_table_name("main.crm.segments"), is_table_name("out/segments")
    (True, False)
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

#: Schemes Arrow names differently from Spark and Hadoop.
_ARROW_SCHEMES = {"s3a": "s3", "s3n": "s3", "abfss": "abfs", "gcs": "gs"}
#: storage_options keys (delta-rs and Polars spell them so) that Arrow's S3 client takes.
_S3_OPTIONS = {
    "aws_access_key_id": "access_key",
    "aws_secret_access_key": "secret_key",
    "aws_session_token": "session_token",
    "aws_region": "region",
    "aws_endpoint_url": "endpoint_override",
}


#: One part of a catalog name: plain, or quoted in backticks.
TABLE_NAME_PART = re.compile(r"[A-Za-z0-9_\-]+")
#: Last parts that make ``a.b.csv`` a (missing) file rather than a table's name.
_FILE_SUFFIXES = {"csv", "tsv", "txt", "parquet", "pq", "json", "gz", "zip", "yaml", "yml"}
_TABLE_NAME = re.compile(r"(`[^`]+`|[A-Za-z0-9_\-]+)(\.(`[^`]+`|[A-Za-z0-9_\-]+)){2}")


def is_table_name(location: str | os.PathLike[str], *, base_dir: Path | None = None) -> bool:
    """Whether ``location`` names a catalog table (``catalog.schema.table``) rather than a
    place: three dotted names, no slash, and no local file or folder so named (in
    ``base_dir``, or the working folder)."""
    location = os.fspath(location)
    if not _TABLE_NAME.fullmatch(location) or ((base_dir or Path()) / location).exists():
        return False
    return location.rsplit(".", 1)[-1].lower() not in _FILE_SUFFIXES


def quoted_table_name(name: str) -> str:
    """A catalog name with each part in backticks, safe in SQL whatever its characters."""
    parts = re.findall(r"`[^`]+`|[^.]+", name)
    return ".".join(part if part.startswith("`") else f"`{part}`" for part in parts)


def is_uri(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a scheme (``s3://``, ``file://``, ``dbfs:/``)."""
    location = os.fspath(location)
    return "://" in location or location.startswith("dbfs:/")


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is outside this machine's file system."""
    return is_uri(location) and not os.fspath(location).startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """The local path of a non-remote location."""
    location = os.fspath(location)
    return Path(urlparse(location).path) if location.startswith("file://") else Path(location)


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """``location`` with ``parts`` appended, as a URI or a local path."""
    location = os.fspath(location)
    if not is_remote(location):
        return str(local_path(location).joinpath(*parts))
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])


def name_of(location: str | os.PathLike[str]) -> str:
    """The last component of a location (a table's name)."""
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, order=True)
class FileEntry:
    """One file under a location: path relative to it, size, modification time."""

    relative: str
    size: int
    mtime_ns: int


class Files:
    """File operations on locations, local or remote, with the config's storage options."""

    def __init__(self, storage_options: Mapping[str, str] | None = None) -> None:
        self.storage_options = dict(storage_options or {})

    def resolve(self, location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
        """Arrow's file system for ``location`` and the path within it."""
        location = os.fspath(location)
        if not is_remote(location):
            return pafs.LocalFileSystem(), str(local_path(location).resolve())
        parsed = urlparse(location)
        scheme = _ARROW_SCHEMES.get(parsed.scheme, parsed.scheme)
        path = f"{parsed.netloc}{parsed.path}".rstrip("/")
        if scheme == "s3":
            return pafs.S3FileSystem(**self._s3_options()), path
        filesystem, inner = pafs.FileSystem.from_uri(f"{scheme}://{path}")
        return filesystem, inner

    def exists(self, location: str) -> bool:
        filesystem, path = self.resolve(location)
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, location: str) -> bool:
        filesystem, path = self.resolve(location)
        return filesystem.get_file_info(path).type == pafs.FileType.Directory

    def list_files(self, location: str) -> list[FileEntry]:
        """Every file under a folder (or the file itself), in name order."""
        filesystem, path = self.resolve(location)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [FileEntry(path.rsplit("/", 1)[-1], info.size or 0, info.mtime_ns or 0)]
        found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        return sorted(
            FileEntry(f.path[len(path) :].lstrip("/"), f.size or 0, f.mtime_ns or 0)
            for f in found
            if f.type == pafs.FileType.File
        )

    def stored_bytes(self, location: str) -> int:
        """The bytes every file under a folder (or the file itself) occupies."""
        return sum(entry.size for entry in self.list_files(location))

    def subfolders(self, location: str) -> list[str]:
        """Names of the folders directly under ``location``."""
        filesystem, path = self.resolve(location)
        if filesystem.get_file_info(path).type != pafs.FileType.Directory:
            return []
        found = filesystem.get_file_info(pafs.FileSelector(path))
        return [f.base_name for f in found if f.type == pafs.FileType.Directory]

    def read_text(self, location: str) -> str:
        return self.read_bytes(location).decode("utf-8")

    def read_bytes(self, location: str) -> bytes:
        filesystem, path = self.resolve(location)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    def write_text(self, location: str, text: str) -> None:
        """Write a small file whole (see :meth:`write_bytes`)."""
        self.write_bytes(location, text.encode("utf-8"))

    def write_bytes(self, location: str, data: bytes) -> None:
        """Write a file whole, never seen half-written: locally through a temporary file and a
        rename, on object storage in one PUT."""
        if not is_remote(location):
            target = local_path(location)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, target)
            return
        filesystem, path = self.resolve(location)
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def make_dirs(self, location: str) -> None:
        filesystem, path = self.resolve(location)
        filesystem.create_dir(path, recursive=True)

    def move(self, source: str, target: str) -> None:
        filesystem, source_path = self.resolve(source)
        _, target_path = self.resolve(target)
        filesystem.move(source_path, target_path)

    def remove_file(self, location: str) -> None:
        filesystem, path = self.resolve(location)
        filesystem.delete_file(path)

    def remove_tree(self, location: str) -> None:
        filesystem, path = self.resolve(location)
        if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
            filesystem.delete_dir(path)

    def _s3_options(self) -> dict[str, str]:
        options = {
            _S3_OPTIONS[key.lower()]: value
            for key, value in self.storage_options.items()
            if key.lower() in _S3_OPTIONS
        }
        endpoint = options.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            parsed = urlparse(endpoint)
            options["endpoint_override"] = parsed.netloc or endpoint
            options["scheme"] = parsed.scheme or "https"
        return options
