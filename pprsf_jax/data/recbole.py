"""Reader for RecBole atomic files, the layout of MovieLens-100K inside the ``recbole`` wheel.

``<name>.inter``, ``<name>.user``, ``<name>.item``: UTF-8 (accented titles), tab-separated, a
``name:type`` header line. ``release_year`` is derived from the title, not GroupLens' release
date, so a few years differ from the GroupLens layout; item 267 has ``unkonwn`` (sic) and item
1412 has ``V``. Anything that is not a year reads as 0 ("unknown").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pprsf_jax.data.parsing import (GENRE_INDEX, INT32, Files, Item, Ratings, User, assemble,
                                    data_lines, parse_gender, parse_id, parse_int, parse_rating,
                                    parse_timestamp, split_fields)
from pprsf_jax.data.tables import DataFormatError, MovieLensTables

_COLUMNS = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "user": ("user_id", "age", "gender", "occupation", "zip_code"),
    "item": ("item_id", "release_year", "class"),
}
_YEAR_RE = re.compile(r"[0-9]{1,4}")


def _atomic_rows(path: Path, required: Sequence[str]) -> list[tuple[int, list[str]]]:
  """Reads a RecBole atomic file into rows holding just the `required` columns, in that order.

  Raises:
    DataFormatError: Missing or malformed file, header lacking a required column, a row whose
      field count differs from the header's.
  """
  lines = data_lines(path, "utf-8-sig")
  header_line, header = lines[0]
  # "user_id:token" -> "user_id"; the declared type is not needed to read the value.
  names = [column.split(":", 1)[0].strip() for column in header.split("\t")]
  position: dict[str, int] = {}
  for k, column in enumerate(names):
    if column in position:
      raise DataFormatError(path, header_line, f"header repeats column {column!r}")
    position[column] = k
  missing = [column for column in required if column not in position]
  if missing:
    raise DataFormatError(
        path, header_line, f"header lacks column(s) {', '.join(missing)} (found: {header!r})"
    )
  picks = [position[column] for column in required]
  rows = []
  for number, line in lines[1:]:
    fields = split_fields(line, "\t", len(names), path, number)
    rows.append((number, [fields[k] for k in picks]))
  if not rows:
    raise DataFormatError(path, None, "file has a header but no data rows")
  return rows


def _year(text: str) -> int:
  return int(text) if _YEAR_RE.fullmatch(text) else 0  # "", "unkonwn", "V": unknown


def _ratings(path: Path) -> Ratings:
  ratings = Ratings()
  for number, (user, item, value, timestamp) in _atomic_rows(path, _COLUMNS["inter"]):
    ratings.append(
        number,
        parse_id(user, "user", path, number),
        parse_id(item, "item", path, number),
        parse_rating(value, path, number),
        parse_timestamp(timestamp, path, number),
    )
  return ratings


def _users(path: Path) -> list[User]:
  return [
      User(
          number,
          parse_id(user, "user", path, number),
          parse_int(age, "age", path, number, INT32),
          parse_gender(gender, path, number),
          occupation,
          zip_code,
      )
      for number, (user, age, gender, occupation, zip_code) in _atomic_rows(
          path, _COLUMNS["user"]
      )
  ]


def _items(path: Path) -> list[Item]:
  items = []
  for number, (item, year, classes) in _atomic_rows(path, _COLUMNS["item"]):
    genres = []
    for genre in classes.split(" "):
      if not genre:
        continue  # tolerate doubled or trailing spaces
      if genre not in GENRE_INDEX:
        raise DataFormatError(path, number, f"unknown genre {genre!r} (expected one of GENRES)")
      genres.append(GENRE_INDEX[genre])
    items.append(
        Item(
            number,
            parse_id(item, "item", path, number),
            _year(year),
            tuple(sorted(set(genres))),
        )
    )
  return items


def _prefix(folder: Path) -> str:
  """The stem of the folder's only ``*.inter`` file."""
  candidates = sorted(path.stem for path in folder.glob("*.inter") if path.is_file())
  if len(candidates) != 1:
    found = ", ".join(f"{stem}.inter" for stem in candidates) or "none"
    # Named as the config field: the command line sets it, e.g. data.prefix=ml-100k.
    choose = f"; name one with data.prefix=, e.g. data.prefix={candidates[0]}" if candidates else ""
    raise DataFormatError(
        folder, None, f"expected exactly one RecBole *.inter file, found {found}{choose}"
    )
  return candidates[0]


def read_recbole(
    directory: str | os.PathLike[str], prefix: str | None = None, *, name: str | None = None
) -> MovieLensTables:
  """Parses RecBole atomic files ``<prefix>.inter``, ``<prefix>.user``, ``<prefix>.item``.

  Each file is UTF-8, tab-separated, with a ``name:type`` header; columns may come in any
  order and extra columns are ignored. No checksums are checked.

  Args:
    directory: Folder holding the three files.
    prefix: File name stem (the config's ``data.prefix``); None or "": that of the folder's
      only ``*.inter`` file.
    name: Dataset name to record; defaults to `prefix`.

  Returns:
    The parsed tables, ``source_format="recbole"``.

  Raises:
    DataFormatError: A file is missing or malformed (the message names file and line).
  """
  folder = Path(directory)
  if not prefix:
    prefix = _prefix(folder)
  files = Files(folder / f"{prefix}.inter", folder / f"{prefix}.user", folder / f"{prefix}.item")
  return assemble(
      name or prefix,
      "recbole",
      files,
      _users(files.users),
      _items(files.items),
      _ratings(files.ratings),
  )
