"""Tests for the MovieLens loader (pprsf_jax.data.movielens and the modules beside it): both
parsers, error reporting, and the fetch logic.

No network: `fetch._download` and the source table are monkeypatched with fake archives built
here; pooch's real download-and-verify runs on what the fake serves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import http.client
import io
import tempfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pprsf_jax.data import fetch
from pprsf_jax.data.fetch import default_cache_dir
from pprsf_jax.data.grouplens import read_grouplens
from pprsf_jax.data.movielens import fetch_movielens, load_movielens
from pprsf_jax.data.recbole import read_recbole
from pprsf_jax.data.tables import GENRES, DataFormatError, DataUnavailableError, MovieLensTables

# ---- One small data set, written out in both layouts ----------------------------------------

# (raw id, age, gender, occupation, zip); file order is deliberately not numeric order.
USERS = (
    ("1", 24, "M", "technician", "85711"),
    ("2", 53, "F", "other", "94043"),
    ("10", 33, "M", "writer", "T8H1N"),
    ("3", 23, "M", "writer", "32067"),
)
# (raw id, title, year or 0 when unknown, genres)
ITEMS = (
    ("1", "Toy Story (1995)", 1995, ("Animation", "Children's", "Comedy")),
    ("12", "unknown", 0, ("unknown",)),
    ("2", "GoldenEye (1995)", 1995, ("Action", "Adventure", "Thriller")),
    ("5", "Nénette et Boni (1996)", 1996, ("Drama",)),
)
# (user, item, rating, timestamp)
RATINGS = (
    ("1", "1", 5, 874965758),
    ("2", "12", 3, 876893171),
    ("10", "2", 4, 878542960),
    ("3", "5", 1, 876893119),
    ("1", "2", 2, 889751712),
)

# The same data as dense arrays, worked out by hand.
EXPECTED = dict(
    name="ml-100k",
    user_raw_ids=("1", "2", "3", "10"),
    item_raw_ids=("1", "2", "5", "12"),
    user_ids=np.array([0, 1, 3, 2, 0], np.int32),
    item_ids=np.array([0, 3, 1, 2, 1], np.int32),
    ratings=np.array([5, 3, 4, 1, 2], np.float32),
    timestamps=np.array([874965758, 876893171, 878542960, 876893119, 889751712], np.int64),
    age=np.array([24, 53, 23, 33], np.int32),
    gender=np.array([0, 1, 0, 0], np.int8),
    occupation_vocab=("other", "technician", "writer"),
    occupation=np.array([1, 0, 2, 2], np.int32),
    zip_code=("85711", "94043", "32067", "T8H1N"),
    item_year=np.array([1995, 1995, 1996, 0], np.int32),
)

FIELDS = [field.name for field in dataclasses.fields(MovieLensTables)]


def expected_genres() -> np.ndarray:
  genres = np.zeros((4, 19), np.float32)
  for row, names in enumerate([ITEMS[0][3], ITEMS[2][3], ITEMS[3][3], ITEMS[1][3]]):
    for genre in names:
      genres[row, GENRES.index(genre)] = 1.0
  return genres


def grouplens_texts(users=USERS, items=ITEMS, ratings=RATINGS) -> dict[str, str]:
  item_lines = []
  for raw, title, year, genres in items:
    date = f"01-Jan-{year}" if year else ""
    flags = ["1" if genre in genres else "0" for genre in GENRES]
    url = "http://us.imdb.com/M/title-exact?x"
    item_lines.append("|".join([raw, title, date, "", url, *flags]))
  return {
      "u.data": "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings),
      "u.user": "".join("|".join(map(str, user)) + "\n" for user in users),
      "u.item": "".join(line + "\n" for line in item_lines),
  }


def recbole_texts(prefix="ml-100k", users=USERS, items=ITEMS, ratings=RATINGS) -> dict[str, str]:
  # Columns shuffled and padded with an extra one on purpose: order must not matter.
  inter = ["rating:float\tuser_id:token\ttimestamp:float\titem_id:token"]
  inter += [f"{r}\t{u}\t{t}\t{i}" for u, i, r, t in ratings]
  user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
  user += ["\t".join(map(str, row)) for row in users]
  item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\textra:float"]
  item += [
      f"{raw}\t{title.rsplit(' (', 1)[0]}\t{year or ''}\t{' '.join(genres)}\t0.5"
      for raw, title, year, genres in items
  ]
  return {
      f"{prefix}.inter": "\n".join(inter) + "\n",
      f"{prefix}.user": "\n".join(user) + "\n",
      f"{prefix}.item": "\n".join(item) + "\n",
  }


def write_files(folder: Path, texts: dict[str, str], encoding: str) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  for name, text in texts.items():
    (folder / name).write_bytes(text.encode(encoding))
  return folder


def write_grouplens(folder: Path) -> Path:
  return write_files(folder, grouplens_texts(), "latin-1")


def write_recbole(folder: Path) -> Path:
  return write_files(folder, recbole_texts(), "utf-8")


def assert_expected(tables: MovieLensTables) -> None:
  for key, value in EXPECTED.items():
    actual = getattr(tables, key)
    if isinstance(value, np.ndarray):
      assert actual.dtype == value.dtype, key
      np.testing.assert_array_equal(actual, value, err_msg=key)
    else:
      assert actual == value, key
  assert tables.item_genres.dtype == np.float32
  np.testing.assert_array_equal(tables.item_genres, expected_genres())
  assert (tables.num_users, tables.num_items, tables.num_ratings) == (4, 4, 5)


def assert_same_tables(a: MovieLensTables, b: MovieLensTables) -> None:
  for key in FIELDS:
    if key == "source_format":
      continue
    x, y = getattr(a, key), getattr(b, key)
    if isinstance(x, np.ndarray):
      assert x.dtype == y.dtype and x.shape == y.shape, key
      np.testing.assert_array_equal(x, y, err_msg=key)
    else:
      assert x == y, key


# ---- Parsing ----------------------------------------------------------------------------------


def test_genres_are_the_grouplens_list():
  assert len(GENRES) == 19
  assert GENRES[0] == "unknown" and GENRES[4] == "Children's" and GENRES[-1] == "Western"


def test_grouplens_parses_to_known_values(tmp_path):
  tables = read_grouplens(write_grouplens(tmp_path / "ml-100k"))
  assert tables.source_format == "grouplens"
  assert_expected(tables)


def test_recbole_parses_to_known_values(tmp_path):
  tables = read_recbole(write_recbole(tmp_path / "anything"))
  assert tables.source_format == "recbole"
  assert_expected(tables)


def test_both_formats_give_identical_tables(tmp_path):
  grouplens = load_movielens(write_grouplens(tmp_path / "gl"))
  recbole = load_movielens(write_recbole(tmp_path / "rb"))
  assert (grouplens.source_format, recbole.source_format) == ("grouplens", "recbole")
  # Folder names differ; the dataset name is what the caller says it is.
  assert grouplens.name == "gl" and recbole.name == "ml-100k"
  assert_same_tables(read_grouplens(tmp_path / "gl", name="ml-100k"), recbole)


def test_crlf_line_endings_and_blank_lines_are_accepted(tmp_path):
  texts = {name: text.replace("\n", "\r\n") + "\r\n" for name, text in grouplens_texts().items()}
  assert_expected(read_grouplens(write_files(tmp_path / "ml-100k", texts, "latin-1")))


def test_non_integer_ids_sort_as_strings(tmp_path):
  users = (("b", 20, "F", "x", "1"), ("a", 30, "M", "y", "2"))
  items = (("i2", "T", 0, ()), ("i1", "S", 2000, ("War",)))
  ratings = (("b", "i1", 4, 1), ("a", "i2", 3, 2))
  folder = write_files(tmp_path / "d", grouplens_texts(users, items, ratings), "latin-1")
  tables = read_grouplens(folder)
  assert tables.user_raw_ids == ("a", "b") and tables.item_raw_ids == ("i1", "i2")
  np.testing.assert_array_equal(tables.user_ids, [1, 0])
  np.testing.assert_array_equal(tables.item_genres.sum(1), [1, 0])  # no genre flagged at all


def test_recbole_float_timestamps_are_accepted(tmp_path):
  texts = recbole_texts()
  texts["ml-100k.inter"] = texts["ml-100k.inter"].replace("874965758", "874965758.0")
  tables = read_recbole(write_files(tmp_path / "d", texts, "utf-8"))
  assert tables.timestamps[0] == 874965758


def test_recbole_byte_order_mark_is_ignored(tmp_path):
  texts = {name: "\ufeff" + text for name, text in recbole_texts().items()}
  assert_expected(read_recbole(write_files(tmp_path / "d", texts, "utf-8")))


def test_unrecognised_years_read_as_unknown(tmp_path):
  # The real RecBole file has "unkonwn" (item 267) and "V" (item 1412) as release years.
  texts = recbole_texts()
  texts["ml-100k.item"] = texts["ml-100k.item"].replace("\t1995\t", "\tunkonwn\t", 1)
  tables = read_recbole(write_files(tmp_path / "d", texts, "utf-8"))
  np.testing.assert_array_equal(tables.item_year, [0, 1995, 1996, 0])


def test_folder_without_known_files_is_rejected(tmp_path):
  with pytest.raises(DataFormatError, match="neither GroupLens"):
    load_movielens(tmp_path)


def test_unknown_source_name_is_rejected(tmp_path):
  with pytest.raises(DataUnavailableError, match="neither an existing folder nor a known dataset"):
    load_movielens(tmp_path / "does-not-exist")
  with pytest.raises(ValueError, match="unknown dataset"):
    fetch_movielens("ml-999k", cache_dir=tmp_path)


def test_recbole_prefix_must_be_unambiguous(tmp_path):
  folder = write_recbole(tmp_path / "d")
  write_files(folder, recbole_texts(prefix="other"), "utf-8")
  with pytest.raises(DataFormatError, match="exactly one"):
    read_recbole(folder)
  assert read_recbole(folder, prefix="other").name == "other"


def test_data_format_error_pickles():
  error = pickle.loads(pickle.dumps(DataFormatError("/x/u.data", 3, "bad")))
  assert (error.path, error.line, str(error)) == ("/x/u.data", 3, "/x/u.data line 3: bad")


# ---- Malformed files ------------------------------------------------------------------------


def replace_line(text: str, number: int, new: str) -> str:
  lines = text.split("\n")
  lines[number - 1] = new
  return "\n".join(lines)


GL, RB = "grouplens", "recbole"

# (layout, file, edit of the file's text or None to delete it, line at fault, message fragment)
MALFORMED = [
    (GL, "u.data", lambda t: replace_line(t, 3, "10\t2\t4"), 3, "expected 4 tab-separated"),
    (GL, "u.data", lambda t: replace_line(t, 2, "2\t12\tgood\t1"), 2, "rating 'good'"),
    (GL, "u.data", lambda t: replace_line(t, 2, "2\t12\tnan\t1"), 2, "rating 'nan'"),
    (GL, "u.data", lambda t: replace_line(t, 4, "3\t5\t1\t12:30"), 4, "timestamp"),
    (GL, "u.data", lambda t: replace_line(t, 4, "99\t1\t3\t1"), 4, "user id '99'"),
    (GL, "u.data", lambda t: replace_line(t, 5, "1\t7\t3\t1"), 5, "item id '7'"),
    (GL, "u.data", lambda t: t + "3\t5\t2\t1\n", 6, "lines 4 and 6"),
    (GL, "u.data", lambda t: "", None, "empty"),
    (GL, "u.data", lambda t: "\n\n", None, "empty"),
    (GL, "u.data", None, None, "not found"),
    (GL, "u.user", lambda t: replace_line(t, 2, "2|53|X|other|94043"), 2, "gender 'X'"),
    (GL, "u.user", lambda t: replace_line(t, 3, "10|old|M|writer|T8H1N"), 3, "age 'old'"),
    (GL, "u.user", lambda t: replace_line(t, 1, "1|24|M|technician"), 1, "expected 5"),
    (GL, "u.user", lambda t: t + "2|40|M|other|0\n", 5, "lines 2 and 5"),
    (GL, "u.user", lambda t: "", None, "empty"),
    (GL, "u.item", lambda t: replace_line(t, 2, "12|unknown|"), 2, "expected 24"),
    (GL, "u.item", lambda t: t.replace("|1|0|", "|2|0|", 1), 1, "not 0 or 1"),
    (GL, "u.item", None, None, "not found"),
    (RB, "ml-100k.inter", lambda t: replace_line(t, 1, "user_id:token\titem_id:token"), 1,
     "lacks column(s) rating, timestamp"),
    (RB, "ml-100k.inter", lambda t: replace_line(t, 3, "3\t12"), 3, "expected 4 tab-separated"),
    (RB, "ml-100k.inter", lambda t: replace_line(t, 2, "x\t1\t1\t1"), 2, "rating 'x'"),
    (RB, "ml-100k.inter", lambda t: replace_line(t, 2, "5\t1\t0.5\t1"), 2, "whole number"),
    (RB, "ml-100k.inter", lambda t: replace_line(t, 4, "4\t99\t1\t2"), 4, "user id '99'"),
    (RB, "ml-100k.inter", lambda t: t + "2\t1\t9\t2\n", 7, "lines 6 and 7"),
    (RB, "ml-100k.inter", lambda t: t.split("\n")[0] + "\n", None, "no data rows"),
    (RB, "ml-100k.inter", lambda t: "", None, "empty"),
    (RB, "ml-100k.user", lambda t: replace_line(t, 3, "2\t53\tf\tother\t94043"), 3, "gender 'f'"),
    (RB, "ml-100k.user", lambda t: replace_line(t, 1, "user_id:token\tage:token"), 1,
     "lacks column(s) gender, occupation, zip_code"),
    (RB, "ml-100k.user", lambda t: replace_line(t, 2, "1\t2.5\tM\tx\t1"), 2, "age '2.5'"),
    (RB, "ml-100k.user", None, None, "not found"),
    (RB, "ml-100k.item", lambda t: t.replace("Drama", "Drama,Romance"), 5, "'Drama,Romance'"),
    (RB, "ml-100k.item", lambda t: replace_line(t, 1, "item_id:token\tclass:token_seq"), 1,
     "release_year"),
    (RB, "ml-100k.item", lambda t: replace_line(t, 1, "item_id:token\titem_id:token"), 1,
     "repeats column 'item_id'"),
    (RB, "ml-100k.item", lambda t: "", None, "empty"),
]


@pytest.mark.parametrize(
    "layout, file, edit, line, fragment",
    MALFORMED,
    ids=[f"{case[1]}-{k}" for k, case in enumerate(MALFORMED)],
)
def test_malformed_files_name_file_and_line(tmp_path, layout, file, edit, line, fragment):
  folder = write_grouplens(tmp_path / "d") if layout == GL else write_recbole(tmp_path / "d")
  path = folder / file
  if edit is None:
    path.unlink()
  else:
    encoding = "latin-1" if layout == GL else "utf-8"
    path.write_bytes(edit(path.read_bytes().decode(encoding)).encode(encoding))
  with pytest.raises(DataFormatError) as caught:
    load_movielens(folder)
  message = str(caught.value)
  assert caught.value.path == str(path)
  assert caught.value.line == line
  assert str(path) in message
  if line is not None:
    assert f"{file} line {line}:" in message
  assert fragment in message


# ---- Values outside the format: ratings are whole stars 1-5, timestamps seconds >= 0 --------

SCALE = "outside the MovieLens scale: allowed a whole number of stars from 1 to 5"
OUT_OF_FORMAT = [
    (GL, "u.data", "2\t12\t-999\t876893171", 2, f"rating '-999' is {SCALE}"),
    (GL, "u.data", "2\t12\t6\t876893171", 2, f"rating '6' is {SCALE}"),
    (GL, "u.data", "2\t12\t0\t876893171", 2, f"rating '0' is {SCALE}"),
    (GL, "u.data", "2\t12\t4.5\t876893171", 2, f"rating '4.5' is {SCALE}"),
    (GL, "u.data", "2\t12\t3\t-1", 2, "timestamp '-1' is negative: allowed Unix seconds >= 0"),
    (RB, "ml-100k.inter", "-999\t2\t876893171\t12", 3, f"rating '-999' is {SCALE}"),
    (RB, "ml-100k.inter", "5.5\t2\t876893171\t12", 3, f"rating '5.5' is {SCALE}"),
    (RB, "ml-100k.inter", "3\t2\t-5.0\t12", 3, "timestamp '-5.0' is negative"),
]


@pytest.mark.parametrize("layout, file, row, line, problem", OUT_OF_FORMAT,
                         ids=[f"{case[1]}-{k}" for k, case in enumerate(OUT_OF_FORMAT)])
def test_values_outside_the_format_name_file_line_and_range(tmp_path, layout, file, row, line,
                                                            problem):
  folder = write_grouplens(tmp_path / "d") if layout == GL else write_recbole(tmp_path / "d")
  path = folder / file
  encoding = "latin-1" if layout == GL else "utf-8"
  path.write_bytes(replace_line(path.read_bytes().decode(encoding), line, row).encode(encoding))
  with pytest.raises(DataFormatError) as caught:
    load_movielens(folder)
  assert str(caught.value).startswith(f"{path} line {line}: {problem}"), str(caught.value)
  assert (caught.value.path, caught.value.line) == (str(path), line)


def test_whole_star_ratings_written_as_floats_are_accepted(tmp_path):
  texts = recbole_texts()
  texts["ml-100k.inter"] = texts["ml-100k.inter"].replace("\n5\t1\t", "\n5.0\t1\t", 1)
  assert "5.0\t1\t874965758\t1" in texts["ml-100k.inter"]
  assert_expected(read_recbole(write_files(tmp_path / "d", texts, "utf-8")))


def test_the_cached_ml100k_ratings_are_all_on_the_scale():
  folder = default_cache_dir() / "ml-100k-recbole"
  if not (folder / "ml-100k.inter").is_file():
    pytest.skip("ML-100K is not in the cache (no network in tests)")
  tables = read_recbole(folder, "ml-100k")  # every rating and timestamp passed the checks
  assert tables.num_ratings == 100_000
  assert sorted(np.unique(tables.ratings).tolist()) == [1, 2, 3, 4, 5]
  assert tables.timestamps.min() > 0


def test_recbole_invalid_utf8_names_the_line(tmp_path):
  folder = write_recbole(tmp_path / "d")
  path = folder / "ml-100k.item"
  lines = path.read_bytes().split(b"\n")
  lines[3] = lines[3].replace(b"GoldenEye", b"Golden\xffEye")
  path.write_bytes(b"\n".join(lines))
  with pytest.raises(DataFormatError, match=r"ml-100k\.item line 4: not valid UTF-8"):
    read_recbole(folder)


# ---- Fuzzing: only DataFormatError may escape -----------------------------------------------

GROUPLENS_FIELDS = ["1", "2", "3", "10", "12", "5", "M", "F", "0", "", "01-Jan-1995", "x|y"]
RECBOLE_FIELDS = ["1", "2", "12", "M", "F", "", "1995", "Comedy Drama", "unknown", "4.5"]
ODD_FIELDS = ["nan", "inf", "-1", "1e400", "9" * 25, "١", "1_0", " 1", "\x85", "\x00", "é"]


def fuzz_text(fields: list[str], separator: str) -> st.SearchStrategy[str]:
  field = st.one_of(st.sampled_from(fields + ODD_FIELDS), st.text(max_size=4))
  line = st.lists(field, max_size=26).map(separator.join)
  return st.lists(line, max_size=6).map("\n".join)


def check_only_format_errors(layout: str, file: str, payload: bytes) -> None:
  with tempfile.TemporaryDirectory() as scratch:
    folder = write_grouplens(Path(scratch)) if layout == GL else write_recbole(Path(scratch))
    (folder / file).write_bytes(payload)
    try:
      tables = read_grouplens(folder) if layout == GL else read_recbole(folder, "ml-100k")
    except DataFormatError as error:
      assert str(error).startswith(error.path)
    else:
      assert tables.user_ids.shape == tables.item_ids.shape == tables.ratings.shape
      assert tables.item_genres.shape == (tables.num_items, len(GENRES))


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = [(GL, "u.data"), (GL, "u.user"), (GL, "u.item")] + [
    (RB, f"ml-100k.{ext}") for ext in ("inter", "user", "item")
]
HEADERS = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "ml-100k.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
}


@pytest.mark.parametrize("layout, file", FILES)
@FUZZ
@given(payload=st.binary(max_size=400))
def test_fuzz_random_bytes(layout, file, payload):
  check_only_format_errors(layout, file, payload)


@pytest.mark.parametrize("layout, file", FILES)
@FUZZ
@given(data=st.data())
def test_fuzz_random_lines(layout, file, data):
  if layout == GL:
    separator = "\t" if file == "u.data" else "|"
    text = data.draw(fuzz_text(GROUPLENS_FIELDS, separator))
    payload = text.encode("latin-1", errors="replace")
  else:
    text = data.draw(fuzz_text(RECBOLE_FIELDS, "\t"))
    if data.draw(st.booleans()):  # a valid header lets the rows be parsed
      text = HEADERS[file] + "\n" + text
    payload = text.encode("utf-8", errors="surrogatepass")
  check_only_format_errors(layout, file, payload)


# ---- Fetching -------------------------------------------------------------------------------

GL_URL = "https://grouplens.example/ml-100k.zip"
INDEX_URL = "https://pypi.example/simple/recbole/"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
INDEX_WHEEL_URL = f"https://files.example/packages/ab/{WHEEL_NAME}"
KNOWN_WHEEL_URL = f"https://files.example/known/{WHEEL_NAME}"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/{}"


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return buffer.getvalue()


GL_FILES = {name: text.encode("latin-1") for name, text in grouplens_texts().items()}
RB_FILES = {name: text.encode("utf-8") for name, text in recbole_texts().items()}
GL_ZIP = make_zip({f"ml-100k/{name}": data for name, data in GL_FILES.items()})
WHEEL = make_zip(
    {"recbole/__init__.py": b"", **{RECBOLE_MEMBER.format(n): d for n, d in RB_FILES.items()}}
)
INDEX_PAGE = (
    "<!DOCTYPE html><html><body><h1>Links for recbole</h1>\n"
    '<a href="https://files.example/packages/zz/recbole-1.2.0-py3-none-any.whl#sha256=00">'
    "recbole-1.2.0-py3-none-any.whl</a><br/>\n"
    f'<a href="{INDEX_WHEEL_URL}#sha256={sha256(WHEEL)}" data-requires-python="&gt;=3.7">'
    f"{WHEEL_NAME}</a><br/>\n</body></html>"
).encode()


def fake_sources(gl_zip: bytes = GL_ZIP, wheel: bytes = WHEEL, rb_files=RB_FILES) -> dict:
  return {
      "ml-100k": (
          {
              "label": "GroupLens archive",
              "format": "grouplens",
              "subdir": "ml-100k",
              "archive": "ml-100k.zip",
              "index_url": None,
              "urls": (GL_URL,),
              "archive_digest": ("md5", hashlib.md5(gl_zip).hexdigest()),
              "members": {name: f"ml-100k/{name}" for name in GL_FILES},
              "file_sha256": {},
          },
          {
              "label": "recbole wheel",
              "format": "recbole",
              "subdir": "ml-100k-recbole",
              "archive": WHEEL_NAME,
              "index_url": INDEX_URL,
              "urls": (KNOWN_WHEEL_URL,),
              "archive_digest": ("sha256", sha256(wheel)),
              "members": {name: RECBOLE_MEMBER.format(name) for name in rb_files},
              "file_sha256": {name: sha256(data) for name, data in rb_files.items()},
          },
      )
  }


def serve(output, data: bytes) -> None:
  """Writes a fake body where `_download` writes: a file name (pooch's scratch file) or a stream."""
  if hasattr(output, "write"):
    output.write(data)
  else:
    Path(output).write_bytes(data)


class FakeNetwork:
  """Stands in for `_download`: serves bytes or raises, and records every URL asked for."""

  def __init__(self, responses: dict[str, bytes | BaseException]):
    self.responses = responses
    self.calls: list[str] = []

  def __call__(self, url: str, output, progress: bool = False) -> None:
    del progress
    self.calls.append(url)
    response = self.responses.get(url, urllib.error.URLError("Name or service not known"))
    if isinstance(response, BaseException):
      raise response
    serve(output, response)


@pytest.fixture
def network(monkeypatch):
  """Installs the fake source table; returns a function that installs fake responses."""
  monkeypatch.setattr(fetch, "DATASET_SOURCES", fake_sources())

  def install(responses: dict[str, bytes | BaseException]) -> FakeNetwork:
    fake = FakeNetwork(responses)
    monkeypatch.setattr(fetch, "_download", fake)
    return fake

  return install


def files_under(folder: Path) -> list[str]:
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_real_source_table_is_complete():
  grouplens, recbole = fetch.DATASET_SOURCES["ml-100k"]
  assert grouplens["archive_digest"] == ("md5", "0e33842e24a9c977be4e0107933c0723")
  assert recbole["archive"] == WHEEL_NAME and recbole["index_url"].startswith("https://pypi.org")
  assert set(recbole["file_sha256"]) == set(recbole["members"])


def test_grouplens_download_then_cache_hit(tmp_path, network):
  net = network({GL_URL: GL_ZIP})
  folder = fetch_movielens("ml-100k", cache_dir=tmp_path)
  assert folder == tmp_path / "ml-100k" and net.calls == [GL_URL]
  assert files_under(tmp_path) == ["ml-100k/SHA256SUMS", "ml-100k/u.data", "ml-100k/u.item",
                                   "ml-100k/u.user"]
  offline = network({})
  assert fetch_movielens("ml-100k", cache_dir=tmp_path) == folder
  tables = load_movielens("ml-100k", cache_dir=tmp_path)
  assert offline.calls == []
  assert tables.source_format == "grouplens"
  assert_expected(tables)


def test_populated_recbole_cache_needs_no_download(tmp_path, network):
  write_files(tmp_path / "ml-100k-recbole", recbole_texts(), "utf-8")
  net = network({})
  assert fetch_movielens(cache_dir=tmp_path) == tmp_path / "ml-100k-recbole"
  assert net.calls == []


def test_grouplens_unreachable_uses_wheel_found_on_index(tmp_path, network):
  net = network({INDEX_URL: INDEX_PAGE, INDEX_WHEEL_URL: WHEEL})
  folder = fetch_movielens("ml-100k", cache_dir=tmp_path)
  assert net.calls == [GL_URL, INDEX_URL, INDEX_WHEEL_URL]
  assert folder == tmp_path / "ml-100k-recbole"
  # Only the three data files (and their manifest) are kept, not the wheel.
  assert files_under(tmp_path) == [f"ml-100k-recbole/{n}" for n in
                                   ("SHA256SUMS", "ml-100k.inter", "ml-100k.item", "ml-100k.user")]
  for name, data in RB_FILES.items():
    assert (folder / name).read_bytes() == data
  tables = load_movielens("ml-100k", cache_dir=tmp_path)
  assert tables.source_format == "recbole"
  assert_expected(tables)


def test_unreachable_index_falls_back_to_known_wheel_url(tmp_path, network):
  net = network({KNOWN_WHEEL_URL: WHEEL})
  assert fetch_movielens(cache_dir=tmp_path) == tmp_path / "ml-100k-recbole"
  assert net.calls == [GL_URL, INDEX_URL, KNOWN_WHEEL_URL]


def test_bad_archive_checksums_name_both_digests_and_keep_nothing(tmp_path, network):
  bad_zip, bad_wheel = GL_ZIP + b"junk", WHEEL + b"junk"
  network({GL_URL: bad_zip, INDEX_URL: INDEX_PAGE, INDEX_WHEEL_URL: bad_wheel,
           KNOWN_WHEEL_URL: bad_wheel})
  with pytest.raises(DataUnavailableError) as caught:
    fetch_movielens(cache_dir=tmp_path)
  message = str(caught.value)
  assert hashlib.md5(GL_ZIP).hexdigest() in message and hashlib.md5(bad_zip).hexdigest() in message
  assert sha256(WHEEL) in message and sha256(bad_wheel) in message
  assert GL_URL in message and INDEX_WHEEL_URL in message
  assert files_under(tmp_path) == []


def test_bad_member_checksum_is_reported_and_not_written(tmp_path, network, monkeypatch):
  tampered = dict(RB_FILES, **{"ml-100k.inter": RB_FILES["ml-100k.inter"] + b"9\t9\t9\t9\n"})
  wheel = make_zip({RECBOLE_MEMBER.format(n): d for n, d in tampered.items()})
  sources = fake_sources(wheel=wheel)
  sources["ml-100k"][1]["file_sha256"] = {n: sha256(d) for n, d in RB_FILES.items()}
  monkeypatch.setattr(fetch, "DATASET_SOURCES", sources)
  network({KNOWN_WHEEL_URL: wheel})
  with pytest.raises(DataUnavailableError) as caught:
    fetch_movielens(cache_dir=tmp_path)
  message = str(caught.value)
  assert RECBOLE_MEMBER.format("ml-100k.inter") in message
  assert sha256(RB_FILES["ml-100k.inter"]) in message
  assert sha256(tampered["ml-100k.inter"]) in message
  assert files_under(tmp_path) == []


def test_bad_grouplens_checksum_falls_back_to_wheel(tmp_path, network):
  network({GL_URL: b"not the archive", KNOWN_WHEEL_URL: WHEEL})
  assert fetch_movielens(cache_dir=tmp_path) == tmp_path / "ml-100k-recbole"
  assert not (tmp_path / "ml-100k").exists()


def test_all_sources_failing_lists_every_source_and_manual_folders(tmp_path, network):
  net = network({INDEX_URL: b"<html>no links here</html>",
                 KNOWN_WHEEL_URL: urllib.error.HTTPError(KNOWN_WHEEL_URL, 404, "Not Found", None,
                                                         None)})
  with pytest.raises(DataUnavailableError) as caught:
    fetch_movielens(cache_dir=tmp_path)
  message = str(caught.value)
  assert net.calls == [GL_URL, INDEX_URL, KNOWN_WHEEL_URL]
  for url in net.calls:
    assert url in message
  assert "Name or service not known" in message and "404" in message
  assert f"no link to {WHEEL_NAME}" in message
  # Manual installation: which files, which folders, for both layouts.
  assert "u.data, u.user, u.item" in message and str(tmp_path / "ml-100k") in message
  assert "ml-100k.inter, ml-100k.user, ml-100k.item" in message
  assert str(tmp_path / "ml-100k-recbole") in message
  assert "ml-100k.zip" in message and WHEEL_NAME in message
  assert len(caught.value.attempts) == 3
  assert files_under(tmp_path) == []


def test_interrupted_download_leaves_no_file(tmp_path, network):
  network({GL_URL: http.client.IncompleteRead(GL_ZIP[:100], len(GL_ZIP) - 100),
           INDEX_URL: ConnectionResetError("connection reset"),
           KNOWN_WHEEL_URL: TimeoutError("timed out")})
  with pytest.raises(DataUnavailableError, match="IncompleteRead"):
    fetch_movielens(cache_dir=tmp_path)
  assert files_under(tmp_path) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, network, monkeypatch):
  network({GL_URL: GL_ZIP})

  class Interrupted(BaseException):
    """Like KeyboardInterrupt: not an error a source may fail with, so it propagates."""

  def interrupted(src, dst):
    raise Interrupted

  monkeypatch.setattr(fetch.os, "replace", interrupted)
  with pytest.raises(Interrupted):
    fetch_movielens(cache_dir=tmp_path)
  monkeypatch.undo()
  assert files_under(tmp_path) == []  # not even the temporary ".part" file


