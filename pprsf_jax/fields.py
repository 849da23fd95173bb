"""The field reference: every config field with its type, default, allowed values and meaning.

  pprsf fields [SECTION | FIELD]      # plain text, e.g. `pprsf fields federated`
  pprsf fields --markdown > docs/configuration.md

One source: the dataclasses of `pprsf_jax.config`. A field's meaning is its `# comment` there
(the comment lines just above the field, then the one after it on its line), read with
`tokenize` because comments are not kept at run time; its allowed values are what the field's
checks state (`config.allowed_values`). Editing a comment or a check changes this reference, and
a test fails until docs/configuration.md is regenerated.

The config is imported where it is read: it imports JAX, and `pprsf --help` builds this
command's arguments.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from typing import Any

# The command that rewrites docs/configuration.md (its header and the staleness test quote it).
REGENERATE = "pprsf fields --markdown > docs/configuration.md"
TOP_LEVEL = "run"  # the section name of RunConfig's own fields (name, seed, ...)
_WIDTH = 100


@dataclasses.dataclass(frozen=True)
class FieldDoc:
  """One leaf field, as the reference shows it."""

  path: str  # as an override names it, e.g. "federated.rounds"
  type: str  # e.g. "int", "tuple[int, ...]"
  default: str  # as an override writes it, e.g. "300", "(64, 32)", "false"
  allowed: tuple[str, ...]  # each check's words; all must hold
  meaning: str


@dataclasses.dataclass(frozen=True)
class SectionDoc:
  """One config dataclass: its section name, its docstring's summary and its leaf fields."""

  name: str
  summary: str
  fields: tuple[FieldDoc, ...]


class UnknownSection(ValueError):
  """`pprsf fields` was given a name that is neither a section nor a field."""


def as_override(value: Any) -> str:
  """`value` as `section.field=value` takes it on the command line."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return f"({', '.join(as_override(element) for element in value)})"
  return repr(value) if isinstance(value, float) else str(value)


def _type_name(annotation: Any) -> str:
  return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _comments(cls: type) -> dict[str, str]:
  """Each field's comment in `cls`'s source: the comment lines just above it, then its own."""
  source = textwrap.dedent(inspect.getsource(cls))
  lines = source.splitlines()
  trailing = {}  # row -> comment after code on that row
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT and lines[token.start[0] - 1].strip() != token.string:
      trailing[token.start[0]] = token.string
  found = {}
  for node in ast.parse(source).body[0].body:
    if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
      continue
    above, row = [], node.lineno - 1
    while row >= 1 and lines[row - 1].strip().startswith("#"):
      above.insert(0, lines[row - 1].strip())
      row -= 1
    own = [trailing[row] for row in range(node.lineno, node.end_lineno + 1) if row in trailing]
    found[node.target.id] = " ".join(text.lstrip("#").strip() for text in above + own)
  return found


def _summary(cls: type) -> str:
  """The first paragraph of `cls`'s docstring, on one line."""
  paragraph = inspect.getdoc(cls).split("\n\n")[0]
  return " ".join(paragraph.split())


