"""MovieLens-1M through the same loader: the `::` layout, its fetch entry, its errors.

The real archive is not downloaded here (tests never touch the network): a small data set is
written in ML-1M's layout, and the fetch logic runs against a fake network as for ML-100K.
"""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from pprsf_jax.config import DataConfig
from pprsf_jax.data import fetch, grouplens
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.data.movielens import fetch_movielens, load_movielens
from pprsf_jax.data.tables import GENRES, DataFormatError, DataUnavailableError
from test_movielens import make_zip, serve

# (raw id, gender, age code, occupation code, zip); file order deliberately not numeric.
USERS = (("1", "F", 1, "10", "48067"), ("2", "M", 56, "16", "70072"),
         ("10", "F", 35, "1", "95370"), ("3", "M", 25, "15", "55117"))
# (raw id, title, genres); item 7 is never rated (ML-1M lists such movies too).
ITEMS = (("1", "Toy Story (1995)", "Animation|Children's|Comedy"),
         ("12", "Dracula: Dead and Loving It (1995)", "Comedy|Horror"),
         ("2", "Jumanji (1995)", "Adventure|Children's|Fantasy"),
         ("7", "Sabrina (1995)", "Comedy|Romance"),
         ("5", "Père et fille", "Drama"))
RATINGS = (("1", "1", 5, 978300760), ("2", "12", 3, 978302109), ("10", "2", 4, 978301968),
           ("3", "5", 1, 978300275), ("1", "2", 2, 978824291))


def ml1m_texts(users=USERS, items=ITEMS, ratings=RATINGS) -> dict[str, str]:
  return {
      "ratings.dat": "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings),
      "users.dat": "".join("::".join(map(str, user)) + "\n" for user in users),
      "movies.dat": "".join("::".join(item) + "\n" for item in items),
  }


def write_ml1m(folder: Path, texts=None) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  for name, text in (texts or ml1m_texts()).items():
    (folder / name).write_bytes(text.encode("latin-1"))
  return folder


def test_ml1m_layout_parses_to_known_values(tmp_path):
  tables = load_movielens(write_ml1m(tmp_path / "ml-1m"))
  assert tables.source_format == "grouplens-1m" and tables.name == "ml-1m"
  assert tables.user_raw_ids == ("1", "2", "3", "10")
  assert tables.item_raw_ids == ("1", "2", "5", "7", "12")
  np.testing.assert_array_equal(tables.user_ids, np.array([0, 1, 3, 2, 0], np.int32))
  np.testing.assert_array_equal(tables.item_ids, np.array([0, 4, 1, 2, 1], np.int32))
  np.testing.assert_array_equal(tables.ratings, np.array([5, 3, 4, 1, 2], np.float32))
  np.testing.assert_array_equal(tables.age, np.array([1, 56, 25, 35], np.int32))
  np.testing.assert_array_equal(tables.gender, np.array([1, 0, 0, 1], np.int8))
  assert tables.occupation_vocab == ("1", "10", "15", "16")
  np.testing.assert_array_equal(tables.occupation, np.array([1, 3, 2, 0], np.int32))
  np.testing.assert_array_equal(tables.item_year, np.array([1995, 1995, 0, 1995, 1995], np.int32))
  genres = {GENRES[g] for g in np.flatnonzero(tables.item_genres[2])}  # raw id 5
  assert genres == {"Drama"}
  assert {GENRES[g] for g in np.flatnonzero(tables.item_genres[4])} == {"Comedy", "Horror"}
  assert tables.item_genres[3].sum() == 2  # the unrated movie keeps its genres


def test_ml1m_ages_fall_in_the_dataset_age_buckets(tmp_path):
  """ML-1M's age codes are the lower bounds of the buckets the dataset encodes ages into."""
  assert grouplens.ML1M_FILES == ("ratings.dat", "users.dat", "movies.dat")
  from pprsf_jax.data.dataset import AGE_BUCKET_EDGES  # pylint: disable=import-outside-toplevel
  codes = np.array([1, 18, 25, 35, 45, 50, 56])
  assert np.searchsorted(AGE_BUCKET_EDGES, codes, side="right").tolist() == list(range(7))


def test_the_dataset_builds_from_ml1m_tables(tmp_path):
  rng = np.random.default_rng(0)
  users = tuple((str(u), "MF"[u % 2], [1, 18, 25, 35, 45, 50, 56][u % 7], str(u % 21), "0")
                for u in range(1, 41))
  items = tuple((str(i), f"Movie {i} (19{50 + i % 40})", "Drama|Comedy" if i % 2 else "Action")
                for i in range(1, 61))
  ratings = tuple((str(u), str(i), int(rng.integers(1, 6)), 978300000 + 97 * u + i)
                  for u in range(1, 41) for i in rng.choice(np.arange(1, 61), 20, replace=False))
  folder = write_ml1m(tmp_path / "ml-1m", ml1m_texts(users, items, ratings))
  data = build_dataset(load_movielens(folder), DataConfig(source=str(folder)), 0)
  assert data.public.num_users == 40 and data.public.num_items == 60
  assert data.private.user_features.shape[0] == 40
  assert np.all(np.isfinite(data.private.user_features))


