"""Files asyncflow-hpc writes, opened so that no other user of a shared machine can redirect them.

Every file the project writes (journal, telemetry log, report outputs, batch scripts) goes
through :func:`safe_open` or :func:`write_file`, and every folder it creates through
:func:`private_dir`. The rules:

* A file is opened with ``O_NOFOLLOW``: a symbolic link planted where the file should be is
  refused, never followed. An existing file must be a regular file of the user (a file of
  another user is refused before anything is truncated or written). New files are created
  ``O_EXCL`` (:func:`write_file` writes a new file and renames it into place).
* The folder that holds the file must belong to the user (or root) and must not be writable
  by everyone (``/tmp`` itself is refused: make a folder of your own there). Along the path
  to it, a folder anyone may write to must have the sticky bit, the entry below it must
  belong to the user or root, and a symbolic link must belong to the user or root — so no
  other user can swap a folder of the path. Group-writable folders (a project's shared
  folder) are accepted: files in them are still opened without following links and must
  belong to the user.
* Folders created are mode 0700, parents included, whatever the umask.

A refusal is an :class:`~asyncflow_hpc.errors.UnsafePathError` naming the path and the reason.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

from .errors import UnsafePathError

__all__ = ["check_dir", "private_dir", "safe_open", "write_file"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _trusted(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def _check_chain(path: str) -> None:
    """Walk ``path`` (absolute) component by component, resolving links ourselves."""
    pending = list(reversed(path.split("/")))
    cur = "/"
    holder = os.stat("/")  # the folder that holds the next component
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            cur = os.path.dirname(cur)
            holder = os.stat(cur)
            continue
        nxt = os.path.join(cur, name)
        st = os.lstat(nxt)
        if holder.st_mode & stat.S_IWOTH:
            if not holder.st_mode & stat.S_ISVTX:
                raise UnsafePathError(
                    f"refusing to use {path}: anyone may change the folder {cur} "
                    f"(mode {stat.S_IMODE(holder.st_mode):04o}, no sticky bit)", path)
            if not _trusted(st.st_uid):
                raise UnsafePathError(
                    f"refusing to use {path}: {nxt} belongs to user {_user(st.st_uid)} in the "
                    f"shared folder {cur}", path)
        if stat.S_ISLNK(st.st_mode):
            if not _trusted(st.st_uid):
                raise UnsafePathError(
                    f"refusing to use {path}: {nxt} is a symbolic link of user "
                    f"{_user(st.st_uid)}", path)
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(nxt)
            if target.startswith("/"):
                cur, holder = "/", os.stat("/")
            pending.extend(reversed(target.split("/")))
            continue
        cur, holder = nxt, st


def check_dir(path: str | os.PathLike) -> os.stat_result:
    """Refuse a folder in which another user could plant, swap or redirect our files.

    Returns the folder's ``os.stat`` result; raises :class:`UnsafePathError` (or the
    ``OSError`` of a folder that does not exist).
    """
    p = os.path.abspath(os.fspath(path))
    _check_chain(p)
    st = os.stat(p)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", p)
    if st.st_mode & stat.S_IWOTH:
        raise UnsafePathError(f"refusing to write in {p}: anyone may write to this folder "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}); use a folder of your own",
                              p)
    if not _trusted(st.st_uid):
        raise UnsafePathError(f"refusing to write in {p}: the folder belongs to user "
                              f"{_user(st.st_uid)}", p)
    return st


def private_dir(path: str | os.PathLike, mode: int = 0o700) -> str:
    """Create ``path`` and the parents it lacks, each ``mode`` (0700; 0750 to share with the
    group, never more); check it; return it.

    A folder that exists already keeps its mode (it must pass :func:`check_dir`).
    """
    mode &= 0o750
    p = os.path.abspath(os.fspath(path))
    missing = []
    cur = p
    while not os.path.lexists(cur):
        missing.append(cur)
        cur = os.path.dirname(cur)
    if missing:
        _check_chain(cur)  # do not create anything under a folder another user controls
        st = os.stat(cur)
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(f"refusing to use {p}: anyone may change the folder {cur} "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o}, no sticky bit)", p)
        for d in reversed(missing):
            try:
                os.mkdir(d, mode)
            except FileExistsError:
                continue  # made by a concurrent run (checked below)
            os.chmod(d, mode)  # the umask can take bits away (0500 under umask 0277)
    check_dir(p)
    return p


def _open_dir(parent: str, make_dirs: bool) -> int:
    if make_dirs:
        private_dir(parent)
    st = check_dir(parent)
    dfd = os.open(parent, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    dst = os.fstat(dfd)
    if (dst.st_dev, dst.st_ino) != (st.st_dev, st.st_ino):
        os.close(dfd)
        raise UnsafePathError(f"refusing to write in {parent}: it changed while being checked",
                              parent)
    return dfd


def _split(path: str | os.PathLike) -> tuple[str, str, str]:
    p = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(p)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file", p)
    return p, parent, name


def safe_open(path: str | os.PathLike, flags: int, mode: int = 0o600, *,
              make_dirs: bool = False) -> int:
    """``os.open(path, flags, mode)`` that follows no link and writes only files of the user.

    ``O_TRUNC`` takes effect only after the checks (a file of another user is never
    truncated). A file opened for writing is made ``mode`` if its mode differs. With
    ``make_dirs`` the missing parent folders are created 0700. Returns the descriptor.
    """
    p, parent, name = _split(path)
    dfd = _open_dir(parent, make_dirs)
    try:
        try:
            fd = os.open(name, (flags & ~os.O_TRUNC) | _NOFOLLOW | _CLOEXEC | _NONBLOCK, mode,
                         dir_fd=dfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafePathError(f"refusing to open {p}: it is a symbolic link", p) from None
            if exc.errno == errno.ENXIO:  # a FIFO without reader
                raise UnsafePathError(f"refusing to open {p}: not a regular file", p) from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"refusing to open {p}: not a regular file", p)
        if st.st_uid != os.geteuid():
            raise UnsafePathError(f"refusing to open {p}: it belongs to user {_user(st.st_uid)}",
                                  p)
        os.set_blocking(fd, True)
        if flags & (os.O_WRONLY | os.O_RDWR):
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)  # an existing file keeps its mode on open: make it private
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(path: str | os.PathLike, data: bytes, mode: int = 0o600, *,
               make_dirs: bool = False) -> str:
    """Write ``data`` to a new file (``O_EXCL``) beside ``path`` and rename it onto ``path``.

    A symbolic link or another user's file at ``path`` is refused, not replaced. Readers
    never see a half-written file. Returns the absolute path.
    """
    p, parent, name = _split(path)
    dfd = _open_dir(parent, make_dirs)
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(f"refusing to write {p}: it is a symbolic link", p)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(f"refusing to write {p}: not a regular file", p)
            if st.st_uid != os.geteuid():
                raise UnsafePathError(f"refusing to write {p}: it belongs to user "
                                      f"{_user(st.st_uid)}", p)
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode,
                     dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    finally:
        os.close(dfd)
    return p
