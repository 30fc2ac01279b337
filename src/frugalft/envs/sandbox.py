"""Read-only, root-confined access to a directory tree: everything AutoExplore shows of a repository.

The agent never touches the file system directly: every path is a list of names below the root, resolved
here, with no shell and no subprocess. A path is refused when it is absolute, has an empty, ``.`` or ``..``
component, holds a control character, or leads (through symlinks) outside the root. Listings leave out
entries that would be refused (a symlink to ``/etc`` or to a parent), special files (FIFOs, devices,
sockets: reading them could block) and names with control characters. Reads are capped at ``max_bytes``;
binary files are reported as such, invalid UTF-8 is shown with replacement characters and a note, and
unreadable files give a message instead of an exception. Nothing is ever written.

Checking a path and opening it are one step, so a tree that changes meanwhile (a folder swapped for a
symlink to ``/etc``) cannot lead out: the root is opened once, and every lookup is one name opened with
``O_NOFOLLOW`` relative to the descriptor of a folder already reached from it. The kernel never follows a
symlink or a ``..`` for us; a symlink is followed by reading its target and walking that the same way, with
``..`` stepping back to a folder descriptor we hold, and refused when it would step above the root (or, if
absolute, does not name a place below the root's real path). So an in-root symlink is listed by what it
leads to, as any entry, and stays enterable; one that leads out, now or at any moment later, is hidden or
refused. Not covered: a folder *moved* out of the tree while we hold it (that needs write access outside
the root, which could as well copy the secret in).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

Rel = str | tuple[str, ...] | list[str]

# O_PATH (Linux) opens a folder for lookups only: like a path walk, it needs search, not read, permission.
_WALK = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # "." of a walked folder, reopened for scandir
# O_NONBLOCK: should a FIFO be swapped in after the type check, opening it must not block.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MAX_HOPS = 40  # symlinks followed (and lookups retried after a swap) per path, as the kernel's limit


class SandboxError(ValueError):
    """A path the sandbox refuses (outside the root, malformed, or not the right kind of entry)."""


@dataclass(frozen=True)
class Listing:
    dirs: list[str]  # sorted names of subdirectories (including in-root symlinks to directories)
    files: list[str]  # sorted names of regular files
    error: str = ""  # why the directory could not be listed, if it could not


@dataclass(frozen=True)
class FileView:
    text: str  # the file's text (decoded from at most max_bytes bytes), or a message for binary/unreadable
    size: int  # the file's size in bytes
    bytes_read: int  # how many bytes were actually read (<= max_bytes)
    binary: bool = False
    utf8: bool = True
    error: str = ""


def _bad_name(name: str) -> bool:
    return name in ("", ".", "..") or "/" in name or any(ord(c) < 32 or ord(c) == 127 for c in name)


class Sandbox:
    """Lists and reads files below ``root`` and nowhere else, even while the tree changes."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 65536) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise SandboxError(f"repository root {str(root)!r} is not a directory")
        self.root = real
        self.max_bytes = max_bytes
        self._fd = os.open(real, _WALK)  # the anchor of every lookup, for the sandbox's lifetime

    # A descriptor does not survive pickling and must not be shared by copies: they reopen the root.
    def __getstate__(self) -> dict:
        return {"root": self.root, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["max_bytes"])

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    @staticmethod
    def _parts(rel: Rel) -> list[str]:
        if isinstance(rel, str):
            if rel.startswith("/") or os.path.isabs(rel):
                raise SandboxError(f"absolute paths are refused: {rel!r}")
            parts = [] if rel in ("", ".") else rel.split("/")
        else:
            parts = list(rel)
        for p in parts:
            if not isinstance(p, str) or _bad_name(p):
                raise SandboxError(f"refused path component {p!r} in {rel!r}")
        return parts

    def _walk(self, parts: list[str], want: str | None = None,
              follow_last: bool = True) -> tuple[int | None, list[str], os.stat_result]:
        """Look ``parts`` up below the root one name at a time: (fd, names, st).

        ``names`` is the path below the root that was reached (symlinks resolved); ``st`` the status of the
        entry reached (of the symlink itself when ``follow_last`` is false). ``fd``, which the caller closes,
        is that folder opened for listing when ``want == "dir"``, that regular file opened for reading when
        ``want == "file"``, and None otherwise. Raises SandboxError for an escape or an entry of the wrong
        kind, OSError when a lookup fails (missing, permission, too many symlinks)."""
        shown = "/".join(parts)
        stack: list[int] = []  # descriptors of the folders entered below the root; names[i] names stack[i]
        names: list[str] = []
        todo = parts[::-1]  # the next name last; a symlink's target replaces the link here
        hops = 0

        def hop(name: str) -> None:
            nonlocal hops
            hops += 1
            if hops > _MAX_HOPS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)

        def back_to_root() -> None:
            while stack:
                os.close(stack.pop())
            names.clear()

        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":  # only from a symlink target (callers' names are checked): we step back
                    if not stack:
                        raise SandboxError(f"{shown!r} leads outside the repository")
                    os.close(stack.pop())
                    names.pop()
                    continue
                here = stack[-1] if stack else self._fd
                st = os.stat(name, dir_fd=here, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                    hop(name)
                    try:
                        target = os.readlink(name, dir_fd=here)
                    except OSError as e:
                        if e.errno != errno.EINVAL:
                            raise
                        todo.append(name)  # no longer a symlink: look again
                        continue
                    if target.startswith("/"):
                        top = self.root.rstrip("/") + "/"
                        if target != self.root and not target.startswith(top):
                            raise SandboxError(f"{shown!r} leads outside the repository")
                        back_to_root()
                        target = target[len(top):]
                    todo.extend(reversed(target.split("/")))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    try:
                        stack.append(os.open(name, _WALK, dir_fd=here))
                    except OSError as e:
                        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                            raise
                        hop(name)  # no longer a folder (swapped for a link or a file): look again
                        todo.append(name)
                        continue
                    names.append(name)
                    continue
                if todo:
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
                if want == "dir":
                    raise SandboxError(f"not a directory: {shown!r}")
                if want is None:
                    return None, [*names, name], st
                if not stat.S_ISREG(st.st_mode):
                    raise SandboxError(f"not a regular file: {shown!r}")
                try:
                    fd = os.open(name, _READ, dir_fd=here)
                except OSError as e:
                    if e.errno != errno.ELOOP:
                        raise
                    fd = -1  # swapped for a symlink since the check
                if fd >= 0:
                    fst = os.fstat(fd)
                    if stat.S_ISREG(fst.st_mode):
                        return fd, [*names, name], fst
                    os.close(fd)  # swapped for a FIFO or the like since the check
                hop(name)
                todo.append(name)
            # the path ends at a folder
            here = stack[-1] if stack else self._fd
            if want == "file":
                raise SandboxError(f"not a regular file: {shown!r}")
            if want == "dir":
                return os.open(".", _LIST, dir_fd=here), names, os.fstat(here)
            return None, names, os.fstat(here)
        finally:
            for fd in stack:
                os.close(fd)

    def resolve(self, rel: Rel) -> str:
        """The real absolute path of ``rel`` (a '/'-joined string or a sequence of names) as looked up now;
        raises SandboxError if it is malformed, leaves the root or cannot be looked up."""
        try:
            _, names, _ = self._walk(self._parts(rel))
        except OSError as e:
            raise SandboxError(f"cannot look up {rel!r} ({e.strerror or e})") from e
        return os.path.join(self.root, *names)

    def is_symlink(self, rel: Rel) -> bool:
        """Is the last component of ``rel`` a symlink (one that stays inside the root, or resolve raises)?"""
        parts = self._parts(rel)
        try:
            self._walk(parts)  # refuses a link that leads out
            _, _, st = self._walk(parts, follow_last=False)
        except OSError:
            return False  # dangling, or gone meanwhile
        return bool(parts) and stat.S_ISLNK(st.st_mode)

    def _kind(self, entry: os.DirEntry, where: list[str]) -> str | None:
        """"dir", "file" or None (hidden) for a listed entry; a symlink counts as what it leads to."""
        try:
            if entry.is_symlink():
                _, _, st = self._walk([*where, entry.name])  # refused when it leads out
                mode = st.st_mode
                return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None
            if entry.is_dir(follow_symlinks=False):
                return "dir"
            return "file" if entry.is_file(follow_symlinks=False) else None
        except (SandboxError, OSError):
            return None  # escapes the root, dangling, or gone meanwhile

    def listdir(self, rel: Rel = ()) -> Listing:
        parts = self._parts(rel)
        try:
            fd, where, _ = self._walk(parts, "dir")
        except PermissionError as e:
            return Listing([], [], f"cannot list this directory ({e.strerror or e})")
        except OSError as e:
            raise SandboxError(f"not a directory: {rel!r}") from e
        dirs, files = [], []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    kind = None if _bad_name(entry.name) else self._kind(entry, where)
                    if kind == "dir":
                        dirs.append(entry.name)
                    elif kind == "file":
                        files.append(entry.name)
        except OSError as e:
            return Listing([], [], f"cannot list this directory ({e.strerror or e})")
        finally:
            os.close(fd)
        return Listing(sorted(dirs), sorted(files))

    def read(self, rel: Rel) -> FileView:
        parts = self._parts(rel)
        try:
            fd, _, st = self._walk(parts, "file")
        except OSError as e:
            return FileView("", 0, 0, error=f"cannot read this file ({e.strerror or e})")
        try:
            with os.fdopen(fd, "rb") as f:  # the descriptor the walk checked: no second lookup
                data = f.read(self.max_bytes)
        except OSError as e:
            return FileView("", st.st_size, 0, error=f"cannot read this file ({e.strerror or e})")
        if b"\x00" in data[:8192]:
            return FileView("", st.st_size, len(data), binary=True)
        try:
            text, utf8 = data.decode("utf-8"), True
        except UnicodeDecodeError as e:
            # A multi-byte character cut by the byte cap is not an encoding problem.
            if len(data) == self.max_bytes and e.start >= len(data) - 3:
                text, utf8 = data[: e.start].decode("utf-8", errors="replace"), True
            else:
                text, utf8 = data.decode("utf-8", errors="replace"), False
        return FileView(text, st.st_size, len(data), utf8=utf8)
