"""Everything that touches the file system the same way in every command: one owner each.

- `available_cores`: the CPU cores this process may run on.
- `atomic_file` / `write_text` / `write_bytes`: a file is written to `.NAME.tmp-PID` beside it,
  fsync'ed, renamed over NAME and its directory fsync'ed, so a kill at any instant leaves the old
  file or the new one, never a torn one.
- `publish_directory`: the same for a whole directory (checkpoints, exports, averages, prepared
  data). Where the kernel offers `renameat2(RENAME_EXCHANGE)` the old and new directories trade
  places in one step; elsewhere the old one is renamed aside first (`.NAME.old-PID`), which
  `recover` puts back if the process died between the two renames.
- `recover`: run before writing NAME; removes the temporary leftovers of dead processes and
  restores NAME from an interrupted swap.
- `output_lock`: one writer per output, an `flock` on `.NAME.lock` beside it, held for the
  command's lifetime and released by the kernel when the process dies (no stale locks).
- `os_failure`: an `OSError` as one line saying what went wrong and where.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from nmt.errors import DataError, NmtError

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


class BusyError(NmtError):
    """Another live process is writing the same output."""


class FileSystemError(NmtError):
    """The operating system refused a read or write (full disk, read-only, bad path).

    `errno` and `strerror` are the refused call's own, for callers that word their own error.
    """

    errno: int | None = None
    strerror: str | None = None


def available_cores() -> int:
    """Cores this process may run on (its affinity mask on Linux, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- errors --------------------------------------------------------------------------------
_WHAT = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "is a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def os_failure(exc: OSError, where: str | os.PathLike | None = None, *,
               needed: int | None = None, at_least: bool = False) -> FileSystemError:
    """`exc` as a one-line error naming the path; a full disk also says how much was needed
    (`at_least`: what had been written when the disk filled)."""
    what = _WHAT.get(exc.errno or 0, exc.strerror or str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and needed:
        what += f" (the write needed {'at least ' if at_least else ''}{_size(needed)})"
    place = where if where is not None else (exc.filename or "")
    failure = FileSystemError(what, where=str(place) if place else None)
    failure.errno, failure.strerror = exc.errno, exc.strerror
    return failure


_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def io_failure(exc: BaseException, where: str | os.PathLike | None = None, *,
               needed: int | None = None, at_least: bool = False) -> FileSystemError | None:
    """`exc` as a FileSystemError if it is an OSError, or a library's error that wraps one
    (safetensors: "... (os error 28)"); None for anything else."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_failure(exc, where, needed=needed, at_least=at_least)
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    if match is None:
        return None
    number = int(match.group(1) or match.group(2))
    return os_failure(OSError(number, os.strerror(number)), where, needed=needed,
                      at_least=at_least)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def tree_size(path: Path) -> int:
    """Bytes under `path` (a file or a directory), for 'the write needed' messages."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- durability ----------------------------------------------------------------------------
def fsync(path: str | os.PathLike) -> None:
    """Flush a file or directory to disk (directories: the entries naming its files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file below `path`, then the directories holding them."""
    for p in sorted(path.rglob("*")):
        if p.is_file():
            fsync(p)
    for p in sorted((d for d in path.rglob("*") if d.is_dir()), reverse=True):
        fsync(p)
    fsync(path)


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """The temporary sibling of `path` owned by this process (`.NAME.tmp-PID`)."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it is fsync'ed and renamed to `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = temp_name(path)
    text = "b" not in mode
    try:
        handle = open(tmp, mode, **({"encoding": "utf-8", "newline": "\n"} if text else {}))
    except OSError as exc:
        raise os_failure(exc, path) from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync(path.parent)
    except OSError as exc:
        raise os_failure(exc, path, needed=_written(tmp)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_through(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write the new file `path` with a library's writer, `write(file)` (not atomically: for
    files of a temporary directory that is published whole). An OSError of the file, a full
    disk say, is raised as itself even where the library reports it as an error of its own
    (torch.save says "unexpected pos"), so that callers can word it."""
    errors: list[OSError] = []

    class Sink:
        def __init__(self, handle: IO[bytes]) -> None:
            self.handle = handle

        def write(self, data) -> int:
            try:
                return self.handle.write(data)
            except OSError as exc:
                errors.append(exc)
                raise

        def flush(self) -> None:
            self.handle.flush()

    with open(path, "wb") as handle:
        try:
            write(Sink(handle))
        except Exception:
            if errors:
                raise errors[0] from None
            raise


def _written(tmp: Path) -> int | None:
    try:
        return tmp.stat().st_size or None
    except OSError:
        return None


def check_readable(path: str | os.PathLike) -> None:
    """Open and close `path`, so that a library which reports every open error alike
    (safetensors: "no such file") is not the one to say why it cannot be read."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise os_failure(exc, path) from None


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 file's text; not UTF-8 or unreadable is a one-line error naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", where=str(path)) from None
    except OSError as exc:
        raise os_failure(exc, path) from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, LF) to `path` atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)


# --- directories -----------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2_fn = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one atomic step; False where the system cannot."""
    if _renameat2_fn is None:
        return False
    if _renameat2_fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_directory(tmp: Path, path: Path) -> None:
    """Make the finished directory `tmp` appear as `path`, replacing any old `path` atomically.

    `tmp` should be `temp_name(path)`. Its files are fsync'ed first. A kill at any instant
    leaves `path` old or new; what is left beside it `recover` clears.
    """
    try:
        fsync_tree(tmp)
        if path.exists():
            if exchange(tmp, path):  # tmp now holds the old copy
                fsync(path.parent)
                shutil.rmtree(tmp)
                return
            old = temp_name(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            fsync(path.parent)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
            fsync(path.parent)
    except OSError as exc:
        raise os_failure(exc, path) from None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(path: str | os.PathLike) -> None:
    """Clear what dead writers of `path` left beside it: finish or undo an interrupted swap.

    If `path` is missing and a dead process's `.NAME.old-PID` exists, the old copy is put back
    (the new one may be incomplete). Every other `.NAME.tmp-PID` / `.NAME.old-PID` of a dead
    process is removed. Call it while holding `output_lock(path)`.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m or m["name"] != path.name or _alive(int(m["pid"])):
            continue
        try:
            if m["kind"] == "old" and not path.exists():
                os.replace(entry, path)
                fsync(parent)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise os_failure(exc, entry) from None


# --- one writer per output ---------------------------------------------------------------------
def lock_path(path: Path) -> Path:
    """The lock file guarding output `path`: `.NAME.lock` beside it."""
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold an exclusive `flock` on `path`'s lock file, or fail at once naming the holder.

    The kernel drops the lock when the process dies, so a killed writer never blocks the next.
    Leftovers of dead writers are cleared (`recover`) once the lock is held. If the command
    fails before `path` exists, the lock file and the directories made for it are removed:
    a failed first run changes nothing on disk.
    """
    path = Path(path)
    lock = lock_path(path)
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileExistsError, NotADirectoryError):
        raise FileSystemError("cannot write here: a path component is a file, not a directory",
                              where=str(path)) from None
    except OSError as exc:
        raise os_failure(exc, lock.parent if exc.errno != errno.EACCES else lock) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BusyError(f"{what} is being written by process {holder}; wait for it or "
                            "stop it", where=str(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        recover(path)
        try:
            yield
        finally:
            if not path.exists():  # nothing was made: leave no trace, still under the lock
                with contextlib.suppress(OSError):
                    lock.unlink()
                    for directory in made:  # innermost first; only if empty
                        directory.rmdir()
    finally:
        os.close(fd)
