"""Rebuild AutoExplore's pinned repository snapshot, src/frugalft/assets/autoexplore/repos.tar.xz.

    python scripts/build_autoexplore_snapshot.py [--out PATH] [--allow-other-versions]

Reads the installed packages of ``frugalft.envs.repo_tasks.BUILTIN_REPOS`` and archives, per package,
``<package>-<version>/<package>/...`` (its text files) and ``<package>-<version>/PKG-INFO`` (its METADATA),
with ``manifest.json`` first: format, and per repository its package, distribution, version and a sha256 per
file. Left out: ``__pycache__``, compiled files and any binary file (a NUL byte), which ``cat`` never shows
and no question can be about; symlinks (the sandbox does not follow them out, and an archive of links is
refused at extraction). Files are kept whole: ``cat``'s "the file has N bytes" note and the uniqueness checks
read them as installed. Refuses to archive a version other than the pinned one unless
``--allow-other-versions`` (then the manifest records the installed one). Deterministic: the same installed
files give the same archive, byte for byte (sorted members, fixed times and owners).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import lzma
import os
import sys
import tarfile
from pathlib import Path

from frugalft.atomic import atomic_path
from frugalft.envs.repo_tasks import BUILTIN_REPOS, SNAPSHOT, SNAPSHOT_FORMAT, SNAPSHOT_MANIFEST

SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib")
MTIME = 1_700_000_000  # fixed, so that rebuilding the same files gives the same bytes


def package_files(src: Path) -> dict[str, bytes]:
    """The text files below ``src``, ``/``-joined relative paths in sorted order."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(SKIP_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if b"\0" in data:
                continue
            out[path.relative_to(src).as_posix()] = data
    return dict(sorted(out.items()))


def collect(allow_other_versions: bool) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {archive member: bytes}) of every built-in repository."""
    repos, members = [], {}
    for package, dist_name, pinned, role in BUILTIN_REPOS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"{dist_name} is not installed: pip install '{dist_name}=={pinned}'")
        if dist.version != pinned and not allow_other_versions:
            sys.exit(f"{dist_name} {dist.version} is installed, not the pinned {pinned}: install the pinned "
                     "version, or pass --allow-other-versions (and update BUILTIN_REPOS to match)")
        src = Path(str(dist.locate_file(package)))
        if not (src / "__init__.py").is_file():
            sys.exit(f"cannot find the source of {package!r} at {src}")
        root = f"{package}-{dist.version}"
        files = {f"{package}/{rel}": data for rel, data in package_files(src).items()}
        meta = dist.read_text("METADATA")
        if meta:
            files["PKG-INFO"] = meta.encode("utf-8")
        hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
        repos.append({"package": package, "distribution": dist_name, "version": dist.version, "role": role,
                      "root": root, "files": hashes})
        members.update({f"{root}/{rel}": data for rel, data in files.items()})
    return {"format": SNAPSHOT_FORMAT, "repos": repos}, members


def write_archive(path: Path, manifest: dict, members: dict[str, bytes]) -> None:
    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), MTIME, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))

    with atomic_path(path) as tmp, tarfile.open(tmp, "w:xz", preset=9 | lzma.PRESET_EXTREME,
                                                 format=tarfile.PAX_FORMAT) as tar:
        add(tar, SNAPSHOT_MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        for name in sorted(members):
            add(tar, name, members[name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=SNAPSHOT)
    ap.add_argument("--allow-other-versions", action="store_true",
                    help="archive the installed versions even where they differ from BUILTIN_REPOS' pins")
    args = ap.parse_args()
    manifest, members = collect(args.allow_other_versions)
    write_archive(args.out, manifest, members)
    raw = sum(map(len, members.values()))
    for repo in manifest["repos"]:
        print(f"{repo['root']:<24} {len(repo['files']):>4} files")
    size = args.out.stat().st_size
    print(f"{args.out}: {len(members)} files, {raw / 1e6:.2f} MB of text -> {size / 1e6:.2f} MB "
          f"(sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]})")


if __name__ == "__main__":
    main()
