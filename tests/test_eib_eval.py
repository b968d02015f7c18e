"""The human-style EIB evaluation set, its scorer, the keyword baseline and `emotalker eib-eval`."""

import collections
import json
import pathlib

import numpy as np
import pytest

from emotalker_jax.cli import main
from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS
from emotalker_jax.evaluation import eib_eval

HUMAN_SET = pathlib.Path(__file__).parent / "data" / "eib_human.jsonl"
N_BOOT = 200


@pytest.fixture(scope="module")
def human_rows():
  return eib_eval.read_human_set(str(HUMAN_SET))


def row(id, prompt, category, dominant=None, top2=None, ladder=None, level=None, half="dev"):
  return {
    "id": id,
    "prompt": prompt,
    "category": category,
    "half": half,
    "dominant": dominant,
    "top2": top2,
    "ladder": ladder,
    "level": level,
  }


# A small set whose keyword-baseline figures are worked out by hand below.
SMALL = [
  row("a", "she is angry", "plain", "angry"),  # angry 0.5: right
  row("b", "a faint smile", "plain", "happy", half="test"),  # no keyword -> neutral: wrong
  row("c", "slightly sad", "hedge", "sad"),  # right
  row("d", "happy but scared", "contrast", None, ["happy", "fear"]),  # fear=happy=0.5: right
  row("e", "angry and a little sad", "mixture2", "angry", ["angry", "sad"]),  # right, top1 right
  row("f", "grinning and amazed", "mixture2", None, ["happy", "surprised"]),  # {surprised, neutral}
  row("l0", "slightly angry", "ladder", "angry", ladder="L", level=0),  # 0.5
  row("l1", "angry", "ladder", "angry", ladder="L", level=1),  # 0.5: not increasing
  row("l2", "furious and livid", "ladder", "angry", ladder="L", level=2),  # 1.0
  row("m0", "uneasy", "ladder", "fear", ladder="M", level=0, half="test"),  # fear 0, top1 wrong
  row("m1", "nervous", "ladder", "fear", ladder="M", level=1, half="test"),  # 0.5
  row("m2", "scared and terrified", "ladder", "fear", ladder="M", level=2, half="test"),  # 1.0
  row("n", "the train leaves at six", "no_content", "neutral"),  # right
]


def write(path, objs):
  path.write_text("".join(json.dumps(o) + "\n" for o in objs))
  return str(path)


def oracle(rows):
  """(N, 8) intensities that follow the labels: dominant 1, the other of top2 0.6 (0.8 / 0.7
  for an even pair), a mixture's third emotion 0.3, ladder emotion 0.2 + 0.2 * level."""
  s = np.zeros((len(rows), len(EMOTIONS)))
  for i, r in enumerate(rows):
    if r.emotions:
      for e in r.emotions:
        s[i, EMOTION_INDEX[e]] = 0.3
    if r.top2:
      a, b = r.top2
      s[i, EMOTION_INDEX[a]], s[i, EMOTION_INDEX[b]] = 0.8, 0.7
      if r.dominant:
        other = b if r.dominant == a else a
        s[i, EMOTION_INDEX[r.dominant]], s[i, EMOTION_INDEX[other]] = 1.0, 0.6
    elif r.level is not None:
      s[i, EMOTION_INDEX[r.dominant]] = 0.2 + 0.2 * r.level
    else:
      s[i, EMOTION_INDEX[r.dominant]] = 1.0
  return s


def wrong(rows):
  """(N, 8) intensities that miss every label: the two largest are emotions the row does not
  name, and a ladder's emotion decreases with level."""
  s = np.zeros((len(rows), len(EMOTIONS)))
  for i, r in enumerate(rows):
    named = {r.dominant, *(r.top2 or ()), *(r.emotions or ())}
    others = [e for e in EMOTIONS if e not in named]
    s[i, EMOTION_INDEX[others[0]]], s[i, EMOTION_INDEX[others[1]]] = 1.0, 0.9
    if r.level is not None:
      s[i, EMOTION_INDEX[r.dominant]] = 0.5 - 0.1 * r.level
  return s


def test_committed_set_is_complete_and_balanced(human_rows):
  rows = human_rows
  assert len(rows) >= 240
  halves = collections.defaultdict(set)
  for r in rows:
    halves[r.half].add(r.category)
  assert halves["dev"] == halves["test"] == set(eib_eval.CATEGORIES)
  # every ladder: >= 3 levels, 0..k-1, one emotion, all in one half
  ladders = collections.defaultdict(list)
  for r in rows:
    if r.ladder is not None:
      ladders[r.ladder].append(r)
  assert len(ladders) >= 10
  for lid, members in ladders.items():
    assert len(members) >= 3, lid
    assert sorted(m.level for m in members) == list(range(len(members))), lid
    assert len({m.half for m in members}) == 1 and len({m.dominant for m in members}) == 1
  assert len({m[0].dominant for m in ladders.values()}) >= 7
  # labels: single-label rows have a dominant emotion, mixtures their top two
  for r in rows:
    if r.category in eib_eval.MIXED_CATEGORIES:
      assert r.top2 is not None and (r.dominant is None or r.dominant in r.top2)
    else:
      assert r.dominant in EMOTIONS and r.top2 is None
  # every emotion is a dominant in some single-label row of each half
  for h in ("dev", "test"):
    doms = {r.dominant for r in rows if r.half == h and r.top2 is None}
    assert doms == set(EMOTIONS), h
  assert len({r.prompt.lower() for r in rows}) == len(rows)  # no duplicated prompt
  dev = eib_eval.read_human_set(str(HUMAN_SET), half="dev")
  test = eib_eval.read_human_set(str(HUMAN_SET), half="test")
  assert {r.id for r in dev} | {r.id for r in test} == {r.id for r in rows}
  assert not {r.id for r in dev} & {r.id for r in test}
  assert abs(len(dev) - len(test)) <= 0.1 * len(rows)


