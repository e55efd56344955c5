"""Where runs live: a folder on a local or shared filesystem, or a prefix in an object store.

``storage_path`` is a path (``runs``, ``/mnt/shared/runs``) or a pyarrow
URI (``s3://bucket/runs``, ``gs://bucket/runs``; options such as
``?endpoint_override=…&region=…`` pass through). Ray Train resolves the same
string with ``pyarrow.fs.FileSystem.from_uri`` and writes its checkpoints
there itself; everything gemlab reads or writes beside them -- ``run.json``,
``plan.json``, ``results.parquet``, TensorBoard events, a sweep's plans --
goes through a :class:`Location`, so one code path serves a laptop's folder
and a bucket.

A write is whole or absent: on a filesystem a temp file renamed over the
target; in an object store one PUT, which readers see complete or not at all.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from gemlab.errors import GemlabError
from gemlab.files import atomic_path, check_can_create

_CREDENTIALS = re.compile(r"://[^/@?#]*@")


class StorageError(GemlabError, ValueError):
    """A storage path that pyarrow cannot open."""


@dataclass(frozen=True)
class Location:
    """A folder: ``filesystem`` + ``path`` for reading and writing, ``uri`` for Ray and for workers."""

    filesystem: pafs.FileSystem
    path: str  # on ``filesystem``: an absolute path, or ``bucket/prefix`` in an object store
    base_uri: str  # ``uri`` without its query; equal to ``path`` on the local filesystem
    query: str = ""  # ``?…`` options of an object-store URI, kept on every child

    @classmethod
    def parse(cls, where: str | Path) -> Location:
        """A path (made absolute: workers run elsewhere) or a URI; raises StorageError naming it."""
        text = str(where)
        if "://" not in text:
            path = str(Path(text).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), path, path)
        try:
            filesystem, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise StorageError(f"{masked(text)}: not a location pyarrow can open ({error})") from None
        if isinstance(filesystem, pafs.LocalFileSystem):  # file:///abs is a plain path
            return cls(filesystem, path, path)
        base, _, query = text.partition("?")
        return cls(filesystem, path.rstrip("/"), base.rstrip("/"), f"?{query}" if query else "")

    @property
    def uri(self) -> str:
        """What Ray's ``storage_path`` and a worker's ``Location.parse`` take (credentials included, if given)."""
        return self.base_uri + self.query

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        """The folder as a ``Path``; raises StorageError for an object-store location."""
        if not self.is_local:
            raise StorageError(f"{self}: not on a local or shared filesystem")
        return Path(self.path)

    def __str__(self) -> str:
        """For messages: the URI without credentials."""
        return masked(self.uri)

    def __truediv__(self, name: str) -> Location:
        return Location(self.filesystem, f"{self.path}/{name}", f"{self.base_uri}/{name}", self.query)

    @property
    def parent(self) -> Location:
        return Location(self.filesystem, self.path.rsplit("/", 1)[0], self.base_uri.rsplit("/", 1)[0], self.query)

    def _info(self) -> pafs.FileInfo:
        return self.filesystem.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def make_dirs(self) -> None:
        self.filesystem.create_dir(self.path, recursive=True)

    def folders(self, prefix: str = "") -> list[Location]:
        """The sub-folders whose names start with ``prefix``, sorted by name; none if this folder is absent."""
        if not self.is_dir():
            return []
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        return [self / name for name in names if name.startswith(prefix)]

    def files_named(self, name: str) -> list[Location]:
        """Every file called ``name`` anywhere under this folder, sorted by path."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, recursive=True))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name == name)
        return [self / p[len(self.path) + 1 :] for p in paths]

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file at once (parents created): readers never see a part of it."""
        self.parent.make_dirs()
        if self.is_local:  # a temp file renamed over the target
            with atomic_path(Path(self.path)) as temp:
                temp.write_bytes(data)
            return
        with self.filesystem.open_output_stream(self.path) as stream:  # one PUT: whole or absent
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        """Remove this file, or this folder with everything in it; nothing if absent."""
        info = self._info()
        if info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.filesystem.delete_file(self.path)

    def check_writable(self) -> None:
        """Create the folder and write and remove a probe file; raises OSError when that fails."""
        self.make_dirs()
        probe = self / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.delete()

    def check_creatable(self) -> None:
        """Whether this folder could be written, creating nothing: a command checks its destination first.

        On a filesystem the probe goes to the nearest folder that exists (:func:`gemlab.files.check_can_create`);
        an object store has no folders to leave behind, so the probe goes here. Raises OSError when it fails.
        """
        if self.is_local:
            folder = Path(self.path)  # an existing folder is probed inside, so a file in its place is refused
            check_can_create(folder / ".write-probe" if folder.exists() else folder)
        else:
            self.check_writable()

    def upload(self, folder: Path) -> None:
        """Copy a local folder's files here (replacing files of the same name)."""
        self.make_dirs()
        pafs.copy_files(
            str(folder), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.filesystem
        )

    @contextmanager
    def local_copy(self) -> Iterator[Path]:
        """This folder as a local ``Path``: itself on a filesystem, a temporary download from an object store."""
        if self.is_local:
            yield Path(self.path)
            return
        folder = Path(tempfile.mkdtemp(prefix=f"gemlab-{self.name}-"))
        try:
            pafs.copy_files(
                self.path, str(folder), source_filesystem=self.filesystem, destination_filesystem=pafs.LocalFileSystem()
            )
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def masked(uri: str) -> str:
    """``uri`` (or any text holding URIs), each ``user:secret@`` replaced by ``***@``, for messages; raises nothing."""
    return _CREDENTIALS.sub("://***@", uri)
