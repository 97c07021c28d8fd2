"""Download, verify and extract a dataset's archives into its root folder.

``download_and_extract(root, archives)`` does, for each :class:`Archive` in turn:

1. stream the URL to ``root/.deepmetric-download/<filename>.part`` (resuming a ``.part`` left by
   an interrupted run with an HTTP ``Range`` request; a server that ignores ``Range`` sends the
   whole file and the download starts over), with a progress bar on a terminal;
2. check the published MD5/SHA-256 when the archive has one, then rename ``.part`` to the
   archive's name;
3. extract it (zip or tar, detected from the content) into a staging folder, refusing members
   that would land outside it (absolute paths, ``..``, links pointing out, device files);
4. delete the archive once extracted (as the reference does), leaving a marker so a rerun skips it.

Only when every archive is extracted are the staging folder's entries moved into ``root`` and
the work folder removed, so an interrupted download never leaves a half-extracted dataset that
loads; rerunning with ``download=True`` picks up where it stopped.
"""

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass

WORK_DIR = ".deepmetric-download"
_STAGING = "extracted"
_CHUNK = 1 << 20


class DownloadError(urllib.error.URLError):
    """A dataset file could not be downloaded; the message names the URL, the file and why.

    Subclasses ``urllib.error.URLError`` (an ``OSError``), the reference's error for a failed
    download."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class ChecksumError(DownloadError):
    """A downloaded archive's checksum differs from the published one."""


class ArchiveError(ValueError):
    """An archive that cannot be extracted safely: corrupt, not an archive, or with members
    that would be written outside the dataset folder."""


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its URL, the name it is saved under, and its published checksums
    (``None`` where none is published)."""

    url: str
    filename: str
    md5: str = None
    sha256: str = None


def has_unfinished_download(root):
    """True when ``root`` holds the work folder of a download that did not finish."""
    return os.path.isdir(os.path.join(root, WORK_DIR))


def download_and_extract(root, archives, timeout=60):
    """Fetch, verify and extract ``archives`` into ``root`` (see the module docstring)."""
    work = os.path.join(root, WORK_DIR)
    staging = os.path.join(work, _STAGING)
    os.makedirs(staging, exist_ok=True)
    for archive in archives:
        marker = os.path.join(work, archive.filename + ".extracted")
        if os.path.exists(marker):
            continue
        path = os.path.join(work, archive.filename)
        if not os.path.exists(path):
            fetch(archive, path, timeout=timeout)
        extract(path, staging, archive.url)
        with open(marker, "w"):
            pass
        os.remove(path)
    for name in sorted(os.listdir(staging)):
        target = os.path.join(root, name)
        if os.path.lexists(target):
            raise ArchiveError(
                f"cannot move the extracted {name!r} into {root!r}: {target!r} already exists; "
                f"remove it and download again"
            )
        os.replace(os.path.join(staging, name), target)
    shutil.rmtree(work)


def fetch(archive, path, timeout=60):
    """Download ``archive.url`` to ``path`` through ``path + '.part'``, resuming a partial
    ``.part``; verify the published checksums; raise :class:`DownloadError` on failure (the
    ``.part`` is kept so that the next call resumes) or :class:`ChecksumError` (the ``.part`` is
    deleted: resuming cannot repair it)."""
    part = path + ".part"
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    response, offset, total = _open(archive.url, part, offset, timeout)
    if response is not None:
        with response:
            _stream(response, archive, part, offset, total)
    _verify(archive, part)
    os.replace(part, path)


def _open(url, part, offset, timeout):
    """``(response, offset, total)``: a response to read from ``offset`` on (``None`` when the
    ``.part`` is already complete) and the file's full size (``None`` if unknown)."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left after offset: complete, or a stale .part
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total == offset:
                return None, offset, total
            os.remove(part)
            return _open(url, part, 0, timeout)
        raise DownloadError(f"downloading {url} to {part} failed: HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        reason = getattr(err, "reason", err)
        raise DownloadError(f"downloading {url} to {part} failed: {reason}") from err
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html"):
        response.close()
        raise DownloadError(
            f"downloading {url} to {part} failed: the server sent an HTML page instead of the "
            "archive (a login, quota or confirmation page?)"
        )
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None else None
    if offset and response.status == 206:
        start = _start_from_content_range(response.headers.get("Content-Range"))
        if start != offset:
            response.close()
            raise DownloadError(
                f"downloading {url} to {part} failed: asked to resume at byte {offset}, the "
                f"server answered from byte {start}"
            )
        total = _total_from_content_range(response.headers.get("Content-Range"))
        return response, offset, total if total is not None else _plus(offset, length)
    return response, 0, length  # a full answer: start over (the server ignored Range)


def _stream(response, archive, part, offset, total):
    from tqdm.auto import tqdm

    url = archive.url
    done = offset
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, desc=archive.filename,
        disable=None,  # quiet when stderr is not a terminal
    )
    try:
        with open(part, "ab" if offset else "wb") as f, bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as err:  # reset, timeout, short read, disk full
        raise DownloadError(
            f"downloading {url} to {part} failed after {done} bytes: {err}; "
            "the partial file is kept and the next download resumes from it"
        ) from err
    if total is not None and done != total:
        raise DownloadError(
            f"downloading {url} to {part} failed: the connection closed after {done} of {total} "
            "bytes; the partial file is kept and the next download resumes from it"
        )