def _section_classes() -> list[tuple[str, type]]:
  """(name, dataclass) of every section, in RunConfig's order, nested sections after theirs."""
  from pprsf_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  found = [(TOP_LEVEL, config_lib.RunConfig)]

  def visit(prefix: str, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
      if dataclasses.is_dataclass(hints[field.name]):
        name = f"{prefix}{field.name}"
        found.append((name, hints[field.name]))
        visit(f"{name}.", hints[field.name])

  visit("", config_lib.RunConfig)
  return found


def _allowed_by_field(leaves: list[str]) -> dict[str, list[str]]:
  """`config.allowed_values`, with a check on several fields (keyed by an expression such as
  "data.valid_share + data.test_share") listed under each field it names."""
  from pprsf_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  allowed: dict[str, list[str]] = {path: [] for path in leaves}
  for key, texts in config_lib.allowed_values().items():
    if key in allowed:
      allowed[key] += texts
      continue
    for path in leaves:
      if re.search(rf"(?<![\w.]){re.escape(path)}(?![\w.])", key):
        allowed[path] += [f"{key} {text}" for text in texts]
  return allowed


def sections() -> list[SectionDoc]:
  """The whole reference, section by section."""
  classes = _section_classes()
  prefix = {name: "" if name == TOP_LEVEL else f"{name}." for name, _ in classes}
  leaves = {}
  for name, cls in classes:
    hints = typing.get_type_hints(cls)
    leaves[name] = [field for field in dataclasses.fields(cls)
                    if not dataclasses.is_dataclass(hints[field.name])]
  allowed = _allowed_by_field([prefix[name] + field.name
                               for name, _ in classes for field in leaves[name]])
  docs = []
  for name, cls in classes:
    hints, comments = typing.get_type_hints(cls), _comments(cls)
    docs.append(SectionDoc(name, _summary(cls), tuple(
        FieldDoc(path=prefix[name] + field.name, type=_type_name(hints[field.name]),
                 default=as_override(field.default),
                 allowed=tuple(allowed[prefix[name] + field.name]),
                 meaning=comments.get(field.name, ""))
        for field in leaves[name])))
  return docs


def select(name: str | None) -> list[SectionDoc]:
  """The sections `pprsf fields NAME` shows: all, one section, or one field (in its section).

  Raises:
    UnknownSection: `name` is neither a section nor a field; the message lists the sections.
  """
  every = sections()
  if name is None:
    return every
  for section in every:
    if section.name == name:
      return [section]
    for field in section.fields:
      if field.path == name:
        return [dataclasses.replace(section, fields=(field,))]
  raise UnknownSection(f"unknown section {name!r}; known: "
                       f"{', '.join(section.name for section in every)} (or a field path such "
                       "as federated.rounds)")


def render_text(docs: list[SectionDoc]) -> str:
  """The reference as `pprsf fields` prints it."""
  out = []
  for section in docs:
    out.append(f"[{section.name}] {section.summary}")
    for field in section.fields:
      out.append(f"  {field.path}={field.default}  ({field.type})")
      out += textwrap.wrap(field.meaning, _WIDTH, initial_indent=" " * 6,
                           subsequent_indent=" " * 6, break_on_hyphens=False)
      out += textwrap.wrap("; ".join(field.allowed), _WIDTH, initial_indent="      allowed: ",
                           subsequent_indent=" " * 15, break_on_hyphens=False)
    out.append("")
  return "\n".join(out)


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def _heading(section: SectionDoc) -> str:
  return f"{section.name} (top-level fields)" if section.name == TOP_LEVEL else section.name


def _anchor(heading: str) -> str:
  """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
  return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def render_markdown() -> str:
  """docs/configuration.md."""
  docs = sections()
  out = [
      "# Configuration reference",
      "",
      f"*Generated from the dataclasses in `pprsf_jax/config.py` by `{REGENERATE}`: change a "
      "field's comment or check there and rerun that command; do not edit this file.*",
      "",
      "A run is configured by a preset, a file under `configs/` whose `get_config()` returns a "
      "`RunConfig`, and by overrides on the command line, `section.field=value`, applied in any "
      "order and validated together (`pprsf run configs/ml100k.py federated.rounds=50`). "
      "`pprsf fields [SECTION]` prints this reference in the terminal, and `pprsf run CONFIG "
      "[overrides] --dry-run` prints a config's fields that differ from these defaults and the "
      "stages a run would go through, and checks the job against its data (the preflight every "
      "run passes before its folder is made), without running them.",
      "",
      "Defaults are written as an override takes them: tuples as `(a, b)`, booleans as `true` "
      "or `false`. Every rule in *allowed* must hold; a rule that quotes another field's value "
      "quotes its default. A value outside them is refused before anything runs, with a "
      "message naming the field; the federation's size is only known once the data has "
      "loaded, and is checked then.",
      "",
      "Sections: " + ", ".join(f"[{section.name}](#{_anchor(_heading(section))})"
                               for section in docs) + ".",
  ]
  for section in docs:
    out += ["", f"## {_heading(section)}", "", section.summary, "",
            "| field | type | default | meaning | allowed |", "|---|---|---|---|---|"]
    out += [f"| `{field.path}` | `{field.type}` | `{field.default}` | {_cell(field.meaning)} | "
            f"{_cell('; '.join(field.allowed))} |" for field in section.fields]
  return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
  """`python -m pprsf_jax.fields [--markdown] [SECTION]` (the same as `pprsf fields`)."""
  parser = argparse.ArgumentParser(prog="python -m pprsf_jax.fields", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  return run(parser.parse_args(argv), parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("section", nargs="?", default=None,
                      help=f"a section ({TOP_LEVEL} for the top-level fields, data, federated, "
                      "...) or a field path; default: all")
  parser.add_argument("--markdown", action="store_true",
                      help="print the whole reference as Markdown (docs/configuration.md)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
  if args.markdown:
    if args.section is not None:
      parser.error("--markdown renders the whole reference: give no SECTION")
    sys.stdout.write(render_markdown())
    return 0
  try:
    docs = select(args.section)
  except UnknownSection as error:
    print(f"pprsf: fields: {error}", file=sys.stderr)
    return 2
  sys.stdout.write(render_text(docs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
