"""Getting MovieLens onto disk: the sources, the download, and the verified cache.

`fetch_movielens` returns a folder of verified data files, from the cache when it holds them.
Otherwise it installs them from an archive placed in the cache by hand, or downloads one: for
ML-100K the GroupLens archive first and the ``recbole`` wheel on PyPI where GroupLens cannot be
reached (its link looked up on PyPI's simple index, a known URL as fallback).

`pooch` does the download itself: streaming with a timeout and a tqdm bar on a terminal, the
pinned digest checked before the archive leaves its scratch folder. The rest is done here,
because pooch's archive handling keeps the archive and extracts it unchecked and not atomically:
picking the data files out of the archive, checking each against a pinned SHA-256 where one is
published, writing them atomically, and recording their digests in a ``SHA256SUMS`` manifest
that later runs verify the cache against.
"""

from __future__ import annotations

import contextlib
import hashlib
import html.parser
import http.client
import io
import logging
import os
import re
import sys
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TypedDict

import pooch

from pprsf_jax.data.grouplens import GROUPLENS_FILES, ML1M_FILES
from pprsf_jax.data.tables import ChecksumError, DataUnavailableError

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "PPRSF_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30.0
_USER_AGENT = "pprsf_jax-movielens/0.1 (pooch)"
_CHUNK_BYTES = 1 << 16  # pooch's default of 1 KiB flushes the file a thousand times per MB
# Written next to extracted files: their SHA-256, recorded once the archive itself verified.
# It stands in for per-file digests where none are published (the GroupLens files).
_MANIFEST = "SHA256SUMS"


class SourceSpec(TypedDict):
  """One way to obtain a dataset: an archive whose members are the data files.

  Attributes:
    label: Human-readable name used in error messages.
    format: Layout of the extracted files, ``"grouplens"``, ``"grouplens-1m"`` or ``"recbole"``.
    subdir: Cache sub-folder the files are extracted into.
    archive: File name of the archive (also where a hand-placed copy is looked for).
    index_url: A PyPI "simple" index page to look the archive up on first, or None.
    urls: Known download URLs, tried in order after the index.
    archive_digest: ``(algorithm, hex digest)`` of the whole archive.
    members: Local file name -> path of that member inside the archive.
    file_sha256: Local file name -> SHA-256 of the extracted file, where known.
  """

  label: str
  format: str
  subdir: str
  archive: str
  index_url: str | None
  urls: tuple[str, ...]
  archive_digest: tuple[str, str]
  members: dict[str, str]
  file_sha256: dict[str, str]


