"""Read-only, root-confined access to a directory tree: everything AutoExplore shows of a repository.

The agent never touches the file system directly: every path is a list of names below the root, resolved
here, with no shell and no subprocess. A path is refused when it is absolute, has an empty, ``.`` or ``..``
component, holds a control character, or resolves (after following symlinks) outside the root. Listings
leave out entries that would be refused (a symlink to ``/etc`` or to a parent), special files (FIFOs,
devices, sockets: reading them could block) and names with control characters. Reads are capped at
``max_bytes``; binary files are reported as such, invalid UTF-8 is shown with replacement characters and a
note, and unreadable files give a message instead of an exception. Nothing is ever written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


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
    """Lists and reads files below ``root`` and nowhere else."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 65536) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise SandboxError(f"repository root {str(root)!r} is not a directory")
        self.root = real
        self.max_bytes = max_bytes

    def resolve(self, rel: str | tuple[str, ...] | list[str]) -> str:
        """The real absolute path of ``rel`` (a '/'-joined string or a sequence of names); raises SandboxError
        if it is malformed or leaves the root."""
        if isinstance(rel, str):
            if rel.startswith("/") or os.path.isabs(rel):
                raise SandboxError(f"absolute paths are refused: {rel!r}")
            parts = [] if rel in ("", ".") else rel.split("/")
        else:
            parts = list(rel)
        for p in parts:
            if _bad_name(p):
                raise SandboxError(f"refused path component {p!r} in {rel!r}")
        real = os.path.realpath(os.path.join(self.root, *parts))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise SandboxError(f"{'/'.join(parts)!r} leads outside the repository")
        return real

    def is_symlink(self, rel: str | tuple[str, ...] | list[str]) -> bool:
        """Is the last component of ``rel`` a symlink (one that stays inside the root, or resolve raises)?"""
        self.resolve(rel)
        parts = list(rel) if not isinstance(rel, str) else rel.split("/")
        return os.path.islink(os.path.join(self.root, *parts))

    def listdir(self, rel: str | tuple[str, ...] | list[str] = ()) -> Listing:
        real = self.resolve(rel)
        if not os.path.isdir(real):
            raise SandboxError(f"not a directory: {rel!r}")
        try:
            names = sorted(os.listdir(real))
        except OSError as e:
            return Listing([], [], f"cannot list this directory ({e.strerror or e})")
        base = list(rel) if not isinstance(rel, str) else ([] if rel in ("", ".") else rel.split("/"))
        dirs, files = [], []
        for name in names:
            if _bad_name(name):
                continue
            try:
                child = self.resolve([*base, name])
                st = os.stat(child)
            except (SandboxError, OSError):
                continue  # escapes the root, or a dangling link
            if stat.S_ISDIR(st.st_mode):
                dirs.append(name)
            elif stat.S_ISREG(st.st_mode):
                files.append(name)
        return Listing(dirs, files)

    def read(self, rel: str | tuple[str, ...] | list[str]) -> FileView:
        real = self.resolve(rel)
        try:
            st = os.stat(real)
        except OSError as e:
            return FileView("", 0, 0, error=f"cannot read this file ({e.strerror or e})")
        if not stat.S_ISREG(st.st_mode):
            raise SandboxError(f"not a regular file: {rel!r}")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            try:
                chunks, left = [], self.max_bytes
                while left > 0:
                    chunk = os.read(fd, min(left, 65536))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
            finally:
                os.close(fd)
        except OSError as e:
            return FileView("", st.st_size, 0, error=f"cannot read this file ({e.strerror or e})")
        data = b"".join(chunks)
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
