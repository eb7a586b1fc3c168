"""Outputs written as one unit (a run folder, compare's output folder, a data file) by one writer at a time.

    NAME/                  the unit once written: its files, and manifest.json last
    .NAME.tmp-XXXXXXXX/    the unit while it is written; renamed to NAME when complete (a SIGKILL leaves
                           it behind, never read; compare's finished runs are inside it)
    .NAME.lock             held by the writer (filelock) from its checks to its last rename

A folder unit is built in the temporary sibling, every file flushed and fsynced, then manifest.json (each
file's path, size and SHA-256), then the sibling takes NAME's place in one rename; an existing NAME is
swapped with it atomically (renameat2 RENAME_EXCHANGE, Linux) or, where the OS has no exchange, moved
aside first. So NAME holds the old unit or the new one, never a mix. `verify` checks a folder against its
manifest on load. An existing output is replaced only when the caller says so (`overwrite`, the CLI's
--overwrite); a unit replaces its own earlier version freely (a run saved after training, then with its
metrics).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "nlica-lab unit"
MAX_MANIFEST_BYTES = 1 << 20
FAULT_ENV = "NLICA_LAB_KILL_AT"  # test hook: SIGKILL this process at the k-th write step (tests/test_units.py)


class OutputError(ValueError):
    """An output that cannot be written where asked: names the path, the problem and the fix."""


class UnitError(ValueError):
    """A folder that does not match its manifest: names the folder, the file and the fix."""


_steps = 0


def _fault_point() -> None:
    """Count one write step; with NLICA_LAB_KILL_AT=k set, the k-th kills this process (fault tests)."""
    global _steps
    kill_at = os.environ.get(FAULT_ENV)
    if not kill_at:
        return
    _steps += 1
    if _steps == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable on POSIX (best effort; a no-op where directories cannot be opened)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a temporary file next to `path`; on a clean exit it replaces `path` in one step.

    `mode` is "wb" (bytes) or "w" (UTF-8 text, newlines written as given). The temporary file is
    flushed and fsynced before `os.replace`; if anything raises, it is removed and `path` is untouched.
    Parent directories are created. An existing file's permission bits are kept.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer: mode {mode!r}; expected 'wb' or 'w'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text_args: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed or removed below on every path
        mode=mode, dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False, **text_args
    )
    try:
        yield tmp
        tmp.flush()
        os.fsync(tmp.fileno())
        tmp.close()
        _fault_point()
        try:
            file_mode = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            file_mode = _NEW_FILE_MODE
        os.chmod(tmp.name, file_mode)
        os.replace(tmp.name, target)
    except BaseException:
        tmp.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    _fsync_dir(target.parent)
    _fault_point()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, os.replace)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically, encoded as `encoding`, newlines exactly as given."""
    atomic_write_bytes(path, text.encode(encoding))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unit_files(root: Path) -> list[Path]:
    """The unit's files below root, relative, sorted; dot-named entries (locks, temporaries) are not part of it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and not (dirpath == str(root) and name == MANIFEST):
                out.append((Path(dirpath) / name).relative_to(root))
    return sorted(out)


def write_manifest(root: Path, kind: str) -> None:
    files = {p.as_posix(): {"size": (root / p).stat().st_size, "sha256": sha256_file(root / p)}
             for p in _unit_files(root)}
    doc = {"format": MANIFEST_FORMAT, "version": 1, "kind": kind, "files": files}
    _write_file(root / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fault_point()


def verify(root: Path) -> dict | None:
    """Check a folder against its manifest: every listed file there with its size and hash, nothing else.
    Returns the manifest, or None for a folder without one (written before manifests existed)."""
    path = root / MANIFEST
    if not path.exists():
        return None
    fix = "the folder was changed after it was written or is damaged; write it again"
    try:
        if not stat.S_ISREG(path.stat().st_mode) or path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UnitError(f"{path}: not a manifest file (a regular file under 1 MB); {fix}")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UnitError(f"{path}: unreadable ({type(e).__name__}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        raise UnitError(f"{path}: not an NLICA Lab manifest; {fix}")
    listed = doc["files"]
    present = {p.as_posix() for p in _unit_files(root)}
    extra = sorted(present - set(listed))
    if extra:
        raise UnitError(f"{root}: holds {', '.join(extra[:3])} that manifest.json does not list; {fix}")
    for name, entry in listed.items():
        f = root / name
        if name not in present or not isinstance(entry, dict):
            raise UnitError(f"{f}: listed in manifest.json but missing; {fix}")
        try:
            if not stat.S_ISREG(f.stat().st_mode):
                raise UnitError(f"{f}: not a regular file (a pipe, device or link to one); {fix}")
            size_ok = f.stat().st_size == entry.get("size")
            if not size_ok or sha256_file(f) != entry.get("sha256"):
                raise UnitError(f"{f}: its {'size' if not size_ok else 'SHA-256'} differs from manifest.json; {fix}")
        except OSError as e:
            raise UnitError(f"{f}: unreadable ({e.strerror or e}); {fix}") from None
    return doc


def is_unit(folder: Path) -> bool:
    """A folder this program wrote: its manifest.json is an NLICA Lab manifest (or, written before manifests,
    its run.json holds a run's config and steps, or its compare.json a table of rows)."""
    def doc(name: str) -> object:
        f = folder / name
        try:
            if not f.is_file() or f.stat().st_size > MAX_MANIFEST_BYTES:
                return None
            return json.loads(f.read_bytes().decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None

    manifest, run, table = doc(MANIFEST), doc("run.json"), doc("compare.json")
    return ((isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT)
            or (isinstance(run, dict) and "config" in run and "steps_done" in run)
            or (isinstance(table, dict) and isinstance(table.get("rows"), list)))


def _describe_blocker(target: Path) -> str | None:
    """Why nothing can be written at target (a file in the way, a parent that is a file), or None."""
    for parent in [target, *target.parents]:
        if parent.exists() or parent.is_symlink():
            if parent != target and not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return None


class UnitWriter:
    """Writes `target` as one unit, holding its lock throughout: a folder, or with `kind="file"` a file (the
    writer then only checks and locks; the file itself is written by `atomic_writer`).

        with UnitWriter(out, overwrite=False, kind="run") as w:   # checks and locks before any work
            w.write({"run.json": b"...", ...})                    # the folder appears whole
            w.write({...})                                        # and may be replaced whole again

    Folder units can also be built up in place: `staging()` gives the temporary folder (compare writes its
    finished runs there), `commit()` writes the manifest and renames it into place."""

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool, kind: str, flag: str = "--out",
                 lock: bool = True):
        self.target = Path(target)
        self.kind, self.flag, self.overwrite = kind, flag, overwrite
        self.is_file = kind == "file"  # then only the checks and the lock; atomic_writer writes it
        self._lock = FileLock(str(self.target.parent / f".{self.target.name}.lock")) if lock else None
        self._staging: Path | None = None
        self._written = False
        self.keep_staging = False

    def _check(self) -> None:
        t, flag = self.target, self.flag
        blocker = _describe_blocker(t)
        if blocker:
            raise OutputError(f"{flag}: cannot write {t}: {blocker}; choose another path")
        if t.exists() or t.is_symlink():
            if self.is_file and not t.is_file():
                raise OutputError(f"{flag}: {t} is a folder, not a file; give a file name ending in .npz or .csv")
            if not self.is_file and not t.is_dir():
                raise OutputError(f"{flag}: {t} is a file; give a folder name (it is created)")
            if not self.is_file and not is_unit(t) and any(t.iterdir()):
                raise OutputError(f"{flag}: {t} is a folder that NLICA Lab did not write (no {MANIFEST}); it is "
                                  "never replaced: choose a new or empty folder")
            if not self.overwrite and (self.is_file or any(t.iterdir())):
                raise OutputError(f"{flag}: {t} already exists; pass --overwrite to replace it whole, "
                                  "or choose another path")
        try:
            t.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{flag}: cannot create the folder {t.parent} ({e.strerror or e}); "
                              "choose a writable location") from None
        if not os.access(t.parent, os.W_OK | os.X_OK):
            raise OutputError(f"{flag}: {t.parent} is not writable; choose a writable location")

    def __enter__(self) -> UnitWriter:
        self._check()
        if self._lock is not None:
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                raise OutputError(f"{self.flag}: {self.target} is being written by another process (it holds "
                                  f"{self._lock.lock_file}); wait for it to finish or choose another path") from None
            except OSError as e:
                raise OutputError(f"{self.flag}: cannot lock {self.target} ({e.strerror or e}); "
                                  "choose a writable location") from None
            self._remove_stale()
        return self

    def _remove_stale(self) -> None:
        """Temporaries of earlier writers of this target that were killed (only the lock holder writes it)."""
        name = self.target.name
        for pattern in (f".{name}.tmp-????????", f".{name}.old-????????", f".{name}.????????.tmp"):
            for p in self.target.parent.glob(pattern):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def __exit__(self, *exc: object) -> None:
        self.discard()
        if self._lock is not None:
            self._lock.release()
            with contextlib.suppress(OSError):
                Path(self._lock.lock_file).unlink()

    def discard(self) -> None:
        """Remove an uncommitted temporary folder (a unit that was not finished; kept when it was complete but
        could not be put in place)."""
        if self._staging is not None and not self.keep_staging:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def staging(self) -> Path:
        """The temporary sibling the unit is built in (created on first use)."""
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self._staging

    def write(self, files: dict[str, bytes]) -> Path:
        """Write a folder unit from relative paths and their bytes, and put it in place."""
        root = self.staging()
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            _write_file(root / name, data)
        return self.commit()

    def commit(self) -> Path:
        """Write the manifest of the staging folder and put the folder in the target's place."""
        root = self.staging()
        write_manifest(root, self.kind)
        _fsync_dir(root)
        t = self.target
        if t.is_dir() and not any(t.iterdir()):
            t.rmdir()  # an empty folder the user made for it
        if t.exists():
            if t.is_dir() and not is_unit(t) and any(t.iterdir()):
                self.keep_staging = True
                raise OutputError(f"{self.flag}: {t} appeared while it was written and holds files NLICA Lab did not "
                                  f"write; it is never replaced (the finished unit is kept in {root})")
            if not (self.overwrite or self._written):
                self.keep_staging = True
                raise OutputError(f"{self.flag}: {t} appeared while it was written; the finished unit is kept in "
                                  f"{root} (rename it, or pass --overwrite to replace {t})")
            if _exchange(root, t):
                _fault_point()
                shutil.rmtree(root, ignore_errors=True)  # now the old unit
            else:
                aside = Path(tempfile.mkdtemp(prefix=f".{t.name}.old-", dir=t.parent))
                os.replace(t, aside / t.name)
                os.replace(root, t)
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(root, t)
        _fault_point()
        _fsync_dir(t.parent)
        self._staging, self._written = None, True
        return t