def test_oracle_scores_one_and_wrong_scores_zero(human_rows):
  good = eib_eval.score_human_set(human_rows, oracle(human_rows), n_boot=N_BOOT)
  bad = eib_eval.score_human_set(human_rows, wrong(human_rows), n_boot=N_BOOT)
  for key in ("single_top1", "mixed_top2", "ladder_order"):
    assert good["summary"][key]["value"] == 1.0 and good["summary"][key]["ci"] == [1.0, 1.0]
    assert good["summary"][key]["passes"] is True
    assert bad["summary"][key]["value"] == 0.0 and bad["summary"][key]["passes"] is False
  assert good["missed"] == {"top1": [], "top2_mixed": [], "order": []}
  n_dom = sum(r.dominant is not None for r in human_rows)
  assert len(bad["missed"]["top1"]) == bad["overall"]["top1"]["n"] == n_dom
  assert len(bad["missed"]["order"]) == len({r.ladder for r in human_rows if r.ladder})
  for cat, figs in good["categories"].items():
    for f in ("top1", "top2_mixed", "order"):
      assert figs[f]["value"] in (None, 1.0), (cat, f)


def test_keyword_baseline_hand_values():
  s = eib_eval.keyword_baseline(["unhappy", "furious and livid and angry", "hello", "GLAD!"])
  expect = np.zeros((4, 8), np.float32)
  expect[0, EMOTION_INDEX["sad"]] = 0.5  # "unhappy" is a sad word, not a happy one
  expect[1, EMOTION_INDEX["angry"]] = 1.0  # three hits, capped at 1
  expect[2, EMOTION_INDEX["neutral"]] = 0.7  # no keyword
  expect[3, EMOTION_INDEX["happy"]] = 0.5
  np.testing.assert_array_equal(s, expect)


def test_keyword_baseline_figures_on_small_set(tmp_path):
  path = write(tmp_path / "small.jsonl", SMALL)
  rows = eib_eval.read_human_set(path)
  sc = eib_eval.score_human_set(rows, eib_eval.keyword_baseline([r.prompt for r in rows]))
  # single-label rows: a, b, c, l0-l2, m0-m2, n = 10, wrong: b, m0
  assert sc["summary"]["single_top1"]["value"] == pytest.approx(8 / 10)
  assert sc["summary"]["single_top1"]["n"] == 10
  assert sc["summary"]["mixed_top2"]["value"] == pytest.approx(2 / 3)  # d, e right; f wrong
  assert sc["summary"]["ladder_order"]["value"] == 0.5  # M increases, L does not
  assert sc["overall"]["top1"]["value"] == pytest.approx(9 / 11)  # + e (f has no dominant)
  assert sc["categories"]["plain"]["top1"]["value"] == 0.5
  assert sc["categories"]["contrast"]["top1"]["n"] == 0
  assert sc["categories"]["contrast"]["top1"]["value"] is None
  assert sc["categories"]["hedge"]["top1"]["ci"] == [1.0, 1.0]
  assert [m["id"] for m in sc["missed"]["top1"]] == ["b", "m0"]
  assert sc["missed"]["top1"][0]["predicted"][0] == ["neutral", 0.7]
  assert [m["id"] for m in sc["missed"]["top2_mixed"]] == ["f"]
  assert [m["ladder"] for m in sc["missed"]["order"]] == ["L"]
  assert sc["missed"]["order"][0]["predicted"] == [0.5, 0.5, 1.0]
  lo, hi = sc["summary"]["single_top1"]["ci"]
  assert 0.0 <= lo < 0.8 < hi <= 1.0
  # the dev half keeps only its rows (and ladder L, which is all dev)
  dev = eib_eval.read_human_set(path, half="dev")
  assert [r.id for r in dev] == ["a", "c", "d", "e", "f", "l0", "l1", "l2", "n"]