# Every URL and checksum lives here, keyed by dataset name, sources in order of preference.
# Another dataset is one more entry, plus a reader for its layout if it is new.
DATASET_SOURCES: dict[str, tuple[SourceSpec, ...]] = {
    "ml-100k": (
        {
            "label": "GroupLens archive",
            "format": "grouplens",
            "subdir": "ml-100k",
            "archive": "ml-100k.zip",
            "index_url": None,
            "urls": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",),
            "archive_digest": ("md5", "0e33842e24a9c977be4e0107933c0723"),
            "members": {name: f"ml-100k/{name}" for name in GROUPLENS_FILES},
            "file_sha256": {},  # not published; the manifest is written after the md5 check
        },
        {
            "label": "recbole 1.2.1 wheel on PyPI",
            "format": "recbole",
            "subdir": "ml-100k-recbole",
            "archive": "recbole-1.2.1-py3-none-any.whl",
            "index_url": "https://pypi.org/simple/recbole/",
            "urls": (
                "https://files.pythonhosted.org/packages/ab/fe/"
                "7d606cb7cd2b166a36b100cb9435d21014ceee16c192d972deb0976967a8/"
                "recbole-1.2.1-py3-none-any.whl",
            ),
            "archive_digest": (
                "sha256",
                "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            ),
            "members": {
                f"ml-100k.{ext}": f"recbole/dataset_example/ml-100k/ml-100k.{ext}"
                for ext in ("inter", "user", "item")
            },
            "file_sha256": {
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            },
        },
    ),
    "ml-1m": (
        {
            "label": "GroupLens archive",
            "format": "grouplens-1m",
            "subdir": "ml-1m",
            "archive": "ml-1m.zip",
            "index_url": None,
            "urls": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip",),
            # GroupLens publishes ml-1m.zip.md5 beside the archive.
            "archive_digest": ("md5", "c4d9eecfca2ab87c1945afe126590906"),
            "members": {name: f"ml-1m/{name}" for name in ML1M_FILES},
            "file_sha256": {},  # not published; the manifest is written after the md5 check
        },
    ),
}

# What a failed source may raise (requests' errors are OSErrors, pooch's digest mismatch a
# ValueError); anything else is a bug and propagates.
_FETCH_ERRORS = (OSError, ValueError, http.client.HTTPException, zipfile.BadZipFile, zlib.error)


def default_cache_dir() -> Path:
  """Returns ``$PPRSF_DATA_DIR`` if set, else ``~/.cache/pprsf_jax``."""
  configured = os.environ.get(CACHE_ENV_VAR)
  if configured:
    return Path(configured).expanduser()
  return Path.home() / ".cache" / "pprsf_jax"


# ---- Network --------------------------------------------------------------------------------


def _download(url: str, output: str | BinaryIO, progress: bool = False) -> None:
  """Writes the body at `url` to `output`, a file name or a binary stream.

  All network access of this module goes through here. pooch's downloader streams the body with
  `requests`, under our timeout and User-Agent, with a tqdm bar when `progress`.
  """
  downloader = pooch.HTTPDownloader(
      progressbar=progress,
      chunk_size=_CHUNK_BYTES,
      timeout=DOWNLOAD_TIMEOUT_S,
      headers={"User-Agent": _USER_AGENT},
  )
  downloader(url, output, None)


@contextlib.contextmanager
def _pooch_quiet() -> Iterator[None]:
  """Holds back pooch's INFO lines: they name the scratch file, and our logger says the rest."""
  pooch_logger = pooch.get_logger()
  level = pooch_logger.level
  pooch_logger.setLevel(max(level, logging.WARNING))
  try:
    yield
  finally:
    pooch_logger.setLevel(level)


def _download_archive(url: str, source: SourceSpec) -> bytes:
  """Downloads the archive of `source` from `url` and returns it once its digest checks out.

  pooch streams into a scratch folder and deletes a download whose digest is wrong; the archive
  is not kept, only the data files `_install` takes out of it.
  """
  algorithm, digest = source["archive_digest"]
  progress = bool(sys.stderr and sys.stderr.isatty())  # a bar for a person, not for logs
  with tempfile.TemporaryDirectory(prefix="pprsf-download-") as scratch, _pooch_quiet():
    path = pooch.retrieve(
        url,
        known_hash=f"{algorithm}:{digest}",
        fname=source["archive"],
        path=scratch,
        downloader=lambda link, output, _pooch: _download(link, output, progress),
    )
    return Path(path).read_bytes()


class _LinkCollector(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.hrefs: list[str] = []

  def handle_starttag(self, tag, attrs):
    if tag == "a":
      self.hrefs.extend(value for key, value in attrs if key == "href" and value)


def _find_archive_link(page: str, filename: str, base_url: str) -> str | None:
  """Returns the absolute URL (fragment dropped) of the link to `filename` on an index page."""
  collector = _LinkCollector()
  collector.feed(page)
  for href in collector.hrefs:
    url = urllib.parse.urldefrag(urllib.parse.urljoin(base_url, href)).url
    if urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1] == filename:
      return url
  return None


def _failed(attempts: list[tuple[str, str]], where: str, err: BaseException | str) -> None:
  """Records a source that did not work, for the final error, and says so as it happens."""
  error = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
  logger.info("%s failed: %s", where, error)
  attempts.append((where, error))


def _archive_urls(source: SourceSpec, attempts: list[tuple[str, str]]) -> list[str]:
  """Download URLs for `source`: the package index's link first (if any), then the known ones."""
  urls = []
  index_url = source["index_url"]
  if index_url:
    where = f"package index {index_url}"
    try:
      page = io.BytesIO()
      _download(index_url, page)
      link = _find_archive_link(page.getvalue().decode("utf-8", errors="replace"),
                                source["archive"], index_url)
      if link is None:
        _failed(attempts, where, f"no link to {source['archive']}")
      else:
        urls.append(link)
    except _FETCH_ERRORS as err:
      _failed(attempts, where, err)
  urls.extend(url for url in source["urls"] if url not in urls)
  return urls


# ---- Cache ----------------------------------------------------------------------------------


def _hexdigest(data: bytes, algorithm: str) -> str:
  return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def _verify(data: bytes, algorithm: str, expected: str, what: str) -> None:
  actual = _hexdigest(data, algorithm)
  if actual != expected.lower():
    raise ChecksumError(f"{what}: {algorithm} mismatch, expected {expected}, got {actual}")


def _atomic_write(path: Path, data: bytes) -> None:
  """Writes via a temporary file and os.replace, so `path` is either absent or complete."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
  try:
    with os.fdopen(handle, "wb") as stream:
      stream.write(data)
      stream.flush()
      os.fsync(stream.fileno())
    os.chmod(temporary, 0o644)  # mkstemp makes files private; cached data need not be
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise


def _read_manifest(folder: Path) -> dict[str, str]:
  try:
    text = (folder / _MANIFEST).read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError):
    return {}
  digests = {}
  for line in text.splitlines():
    digest, _, name = line.partition("  ")
    if name and re.fullmatch(r"[0-9a-f]{64}", digest):
      digests[name] = digest
  return digests


def _cache_problem(folder: Path, source: SourceSpec) -> str | None:
  """Returns why the cached copy of `source` is not usable, or None when every file verifies."""
  expected = {**_read_manifest(folder), **source["file_sha256"]}  # the table wins
  for name in source["members"]:
    path = folder / name
    if not path.is_file():
      return f"{name} is missing"
    if name not in expected:
      return f"{name} has no recorded checksum"
    try:
      actual = _hexdigest(path.read_bytes(), "sha256")
    except OSError as err:
      return f"{name} cannot be read ({err})"
    if actual != expected[name].lower():
      return f"{name}: sha256 mismatch, expected {expected[name]}, got {actual}"
  return None


def _install(archive: bytes, origin: str, source: SourceSpec, cache: Path) -> Path:
  """Extracts the data files of a verified archive into the cache, returns their folder.

  The archive's own digest is checked by the caller (pooch, for a download). Every member is
  checked in memory before the first write, so a bad archive leaves nothing.
  """
  payloads = {}
  with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
    for name, member in source["members"].items():
      try:
        data = bundle.read(member)
      except KeyError:
        raise zipfile.BadZipFile(f"{origin}: no member {member}") from None
      if name in source["file_sha256"]:
        _verify(data, "sha256", source["file_sha256"][name], f"{member} in {origin}")
      payloads[name] = data
  folder = cache / source["subdir"]
  for name, data in payloads.items():
    _atomic_write(folder / name, data)
  # Written last: an interrupted install leaves files that do not verify, so it is redone.
  manifest = "".join(f"{_hexdigest(data, 'sha256')}  {name}\n" for name, data in payloads.items())
  _atomic_write(folder / _MANIFEST, manifest.encode("utf-8"))
  logger.info("installed %s from %s into %s", ", ".join(payloads), origin, folder)
  return folder


def _install_local(path: Path, source: SourceSpec, cache: Path) -> Path:
  """Installs from an archive placed in the cache by hand, once its digest checks out."""
  archive = path.read_bytes()
  algorithm, expected = source["archive_digest"]
  _verify(archive, algorithm, expected, str(path))
  return _install(archive, str(path), source, cache)


def _manual_instructions(name: str, sources: Sequence[SourceSpec], cache: Path) -> str:
  lines = [f"To install {name} by hand, put one of these in place and call load_movielens again:"]
  for source in sources:
    members = ", ".join(source["members"])
    inside = os.path.dirname(next(iter(source["members"].values()))) or "the top level"
    folder = cache / source["subdir"]
    lines.append(
        f"  - {source['format']}: the archive {source['archive']} into {cache}{os.sep}"
        f" (from {' or '.join(source['urls'])}; {source['archive_digest'][0]}"
        f" {source['archive_digest'][1]}),"
    )
    lines.append(f"    or its files {members} (under {inside} in it) into {folder}{os.sep}")
    if not source["file_sha256"]:
      # Without published digests these files cannot be verified, so they are not picked up.
      lines.append(f"    and call load_movielens({str(folder)!r}) on that folder"
                   f" (with `pprsf run`: data.source={folder})")
  lines.append(
      "Any folder holding u.data, u.user, u.item (GroupLens ML-100K), ratings.dat, users.dat,"
      " movies.dat (GroupLens ML-1M) or <name>.inter, <name>.user, <name>.item (RecBole) can"
      " also be passed to load_movielens(path), which reads it without checksum checks."
  )
  return "\n".join(lines)


def fetch_movielens(name: str = "ml-100k", cache_dir: str | os.PathLike[str] | None = None) -> Path:
  """Returns a folder of verified data files for `name`, downloading only if the cache lacks it.

  Sources, in order: verified files already in the cache (either layout); an archive placed in
  the cache folder by hand; each source of `DATASET_SOURCES[name]` over the network (for
  ML-100K the GroupLens archive, then the ``recbole`` wheel on PyPI, looked up on PyPI's simple
  index with a known URL as fallback). Archives are checked against pinned digests, extracted
  files too where digests are known; nothing unverified is written and every write is atomic.

  Args:
    name: Dataset name, a key of `DATASET_SOURCES`.
    cache_dir: Cache root; defaults to `default_cache_dir()`.

  Returns:
    The folder holding the files, in the layout of the source that provided them.

  Raises:
    ValueError: `name` is not a known dataset.
    DataUnavailableError: No source worked; the message lists each with its error and explains
      where to place the files by hand.
  """
  if name not in DATASET_SOURCES:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_SOURCES))}")
  sources = DATASET_SOURCES[name]
  cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  attempts: list[tuple[str, str]] = []

  for source in sources:
    folder = cache / source["subdir"]
    problem = _cache_problem(folder, source)
    if problem is None:
      logger.debug("%s: verified files in %s", name, folder)
      return folder
    if folder.exists():
      _failed(attempts, f"cached {folder}", problem)

  for source in sources:
    local = cache / source["archive"]
    if local.is_file():
      try:
        return _install_local(local, source, cache)
      except _FETCH_ERRORS as err:
        _failed(attempts, f"{source['label']} {local}", err)

  for source in sources:
    for url in _archive_urls(source, attempts):
      logger.info("%s: downloading the %s from %s", name, source["label"], url)
      try:
        return _install(_download_archive(url, source), url, source, cache)
      except _FETCH_ERRORS as err:
        _failed(attempts, f"{source['label']} {url}", err)

  tried = "\n".join(f"  - {where}: {error}" for where, error in attempts)
  raise DataUnavailableError(
      f"could not obtain dataset {name!r}. Tried:\n{tried}\n"
      + _manual_instructions(name, sources, cache),
      attempts,
  )
