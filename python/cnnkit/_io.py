"""Atomic file writes (temp file in the same folder, fsync, os.replace, fsync of the folder): what every writer of
model files, checkpoints and histories uses, so an interrupted write leaves the previous file intact."""
import os
import tempfile
import threading


_UMASK_LOCK = threading.Lock()


def current_umask():
    """The process's umask, read without changing it where Linux reports it (/proc/self/status), else by
    setting and restoring it under a lock (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


TEMP_SUFFIX = ".tmp"


def temp_prefix(path):
    """The prefix of atomic_write's temporary files for `path`: "." + name + "." (then mkstemp's 8 random
    characters and TEMP_SUFFIX), so they are hidden and name the file they will become."""
    return "." + os.path.basename(path) + "."


def atomic_write(path, data):
    """Write bytes to path atomically: temp file in the same folder, fsync, os.replace, fsync the folder.
    The file gets the mode a plain open() would give it (0o666 less the umask), not mkstemp's 0o600."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = ["atomic_write", "current_umask", "temp_prefix", "TEMP_SUFFIX"]