def test_cli_keyword_baseline_writes_the_same_figures(tmp_path, capsys):
  path = write(tmp_path / "small.jsonl", SMALL)
  out = tmp_path / "out" / "scores.json"
  args = ["eib-eval", "--baseline", "keyword", "--prompts", path, "--half", "all"]
  assert main(args + ["--json", str(out), "--n-boot", str(N_BOOT)]) == 0
  printed = capsys.readouterr().out
  assert "single_top1" in printed and "target >= 0.92" in printed and "FAIL" in printed
  got = json.loads(out.read_text())
  rows = eib_eval.read_human_set(path)
  ref = eib_eval.score_human_set(
    rows, eib_eval.keyword_baseline([r.prompt for r in rows]), n_boot=N_BOOT
  )
  for key in ("summary", "categories", "overall", "missed", "n"):
    assert got[key] == json.loads(json.dumps(ref[key])), key
  assert got["summary"]["ladder_order"]["value"] == 0.5
  assert got["half"] == "all" and got["baseline"] == "keyword" and got["eib"] is None
  # default half is dev
  assert main(args[:-2] + ["--json", str(out), "--n-boot", "20"]) == 0
  assert json.loads(out.read_text())["n"] == 9


@pytest.mark.parametrize(
  "bad, message",
  [
    ("not json", "line 2 is not JSON"),
    ({**SMALL[0], "id": "z", "colour": "red"}, "unknown field(s) colour"),
    ({k: v for k, v in SMALL[0].items() if k != "half"} | {"id": "z"}, "missing field(s) half"),
    ({**SMALL[0], "id": "z", "dominant": "joyful"}, "'joyful' is not an emotion name"),
    ({**SMALL[3], "id": "z", "top2": ["happy", "glee"]}, "'glee' is not an emotion name"),
    ({**SMALL[0], "id": "z", "category": "poetry"}, "unknown category 'poetry'"),
    ({**SMALL[3], "id": "z", "top2": None}, "needs top2"),
    ({**SMALL[0], "id": "a"}, "id 'a' already used on line 1"),
  ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad, message):
  path = tmp_path / "bad.jsonl"
  text = json.dumps(SMALL[0]) + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n"
  path.write_text(text)
  with pytest.raises(ValueError, match="bad.jsonl") as e:
    eib_eval.read_human_set(str(path))
  assert message in str(e.value)
  assert "line 2" in str(e.value)


def test_short_ladder_and_bad_arguments(tmp_path):
  path = write(tmp_path / "short.jsonl", [r for r in SMALL if r["id"] != "m2"])
  with pytest.raises(ValueError, match=r"ladder 'M' \(line 10\) has 2 level\(s\)"):
    eib_eval.read_human_set(path)
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    eib_eval.read_human_set(str(tmp_path / "nope.jsonl"))
  good = write(tmp_path / "small.jsonl", SMALL)
  with pytest.raises(ValueError, match="half must be"):
    eib_eval.read_human_set(good, half="train")
  rows = eib_eval.read_human_set(good)
  with pytest.raises(ValueError, match=r"s_hat must have shape \(13, 8\)"):
    eib_eval.score_human_set(rows, np.zeros((12, 8)))


def test_cli_errors_name_the_flag(tmp_path, capsys):
  good = write(tmp_path / "small.jsonl", SMALL)
  cases = [
    (["--baseline", "keyword", "--prompts", str(tmp_path / "nope.jsonl")], "--prompts"),
    (["--eib", str(tmp_path / "no_eib"), "--prompts", good], "--eib"),
    (["--prompts", good], "give exactly one of --eib DIR or --baseline keyword"),
  ]
  for args, flag in cases:
    assert main(["eib-eval", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emotalker eib-eval: error:") and flag in err, err


def test_rows_seen_in_the_training_corpus_are_found_and_left_out(tmp_path):
  """A row counts as seen when its words occur, whole, inside a corpus prompt (case and
  punctuation ignored); the unseen summary is the scorer's figures on the other rows."""
  corpus = ["She is ANGRY, very.", "a faint smile crosses her face", "uneasy"]
  prompts = [r["prompt"] for r in SMALL]
  seen = eib_eval.seen_in_corpus(prompts, corpus)
  # "she is angry" and "a faint smile" occur inside corpus prompts, "angry" too (ladder l1);
  # "uneasy" is a whole corpus prompt; "slightly angry" and "an" inside words do not count.
  want = {"a", "b", "l1", "m0"}
  assert {SMALL[i]["id"] for i in np.flatnonzero(seen)} == want
  rows = eib_eval.read_human_set(write(tmp_path / "s.jsonl", SMALL))
  s = eib_eval.keyword_baseline([r.prompt for r in rows])
  u = eib_eval.unseen_summary(rows, s, seen, n_boot=N_BOOT)
  assert u["n"] == len(SMALL) - len(want) and set(u["seen_ids"]) == want
  keep = [r for r in rows if r.id not in want]
  direct = eib_eval.score_human_set(keep, s[[i for i, r in enumerate(rows) if r.id not in want]])
  for k in ("single_top1", "mixed_top2", "ladder_order"):
    assert u["summary"][k]["value"] == direct["summary"][k]["value"]
  # ladder L keeps l0 and l2 (still increasing: 0.5 < 1.0), M keeps m1 and m2
  assert u["summary"]["ladder_order"]["value"] == 1.0
