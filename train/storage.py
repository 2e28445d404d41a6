"""Local paths and storage URIs (s3://, gs://, file://) behind one small interface, via pyarrow.fs.

Ray Train needs shared storage once a run spans nodes, and replicas on a cluster read the model
from the same place; credentials and endpoints come from the environment (AWS_*, GOOGLE_*).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def is_uri(location: str) -> bool:
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts]) if is_uri(location) else str(Path(location, *parts))


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_bytes(location: str) -> bytes:
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = _fs(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_text(location: str, text: str) -> None:
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    fs, path = _fs(location)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def list_dirs(location: str) -> list[str]:
    """Names of the directories directly under location ([] when it does not exist)."""
    if not is_uri(location):
        return sorted(p.name for p in Path(location).glob("*") if p.is_dir())
    import pyarrow.fs

    fs, path = _fs(location)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(Path(i.path).name for i in infos if i.type == pyarrow.fs.FileType.Directory)


def upload_dir(local: Path, location: str) -> None:
    """Copy a local directory to location, replacing what was there."""
    if not is_uri(location):
        if Path(location).exists():
            shutil.rmtree(location)
        shutil.copytree(local, location)
        return
    import pyarrow.fs

    fs, path = _fs(location)
    fs.delete_dir_contents(path, missing_dir_ok=True)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)


def resolve_inside(root: Path, name: str) -> Path:
    """root/name, refused (ValueError) unless it resolves inside root: '..', an absolute name or a
    symlink can point anywhere the process may write."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{root}: file name {name!r} resolves outside the folder, to {path}")
    return path


def download_files(location: str, names: list[str], target: Path, contents: dict[str, bytes] | None = None,
                   check: Callable[[Path], None] | None = None) -> None:
    """Copy the named files under location into target, atomically: into a temp dir beside target,
    plus `contents` (bytes the caller already fetched and checked, written as they are), then
    `check(temp dir)`, then a rename into place. Every name is confined to the temp dir before any
    file is opened for writing, so a hostile name cannot write elsewhere."""
    fs, root = _fs(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        paths = {name: resolve_inside(staging, name) for name in [*names, *(contents or {})]}
        for name in names:
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{root.rstrip('/')}/{name}") as src, open(paths[name], "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        for name, data in (contents or {}).items():
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            paths[name].write_bytes(data)
        if check is not None:
            check(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.exists():  # another replica on this node may have won the race
            raise
