"""Code layout rules of the project (docs/DESIGN.md): small modules, no `python -m` mains."""

import ast
import io
import pathlib
import tokenize

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("emotalker_jax", "input_pipeline")
MAX_CODE_LINES = 600


def code_lines(src: str) -> int:
  """Lines holding code: blank lines, comments and docstrings do not count (cloc's rule)."""
  docs = set()
  for node in ast.walk(ast.parse(src)):
    body = getattr(node, "body", None)
    if (
      isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
      and body
      and isinstance(body[0], ast.Expr)
      and isinstance(body[0].value, ast.Constant)
      and isinstance(body[0].value.value, str)
    ):
      docs.update(range(body[0].lineno, body[0].end_lineno + 1))
  skip = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
  }
  lines = set()
  for tok in tokenize.generate_tokens(io.StringIO(src).readline):
    if tok.type not in skip:
      lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
  return len(lines)


def test_code_line_counter_skips_blanks_comments_and_docstrings():
  src = (
    '"""Module doc.\n\nMore."""\n\n# a comment\nx = 1  # trailing\n\n\n'
    'def f():\n  """Doc."""\n  return (x +\n          2)\n'
  )
  assert code_lines(src) == 4  # x = 1, def f():, and the two lines of the return


def test_no_module_over_600_lines_of_code():
  sizes = {
    str(p.relative_to(REPO)): code_lines(p.read_text())
    for pkg in PACKAGES
    for p in (REPO / pkg).rglob("*.py")
  }
  assert len(sizes) > 50
  big = {k: v for k, v in sizes.items() if v > MAX_CODE_LINES}
  assert not big, f"modules over {MAX_CODE_LINES} lines of code: {big}; split them by job"


def test_every_entry_point_is_an_emotalker_subcommand():
  mains = [
    str(p.relative_to(REPO))
    for pkg in PACKAGES
    for p in (REPO / pkg).rglob("*.py")
    if "__main__" in p.read_text() and p.name != "cli.py"
  ]
  assert mains == [], f"`python -m` entry points beside `emotalker`: {mains}"