def _replace_line(text: str, number: int, new: str) -> str:
  lines = text.split("\n")
  lines[number - 1] = new
  return "\n".join(lines)


MALFORMED = [
    ("ratings.dat", lambda t: _replace_line(t, 2, "2::12::3"), 2, "expected 4 '::'-separated"),
    ("ratings.dat", lambda t: _replace_line(t, 3, "10::2::four::978301968"), 3, "rating 'four'"),
    ("ratings.dat", lambda t: _replace_line(t, 4, "99::5::1::978300275"), 4, "user id '99'"),
    ("ratings.dat", lambda t: t + "3::5::2::1\n", 6, "lines 4 and 6"),
    ("ratings.dat", lambda t: "", None, "empty"),
    ("users.dat", lambda t: _replace_line(t, 2, "2::X::56::16::70072"), 2, "gender 'X'"),
    ("users.dat", lambda t: _replace_line(t, 1, "1|F|1|10|48067"), 1, "expected 5 '::'"),
    ("users.dat", lambda t: _replace_line(t, 3, "10::F::old::1::95370"), 3, "age 'old'"),
    ("movies.dat", lambda t: _replace_line(t, 2, "12::Dracula (1995)::Comedy|Vampire"), 2,
     "unknown genre 'Vampire'"),
    ("movies.dat", lambda t: _replace_line(t, 1, "1::Toy Story (1995)"), 1, "expected 3"),
    ("movies.dat", None, None, "not found"),
]


@pytest.mark.parametrize("file, edit, line, fragment", MALFORMED,
                         ids=[f"{case[0]}-{k}" for k, case in enumerate(MALFORMED)])
def test_malformed_ml1m_files_name_file_and_line(tmp_path, file, edit, line, fragment):
  folder = write_ml1m(tmp_path / "ml-1m")
  path = folder / file
  if edit is None:
    path.unlink()
  else:
    path.write_bytes(edit(path.read_bytes().decode("latin-1")).encode("latin-1"))
  with pytest.raises(DataFormatError) as caught:
    load_movielens(folder)
  assert caught.value.path == str(path) and caught.value.line == line
  assert fragment in str(caught.value)


# ---- Fetching ---------------------------------------------------------------------------------

URL = "https://grouplens.example/ml-1m.zip"
FILES = {name: text.encode("latin-1") for name, text in ml1m_texts().items()}


ARCHIVE = make_zip({f"ml-1m/{name}": data for name, data in FILES.items()})


@pytest.fixture
def fake_network(monkeypatch):
  source = dict(fetch.DATASET_SOURCES["ml-1m"][0], urls=(URL,),
                archive_digest=("md5", hashlib.md5(ARCHIVE).hexdigest()))
  monkeypatch.setattr(fetch, "DATASET_SOURCES", {"ml-1m": (source,)})

  def install(responses):
    calls = []

    def download(url, output, progress=False):
      del progress
      calls.append(url)
      response = responses.get(url, urllib.error.URLError("Name or service not known"))
      if isinstance(response, BaseException):
        raise response
      serve(output, response)

    monkeypatch.setattr(fetch, "_download", download)
    return calls

  return install


def test_real_ml1m_source_is_the_grouplens_archive():
  (source,) = fetch.DATASET_SOURCES["ml-1m"]
  assert source["urls"] == ("https://files.grouplens.org/datasets/movielens/ml-1m.zip",)
  assert source["archive_digest"] == ("md5", "c4d9eecfca2ab87c1945afe126590906")
  assert set(source["members"]) == set(grouplens.ML1M_FILES)


def test_ml1m_download_then_cache_hit(tmp_path, fake_network):
  calls = fake_network({URL: ARCHIVE})
  tables = load_movielens("ml-1m", cache_dir=tmp_path)
  assert calls == [URL] and tables.source_format == "grouplens-1m" and tables.name == "ml-1m"
  assert sorted(p.name for p in (tmp_path / "ml-1m").iterdir()) == [
      "SHA256SUMS", "movies.dat", "ratings.dat", "users.dat"]
  calls = fake_network({})
  assert load_movielens("ml-1m", cache_dir=tmp_path).num_ratings == len(RATINGS)
  assert calls == []


def test_ml1m_unreachable_says_where_to_put_the_files(tmp_path, fake_network):
  fake_network({})
  with pytest.raises(DataUnavailableError) as caught:
    fetch_movielens("ml-1m", cache_dir=tmp_path)
  message = str(caught.value)
  assert URL in message and "ml-1m.zip" in message and str(tmp_path) in message
  assert "ratings.dat, users.dat, movies.dat" in message
  assert list(tmp_path.iterdir()) == []


def test_ml1m_archive_with_a_wrong_checksum_is_refused(tmp_path, fake_network):
  fake_network({URL: ARCHIVE + b"junk"})
  with pytest.raises(DataUnavailableError, match="md5"):
    fetch_movielens("ml-1m", cache_dir=tmp_path)
  assert list(tmp_path.iterdir()) == []


def test_hand_placed_ml1m_archive_is_used_offline(tmp_path, fake_network):
  (tmp_path / "ml-1m.zip").write_bytes(ARCHIVE)
  calls = fake_network({})
  assert fetch_movielens("ml-1m", cache_dir=tmp_path) == tmp_path / "ml-1m"
  assert calls == []