def test_corrupted_cache_is_downloaded_again(tmp_path, network):
  net = network({GL_URL: GL_ZIP})
  folder = fetch_movielens(cache_dir=tmp_path)
  (folder / "u.data").write_bytes(b"1\t1\t5\t0\n")
  assert fetch_movielens(cache_dir=tmp_path) == folder
  assert net.calls == [GL_URL, GL_URL]
  assert (folder / "u.data").read_bytes() == GL_FILES["u.data"]


def test_hand_placed_archive_is_used_without_network(tmp_path, network):
  (tmp_path / WHEEL_NAME).write_bytes(WHEEL)
  net = network({})
  assert fetch_movielens(cache_dir=tmp_path) == tmp_path / "ml-100k-recbole"
  assert net.calls == []


def test_hand_placed_grouplens_files_load_as_a_folder(tmp_path, network):
  folder = write_grouplens(tmp_path / "ml-100k")
  network({})
  with pytest.raises(DataUnavailableError, match="u.data has no recorded checksum"):
    fetch_movielens(cache_dir=tmp_path)
  assert_expected(load_movielens(folder))


def test_cache_dir_comes_from_environment(tmp_path, network, monkeypatch):
  monkeypatch.setenv("PPRSF_DATA_DIR", str(tmp_path / "env-cache"))
  assert default_cache_dir() == tmp_path / "env-cache"
  network({GL_URL: GL_ZIP})
  assert fetch_movielens() == tmp_path / "env-cache" / "ml-100k"
  monkeypatch.delenv("PPRSF_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert default_cache_dir() == tmp_path / "home" / ".cache" / "pprsf_jax"


def test_relative_index_links_are_resolved():
  page = f'<a href="../../packages/ab/{WHEEL_NAME}#sha256=abc">{WHEEL_NAME}</a>'
  found = fetch._find_archive_link(page, WHEEL_NAME, "https://pypi.example/simple/recbole/")
  assert found == f"https://pypi.example/packages/ab/{WHEEL_NAME}"
  assert fetch._find_archive_link("<p>nothing</p>", WHEEL_NAME, INDEX_URL) is None


def test_download_sends_user_agent_and_timeout(monkeypatch):
  seen = {}

  class Response:
    headers = {"content-length": "7"}

    def raise_for_status(self):
      pass

    def iter_content(self, chunk_size):
      del chunk_size
      yield b"payload"

  def get(url, timeout, **kwargs):  # what pooch's HTTPDownloader calls
    seen.update(agent=kwargs["headers"]["User-Agent"], timeout=timeout, url=url)
    return Response()

  monkeypatch.setattr(requests, "get", get)
  body = io.BytesIO()
  fetch._download("https://x.example/f", body)
  assert body.getvalue() == b"payload"
  assert seen["agent"].startswith("pprsf_jax") and seen["timeout"] == 30.0
