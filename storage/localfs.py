"""`LocalObjectStore`: objects as files in a directory, for embedded (local) mode.

Every write, whole (`put_*`) or streamed (`open_writer`), goes to a hidden temp file in the
target's folder and is renamed into place, so readers never see a partial object.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage.keys import UnsafeKey, validate_key, validate_prefix
from storage.objects import (
    BaseObjectWriter,
    MiB,
    ObjectInfo,
    ObjectNotFound,
    ObjectPage,
    ObjectWriter,
    StorageUnavailable,
)

_TMP_MARK = ".sb-tmp-"


def _temp_file_beside(path: Path) -> tuple[int, str]:
    """A new temp file in `path`'s folder (created if needed), readable by other users: an
    open fd and its name. Same folder, so the final os.replace() is an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_MARK, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outputs from other users
    except BaseException:
        os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return fd, tmp_name


class LocalObjectWriter(BaseObjectWriter):
    """A temp file beside the target, fsynced and renamed over it at commit, unlinked at abort.

    The file is unbuffered, so `bytes_stored` (the bytes the OS has taken; fsync follows at
    commit) is exact and every seek, read and write works anywhere, as on any file.
    """

    def __init__(self, path: Path, key: str) -> None:
        super().__init__(key)
        self._path = path
        fd, self._tmp_name = _temp_file_beside(path)
        self._file = io.FileIO(fd, "r+")
        self._size = 0

    def _write(self, data: memoryview) -> int:
        done = 0
        while done < len(data):  # a raw write may take only part of its buffer
            done += self._file.write(data[done:]) or 0
        self._size = max(self._size, self._file.tell())
        self._stored(self._size)
        return done

    def _seek(self, offset: int, whence: int) -> int:
        return self._file.seek(offset, whence)

    def _tell(self) -> int:
        return self._file.tell()

    def _read(self, size: int) -> bytes:
        return self._file.read(size) or b""

    def _commit(self) -> int:
        os.fsync(self._file.fileno())
        size = os.fstat(self._file.fileno()).st_size
        self._file.close()
        os.replace(self._tmp_name, self._path)
        self._stored(size)
        return size

    def _abort(self) -> None:
        self._file.close()
        Path(self._tmp_name).unlink(missing_ok=True)


class LocalObjectStore:
    """Objects as files under `root`; every write is a temp file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # resolve() follows symlinks, so a link pointing outside root is caught here too.
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafeKey(f"Object key {key!r} resolves outside the store's root.")
        return path

    def _write(self, key: str, write: Callable[[BinaryIO], int]) -> int:
        path = self._path(key)
        fd, tmp_name = _temp_file_beside(path)
        try:
            with os.fdopen(fd, "wb") as tmp:
                written = write(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return written

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        # content_type is not kept: local files are served with a type guessed from the name.
        return self._write(key, lambda tmp: tmp.write(data))

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        def copy(tmp: BinaryIO) -> int:
            total = 0
            while chunk := fileobj.read(MiB):
                total += tmp.write(chunk)
            return total

        return self._write(key, copy)

    def open_writer(self, key: str, content_type: str) -> ObjectWriter:
        """See ObjectStore; content_type is not kept, as for put_bytes."""
        return LocalObjectWriter(self._path(key), key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(chunk_size):
                    yield chunk

        return chunks()

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def copy(self, src: str, dst: str) -> int:
        """See ObjectStore: a file copy into a temp file renamed over `dst`, as every write."""
        try:
            source = self._path(src).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(src) from exc

        def write(tmp: BinaryIO) -> int:
            shutil.copyfileobj(source, tmp, MiB)
            return tmp.tell()

        with source:
            return self._write(dst, write)

    def delete(self, key: str) -> None:
        # Empty folders are left behind on purpose: pruning them races with concurrent writers.
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix.rstrip("/"))
        folder = (self.root / prefix.rpartition("/")[0]).resolve()
        if not folder.is_relative_to(self.root):  # a symlinked folder pointing elsewhere
            raise UnsafeKey(f"Prefix {prefix!r} resolves outside the store's root.")
        yield from (key for key in self._walk(folder) if key.startswith(prefix))

    def list_keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        cutoff = before.timestamp()
        for key in self.list_keys(prefix):
            try:
                written = (self.root / key).stat().st_mtime
            except FileNotFoundError:  # deleted since it was listed
                continue
            if written < cutoff:
                yield key

    def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """See ObjectStore. The ETag is size and mtime (no hashing of every file); folders
        that sort wholly before `start_after` are not entered, so a resumed listing does not
        walk again what it has passed."""
        validate_prefix(prefix.rstrip("/"))
        folder = (self.root / prefix.rpartition("/")[0]).resolve()
        if not folder.is_relative_to(self.root):
            raise UnsafeKey(f"Prefix {prefix!r} resolves outside the store's root.")
        objects: list[ObjectInfo] = []
        for entry, key in self._walk_sorted(folder, start_after or ""):
            if not key.startswith(prefix):
                continue
            if len(objects) == limit:
                return ObjectPage(objects, truncated=True)
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted since it was listed
                continue
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            etag = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
            objects.append(ObjectInfo(key, stat.st_size, etag, modified))
        return ObjectPage(objects, truncated=False)

    def _walk_sorted(self, folder: Path, after: str) -> Iterator[tuple[os.DirEntry[str], str]]:
        """(entry, key) of files under `folder` in key order, with keys after `after`.

        A folder sorts as its name plus `/`, which is where its keys fall in byte order
        (`a.wav` < `a/x.wav`); one folder's entries are in memory at a time.
        """
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        keyed = []
        for entry in entries:
            key = Path(entry.path).relative_to(self.root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                keyed.append((key + "/", entry, True))
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(_TMP_MARK):
                keyed.append((key, entry, False))
        for key, entry, is_dir in sorted(keyed, key=lambda k: k[0].encode()):
            if is_dir:
                # Everything inside sorts between `key` and `key` + 0xff: skip it when passed.
                if after and not after.startswith(key) and after > key:
                    continue
                yield from self._walk_sorted(Path(entry.path), after)
            elif key > after:
                yield entry, key

    def _walk(self, folder: Path) -> Iterator[str]:
        """Keys under `folder`, depth first in sorted order, one directory in memory at a time."""
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(_TMP_MARK):
                yield Path(entry.path).relative_to(self.root).as_posix()

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        self._path(key)
        return None

    def check(self) -> None:
        """See ObjectStore; the message names the folder and the cause (/healthz shows it)."""
        if not self.root.is_dir():
            raise StorageUnavailable(f"folder '{self.root}' does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"folder '{self.root}' is not writable by this process")

    def ensure_exists(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release."""
