import json

import pytest
import sacrebleu

from speechxl.cli import main
from speechxl.eval.bleu import bleu, normalize_for_wer, wer

HYPS = ["Der Arzt liest heute das Buch.", "Die drei Katzen schlafen.", "Wir sehen einen roten Hund."]
REFS = ["Heute liest der Arzt das Buch.", "Die drei Katzen schlafen.", "Wir sehen den roten Hund."]


def test_bleu_matches_sacrebleu_corpus_bleu():
    ours = bleu(HYPS, REFS)
    ref = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert ours["bleu"] == pytest.approx(ref.score, abs=0.01)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=0.01)
    assert "tok:13a" in ours["signature"] and "case:mixed" in ours["signature"]


def test_bleu_is_case_sensitive():
    assert bleu(["the cat sat on the mat ."], ["The Cat sat on the mat ."])["bleu"] < 100
    assert bleu(["The Cat sat on the mat ."], ["The Cat sat on the mat ."])["bleu"] == 100


def test_wer_normalises_case_and_punctuation():
    assert normalize_for_wer("Hello, World!  It's  me.") == "hello world it's me"
    # one substitution, one deletion over 6 reference words
    result = wer(["the cat sat on mat"], ["The cat sat on the hat."])
    assert result["errors"] == 2 and result["ref_words"] == 6
    assert result["wer"] == pytest.approx(100 * 2 / 6, abs=0.01)


def test_score_command_writes_json(tmp_path, capsys):
    (tmp_path / "h.txt").write_text("\n".join(HYPS) + "\n")
    (tmp_path / "r.txt").write_text("\n".join(REFS) + "\n")
    main(
        ["score", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--out", str(tmp_path / "s.json")]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "s.json").read_text())
    assert printed["n"] == 3


def test_score_line_count_mismatch_names_files(tmp_path):
    (tmp_path / "h.txt").write_text("a\nb\n")
    (tmp_path / "r.txt").write_text("a\n")
    with pytest.raises(SystemExit, match="h.txt"):  # the CLI turns a DataError into one clear line
        main(["score", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt")])
