"""``emotalker emotion --eib DIR [--prompts-file F.jsonl | PROMPT ...] [--emotion SPEC]``.

Prints one JSON object per prompt (DESIGN.md, fixed):
``{"prompt": ..., "intensities": {"neutral": f, "angry": f, ..., "surprised": f}}``.
``--emotion happy=0.7,surprised=0.3`` prints the explicit vector the same way (with
``"prompt": null``); it needs no EIB folder.

Checks (each a one-line error or a warning on stderr):
* empty / whitespace-only prompt: error naming it;
* a prompt longer than the encoder's ``max_length`` tokens: truncated, with a warning;
* a prompt with no emotion content (``models.eib.no_emotion_content``: every non-neutral
  intensity below ``NO_CONTENT_THRESHOLD``, neutral the largest, and no FED emotion word
  or emotional-situation word in it): neutral, with a warning, and ``"no_emotion_content": true``
  added to its JSON object (the only key beside the fixed two);
* F.jsonl with bytes that are not UTF-8, bad JSON, or a line without a string "prompt":
  error naming the line.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("prompts", nargs="*", metavar="PROMPT", help="emotion descriptions")
  parser.add_argument("--eib", default=None, help="folder written by `emotalker eib-train`")
  parser.add_argument(
    "--prompts-file", default=None, help='JSONL file, one {"prompt": "..."} per line'
  )
  parser.add_argument(
    "--emotion",
    default=None,
    help="explicit intensities, e.g. happy=0.7,surprised=0.3 (bypasses text)",
  )


def read_prompts_file(path: str) -> list[str]:
  """Prompts of a JSONL file; ValueError naming the line for bad bytes / JSON / fields."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"--prompts-file {path!r} not found") from None
  except IsADirectoryError:
    raise ValueError(f"--prompts-file {path!r} is a folder; give a .jsonl file") from None
  prompts = []
  for i, line in enumerate(raw.split(b"\n"), start=1):
    try:
      text = line.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(
        f"--prompts-file {path}: line {i} is not valid UTF-8 (byte "
        f"{line[e.start : e.start + 1]!r} at column {e.start + 1}); save the file "
        "as UTF-8"
      ) from None
    if not text.strip():
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(
        f"--prompts-file {path}: line {i} is not JSON ({e.msg}); write one "
        '{"prompt": "..."} per line'
      ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
      raise ValueError(
        f'--prompts-file {path}: line {i} has no string "prompt" field; '
        'write one {"prompt": "..."} per line'
      )
    prompts.append(obj["prompt"])
  return prompts


def check_prompts(prompts: list[str]) -> None:
  for i, p in enumerate(prompts, start=1):
    if not p.strip():
      raise ValueError(
        f'prompt #{i} is empty; describe an emotion, e.g. "slightly sad", '
        "or use --emotion happy=0.7"
      )


def intensities_for(eib, prompts: list[str], warn=None) -> list[dict]:
  """[{'prompt', 'intensities'}] for prompts, with the truncation and no-content rules."""
  import numpy as np

  from emotalker_jax import fed
  from emotalker_jax.emotions import intensities_to_dict
  from emotalker_jax.models.eib import no_emotion_content

  warn = warn or (lambda msg: print(f"emotalker emotion: warning: {msg}", file=sys.stderr))
  check_prompts(prompts)
  s_hat, truncated = eib.predict(prompts)
  empty = no_emotion_content(s_hat, prompts)
  out = []
  for i, (p, s, tr, none) in enumerate(zip(prompts, s_hat, truncated, empty), start=1):
    short = p if len(p) <= 40 else p[:37] + "..."
    if tr:
      warn(
        f"prompt #{i} ({len(p)} characters) is longer than {eib.encoder.max_length} tokens; "
        "only its beginning was used"
      )
    row = {"prompt": p}
    if none:
      warn(f"prompt #{i} {short!r} names no emotion; using neutral")
      s = np.zeros_like(s)
      s[0] = fed.NEUTRAL_DEFAULT
    row["intensities"] = intensities_to_dict(s)
    if none:
      row["no_emotion_content"] = True
    out.append(row)
  return out


def run(args) -> int:
  from emotalker_jax.emotions import intensities_to_dict, parse_emotion_spec

  if args.emotion is None and not args.prompts and args.prompts_file is None:
    raise ValueError(
      'give prompts (emotalker emotion --eib DIR "a little sad"), '
      "--prompts-file F.jsonl, or --emotion happy=0.7"
    )
  rows = []
  if args.emotion is not None:
    rows.append(
      {"prompt": None, "intensities": intensities_to_dict(parse_emotion_spec(args.emotion))}
    )
  prompts = list(args.prompts)
  if args.prompts_file is not None:
    prompts += read_prompts_file(args.prompts_file)
  if prompts or args.prompts_file is not None:
    check_prompts(prompts)
    if args.eib is None:
      raise ValueError(
        "--eib DIR is required for text prompts; train one with `emotalker eib-train --out DIR`"
      )
    from emotalker_jax.models.eib import load_eib

    rows += intensities_for(load_eib(args.eib), prompts)
  for r in rows:
    print(json.dumps(r, ensure_ascii=False))
  return 0