def _verify(archive, part):
    for algorithm in ("md5", "sha256"):
        expected = getattr(archive, algorithm)
        if expected is None:
            continue
        actual = file_digest(part, algorithm)
        if actual != expected.lower():
            os.remove(part)
            raise ChecksumError(
                f"{archive.url} downloaded to {part} has {algorithm} {actual}, but the published "
                f"{algorithm} is {expected}; the file was deleted, download again"
            )


def file_digest(path, algorithm="md5"):
    """Hex digest of the file at ``path``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def extract(path, dest, url=""):
    """Extract the zip or tar archive at ``path`` into ``dest``, refusing unsafe members. A
    corrupt archive is deleted (so the next download fetches it again) and reported."""
    source = f" (from {url})" if url else ""
    try:
        if zipfile.is_zipfile(path):
            _extract_zip(path, dest)
        elif tarfile.is_tarfile(path):
            _extract_tar(path, dest)
        else:
            raise ArchiveError(f"{path}{source} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        os.remove(path)
        raise ArchiveError(f"{path}{source} is corrupt ({err}); it was deleted, download again") from err


def _extract_zip(path, dest):
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            _check_inside(dest, info.filename, path)
        archive.extractall(dest)  # verifies each member's CRC-32


def _extract_tar(path, dest):
    with tarfile.open(path, "r:*") as archive:
        for member in archive:  # streams: a member is checked, then written
            _check_tar_member(dest, member, path)
            if hasattr(tarfile, "data_filter"):
                archive.extract(member, dest, filter="data")
            else:  # Python without extraction filters: the checks above are the guard
                archive.extract(member, dest)


def _check_tar_member(dest, member, path):
    _check_inside(dest, member.name, path)
    if member.isdev() or member.isfifo():
        raise ArchiveError(f"{path}: member {member.name!r} is a device or pipe; refusing to extract it")
    if member.issym():
        _check_inside(dest, os.path.join(os.path.dirname(member.name), member.linkname), path, member.name)
    elif member.islnk():
        _check_inside(dest, member.linkname, path, member.name)


def _check_inside(dest, name, path, member=None):
    """Raise :class:`ArchiveError` unless ``dest/name`` stays inside ``dest``."""
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, name))
    unsafe = os.path.isabs(name) or os.path.splitdrive(name)[0] or os.path.commonpath([root, target]) != root
    if unsafe:
        what = f"member {member!r} links to {name!r}" if member else f"member {name!r}"
        raise ArchiveError(f"{path}: {what}, which is outside the dataset folder; refusing to extract")


def _start_from_content_range(value):
    # "bytes 100-199/200" -> 100
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _total_from_content_range(value):
    # "bytes 100-199/200" or "bytes */200" -> 200; "*" (unknown) -> None
    try:
        total = value.rsplit("/", 1)[1]
        return None if total == "*" else int(total)
    except (AttributeError, IndexError, ValueError):
        return None


def _plus(offset, length):
    return None if length is None else offset + length
