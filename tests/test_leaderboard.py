"""speechxl leaderboard / speechxl plot: published numbers, comparable tables, paired bootstrap, PNGs, bad input."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from speechxl.cli import main
from speechxl.eval.leaderboard import (
    bleu_type,
    build_leaderboard,
    build_tables,
    load_published,
    load_results,
    load_simultaneous,
    paired_bootstrap,
    parse_corpus,
    plot_leaderboard,
    published_path,
    render,
)
from speechxl.eval.plots import plot_runs

SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
DETOK = "sacrebleu-13a-detok-cased"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_score(folder: Path, **fields) -> Path:
    """A score.json as `speechxl translate` writes it once it records the test set (fields override)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "corpus": "mustc",
        "corpus_version": "v1",
        "split": "tst-COMMON",
        "direction": "en-de",
        "signature": SIG,
        "checkpoint": "exp/run/avg",
        "beam": 10,
        "lenpen": 1.0,
        "bleu": 24.0,
        "chrf": 50.1,
    }
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}  # None: the field is absent
    path = folder / "score.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def table_of(tables, system: str):
    """The one table holding our result named `system`."""
    found = [t for t in tables for r in t.rows if r.ours and r.system == system]
    assert len(found) == 1, f"{system} in {len(found)} tables"
    return found[0]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ----------------------------------------------------------------------------------------------- published


def _published(system: str, corpus: str, direction: str, bleu_type: str = DETOK):
    found = [
        r
        for r in load_published()
        if r.system == system and r.corpus == corpus and r.direction == direction and r.bleu_type == bleu_type
    ]
    assert len(found) == 1, found
    return found[0]


def test_published_numbers_round_trip_with_their_sources():
    xstnet = _published("XSTNet expand (+ external MT)", "mustc", "en-de")
    assert (xstnet.bleu, xstnet.corpus_version, xstnet.split) == (27.8, "v1", "tst-COMMON")
    assert "XSTNet README" in xstnet.source
    assert _published("XSTNet expand (+ external MT)", "mustc", "en-ru").bleu == 18.5
    assert _published("ESPnet1 Transformer + ASR pre-train", "mustc", "en-ru").bleu == 14.31
    fairseq_s = _published("S2T Transformer-s + ASR pre-train", "covost2", "fr-en")
    assert (fairseq_s.bleu, fairseq_s.split) == (27.2, "test")
    assert fairseq_s.source == "fairseq examples/speech_to_text/docs/covost_example.md"
    assert _published("S2T Conformer (rel. pos), from scratch", "covost2", "en-et").bleu == 14.49
    assert _published("XSTNet base (no external MT)", "librispeech-aug", "en-fr", "tokenized-uncased").bleu == 21.0
    assert _published("XSTNet base (no external MT)", "librispeech-aug", "en-fr").bleu == 18.8


def test_published_records_are_complete_unique_and_without_fat_st():
    records = load_published()
    assert len(records) == 105
    assert all(r.source and r.system and r.direction and r.corpus and r.split for r in records)
    keys = [(r.system, r.corpus, r.corpus_version, r.split, r.direction, r.bleu_type) for r in records]
    assert len(keys) == len(set(keys))
    assert not any("FAT" in r.system for r in records)
    # Only COSTT and LUT lack a BLEU type: their source does not state it.
    assert {r.system.split()[0] for r in records if r.bleu_type is None} == {"COSTT", "LUT"}
    # Simultaneous numbers stay in their own section, with their latency.
    simul = load_simultaneous()
    assert simul[0]["bleu"] == 13.95 and simul[0]["latency"]["AL_ms"] == 1751.8
    assert 13.95 not in [r.bleu for r in records]


def test_published_yaml_is_package_data():
    assert published_path().name == "published.yaml" and published_path().is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '[tool.setuptools.package-data]\nspeechxl = ["eval/*.yaml"]' in pyproject


# ----------------------------------------------------------------------------------------------- parsing


def test_bleu_type_from_sacrebleu_signatures():
    assert bleu_type(SIG) == DETOK
    assert bleu_type("nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0") == "sacrebleu-13a-detok-uncased"
    assert bleu_type("nrefs:1|case:mixed|eff:no|tok:intl|smooth:exp|version:2.3.1") == "sacrebleu-intl-detok-cased"
    assert bleu_type("nrefs:1|case:lc|eff:no|tok:none|smooth:exp|version:2.6.0") == "sacrebleu-none-uncased"
    assert bleu_type("BLEU+case.mixed+numrefs.1+smooth.exp+tok.13a+version.1.4.14") == DETOK  # sacreBLEU 1.x
    assert bleu_type("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0") == DETOK + "-nrefs2"
    assert bleu_type("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0") is None  # chrF's
    assert bleu_type(None) is None


def test_corpus_names_as_the_recipes_write_them():
    assert parse_corpus("MuST-C tst-COMMON") == ("mustc", None, "tst-COMMON")
    assert parse_corpus("MuST-C v2 tst-HE") == ("mustc", "v2", "tst-HE")
    assert parse_corpus("CoVoST 2 test") == ("covost2", None, "test")
    assert parse_corpus("synthst") == ("synthst", None, None)


# ----------------------------------------------------------------------------------------------- tables


def test_incomparable_results_never_share_a_table(tmp_path):
    paths = [
        write_score(tmp_path / "v1" / "decode_tst-COMMON"),
        write_score(tmp_path / "v2" / "decode_tst-COMMON", corpus_version="v2"),
        write_score(tmp_path / "he" / "decode_tst-HE", split="tst-HE"),
        write_score(tmp_path / "lc" / "decode_tst-COMMON", signature=SIG.replace("case:mixed", "case:lc")),
        write_score(tmp_path / "tok" / "decode_tst-COMMON", signature=None, bleu_type="tokenized-uncased"),
        write_score(tmp_path / "synth" / "decode_tst-COMMON", corpus="synthst", corpus_version=None),
    ]
    tables = build_tables(load_published() + load_results(paths))
    ours = {name: table_of(tables, name) for name in ("v1", "v2", "he", "lc", "tok", "synth")}
    assert len({id(t) for t in ours.values()}) == 6
    v1 = ours["v1"]
    assert v1.title == "MuST-C v1 tst-COMMON, BLEU: sacrebleu-13a-detok-cased" and v1.comparable
    assert any(r.system == "XSTNet expand (+ external MT)" for r in v1.rows)
    assert ours["v2"].title.startswith("MuST-C v2 tst-COMMON") and len(ours["v2"].rows) == 1
    assert ours["he"].title.startswith("MuST-C v1 tst-HE") and len(ours["he"].rows) == 1
    assert ours["tok"].title == "MuST-C v1 tst-COMMON, BLEU: tokenized-uncased"
    assert ours["synth"].title == "SynthST tst-COMMON, BLEU: sacrebleu-13a-detok-cased"
    for table in tables:  # one key per table, whatever its rows
        assert len({(r.ours, r.system) for r in table.rows}) == len(table.rows)


def test_ranking_and_markdown(tmp_path):
    write_score(tmp_path / "mine" / "decode_tst-COMMON", bleu=26.0)
    board = build_leaderboard([tmp_path / "mine"], bootstrap=0)
    table = table_of(board.tables, "mine")
    assert [r.rank for r in table.rows[:9]] == list(range(1, 10))  # complete rows, best mean first
    mine = next(r for r in table.rows if r.ours)
    assert mine.rank is None and mine.mean is None and mine.direction_ranks["en-de"] == 4  # 28.3 27.8 27.1 26.0
    text = render(board, "md")
    assert "| 1 | ConST expand | 28.3 | 32.0 | 38.3 |" in text
    assert "|  | **mine** (ours) | **26.0** (4/12) | – |" in text


def test_unknown_fields_go_to_a_table_that_names_them(tmp_path, capsys):
    old = tmp_path / "old" / "decode_tst-COMMON" / "score.json"  # today's score.json: no corpus fields
    old.parent.mkdir(parents=True)
    old.write_text(
        json.dumps(
            {
                "checkpoint": "exp/old/avg",
                "n": 100,
                "task": "st",
                "beam": 5,
                "lenpen": 1.0,
                "manifest": "data/tst-COMMON.tsv",
                "bleu": 20.5,
                "chrf": 45.0,
                "signature": SIG,
            }
        )
    )
    unsigned = write_score(tmp_path / "unsigned" / "decode_tst-COMMON", signature=None)
    recipe = tmp_path / "leaderboard.jsonl"  # what recipes/mustc stage 6 appends
    recipe.write_text(
        json.dumps(
            {
                "system": "speechxl xstnet_base",
                "corpus": "MuST-C tst-COMMON",
                "pair": "en-de",
                "bleu": 25.1,
                "signature": SIG,
                "exp": "exp/x",
            }
        )
        + "\n"
    )
    tables = build_tables(load_published() + load_results([old, unsigned, recipe]))
    err = capsys.readouterr().err
    assert f"{old}: no corpus, corpus_version, split, direction" in err
    assert f"{unsigned}: no signature" in err
    assert f"{recipe}:1: no corpus_version" in err
    assert table_of(tables, "old").title == (
        "corpus ? version ? split ?, BLEU: sacrebleu-13a-detok-cased "
        "(not comparable: unknown corpus, corpus version, split, direction)"
    )
    assert table_of(tables, "unsigned").title == (
        "MuST-C v1 tst-COMMON, BLEU: ? (not comparable: unknown BLEU type (no signature))"
    )
    assert table_of(tables, "speechxl xstnet_base").title == (
        "MuST-C version ? tst-COMMON, BLEU: sacrebleu-13a-detok-cased (not comparable: unknown corpus version)"
    )
    for name in ("old", "unsigned", "speechxl xstnet_base"):
        assert all(r.ours for r in table_of(tables, name).rows)


def test_bad_inputs_are_named_and_the_rest_still_reported(tmp_path, capsys):
    write_score(tmp_path / "good" / "decode_tst-COMMON", bleu=23.0)
    rows = tmp_path / "results.jsonl"
    line1 = json.dumps(
        {
            "system": "row1",
            "corpus": "mustc",
            "corpus_version": "v1",
            "split": "tst-COMMON",
            "direction": "en-fr",
            "bleu": 30.0,
            "signature": SIG,
        }
    )
    line3 = line1.replace("row1", "row3").replace("en-fr", "en-es")
    rows.write_text(line1 + "\n" + line1[:40] + "\n" + line3 + "\n")  # line 2 cut mid-write
    broken = tmp_path / "broken" / "score.json"
    broken.parent.mkdir()
    broken.write_text('{"bleu": 2')
    asr = write_score(tmp_path / "asr", bleu=None, wer=12.0)
    main(
        [
            "leaderboard",
            str(tmp_path / "good"),
            str(rows),
            str(broken),
            str(asr),
            str(tmp_path / "nowhere"),
            "--bootstrap",
            "0",
        ]
    )
    out, err = capsys.readouterr()
    assert f"speechxl leaderboard: {rows}:2: not valid JSON (a truncated line?); skipped" in err
    assert f"speechxl leaderboard: {broken}: not valid JSON" in err
    assert f"speechxl leaderboard: {asr}: no numeric `bleu` (a WER score of an ASR run?); skipped" in err
    assert f"speechxl leaderboard: {tmp_path / 'nowhere'}: not found" in err
    assert "**good** (ours)" in out and "**row1** (ours)" in out and "**row3** (ours)" in out
    assert "ConST expand" in out


def test_output_formats(tmp_path, capsys):
    write_score(tmp_path / "mine" / "decode_tst-COMMON")
    for fmt in ("csv", "json"):
        main(["leaderboard", str(tmp_path / "mine"), "--format", fmt, "--no-published"])
        out = capsys.readouterr().out
        if fmt == "csv":
            header, line = out.splitlines()
            assert header.startswith("table,comparable,rank,system,ours,direction,bleu")
            assert ",mine,True,en-de,24.0," in line
        else:
            data = json.loads(out)
            assert [t["title"] for t in data["tables"]] == ["MuST-C v1 tst-COMMON, BLEU: sacrebleu-13a-detok-cased"]
            assert data["tables"][0]["rows"][0]["scores"] == {"en-de": 24.0}


# ----------------------------------------------------------------------------------------------- significance


def _corpus(n: int = 80) -> list[str]:
    rng = random.Random(0)
    words = "the cat sat on a mat while my dog ran to the red house near our old green tree".split()
    return [" ".join(rng.choice(words) for _ in range(10)) for _ in range(n)]


def test_paired_bootstrap_p_values():
    refs = _corpus()
    rng = random.Random(1)
    worse = [" ".join(rng.sample(r.split(), 6)) for r in refs]
    assert paired_bootstrap(refs, worse, refs) < 0.05
    assert paired_bootstrap(worse, worse, refs) == 1.0


def _decoded(folder: Path, hyps: list[str], refs: list[str], bleu: float) -> None:
    write_score(folder, bleu=bleu)
    (folder / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (folder / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")


def test_leaderboard_tests_our_results_on_the_same_references(tmp_path, capsys):
    refs = _corpus()
    rng = random.Random(2)
    _decoded(tmp_path / "good" / "decode_tst-COMMON", refs, refs, 100.0)
    _decoded(tmp_path / "same" / "decode_tst-COMMON", refs, refs, 100.0)
    _decoded(tmp_path / "bad" / "decode_tst-COMMON", [" ".join(rng.sample(r.split(), 5)) for r in refs], refs, 20.0)
    _decoded(tmp_path / "other" / "decode_tst-COMMON", refs[:40], refs[:40], 100.0)  # another test set
    board = build_leaderboard(
        [tmp_path / name for name in ("good", "same", "bad", "other")], published=False, bootstrap=200
    )
    pairs = {(p.a, p.b): p for p in board.pairs}
    assert set(pairs) == {
        ("good (en-de)", "same (en-de)"),
        ("good (en-de)", "bad (en-de)"),
        ("same (en-de)", "bad (en-de)"),
    }
    assert pairs[("good (en-de)", "same (en-de)")].p_value == 1.0
    assert pairs[("good (en-de)", "bad (en-de)")].p_value < 0.05
    text = render(board, "md")
    assert "### Paired bootstrap resampling (sacreBLEU, 200 resamples)" in text
    assert "| good (en-de) | 100.0 | same (en-de) | 100.0 | 1.0000 (identical hypotheses) |" in text


def test_hyp_and_ref_files_recorded_in_score_json(tmp_path):
    refs = _corpus()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "refs.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (texts / "a.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (texts / "b.txt").write_text("\n".join(r.split()[0] for r in refs) + "\n", encoding="utf-8")
    write_score(tmp_path / "a", bleu=100.0, hyp_file="../texts/a.txt", ref_file=str(texts / "refs.txt"))
    write_score(tmp_path / "b", bleu=1.0, hyp_file="../texts/b.txt", ref_file="../texts/refs.txt")
    board = build_leaderboard([tmp_path / "a", tmp_path / "b"], published=False, bootstrap=100)
    assert [(p.a, p.b) for p in board.pairs] == [("a (en-de)", "b (en-de)")] and board.pairs[0].p_value < 0.05


# ----------------------------------------------------------------------------------------------- pictures


def test_leaderboard_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra: pip install -e '.[test]'")
    write_score(tmp_path / "mine" / "decode_tst-COMMON", bleu=26.0)
    write_score(tmp_path / "mine_fr" / "decode_tst-COMMON", bleu=35.0, direction="en-fr")
    png = tmp_path / "board.png"
    main(["leaderboard", str(tmp_path / "mine"), str(tmp_path / "mine_fr"), "--png", str(png), "--bootstrap", "0"])
    assert f"wrote {png}" in capsys.readouterr().err
    width, height = png_size(png)
    assert 800 <= width <= 3000 and 300 <= height <= 3000  # two panels side by side
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (height, width)
    # Without any of ours, every (table, direction) of the published numbers gets a panel.
    everything = plot_leaderboard(build_leaderboard([], bootstrap=0), tmp_path / "all.png")
    assert png_size(everything)[1] > height


def _train_log(run: Path, records: list[dict], tail: str = "") -> Path:
    run.mkdir(parents=True)
    path = run / "train_log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


def _records(stages: bool, with_valid: bool = True, time: bool = False) -> list[dict]:
    records = []
    for update in range(10, 210, 10):
        stage = {"stage": "mt_pretrain" if update <= 100 else "multitask"} if stages else {}
        clock = {"time": 1.7e9 + 3 * update} if time else {}
        records.append(
            {
                "type": "train",
                "update": update,
                "epoch": 1,
                **stage,
                "loss": 5 - update / 100,
                "nll_loss": 4.0,
                "ppl": 20.0,
                "gnorm": 1.0,
                "lr": 1e-4 * min(1, update / 50),
                **clock,
            }
        )
        if with_valid and update % 50 == 0:
            records.append(
                {
                    "type": "valid",
                    "update": update,
                    "epoch": 1,
                    **stage,
                    "loss": 5 - update / 120,
                    "bleu": update / 10,
                    "bleu_signature": SIG,
                    "improved": True,
                    **clock,
                }
            )
    return records


def test_plot_runs(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra: pip install -e '.[test]'")
    staged = _train_log(tmp_path / "staged", _records(stages=True), tail='{"type": "train", "upd')
    no_valid = _train_log(tmp_path / "no_valid", _records(stages=False, with_valid=False))
    out = plot_runs([tmp_path / "staged", tmp_path / "no_valid", tmp_path / "missing"], tmp_path / "curves.png")
    err = capsys.readouterr().err
    assert f"{staged}:25: not valid JSON (a truncated line?); skipped" in err
    assert f"{no_valid}: no validation records: only the training curves are plotted" in err
    assert f"{tmp_path / 'missing' / 'train_log.jsonl'}: no training log here; run skipped" in err
    width, height = png_size(out)
    assert (width, height) == (700, 1000)  # against update only: the records carry no time
    _train_log(tmp_path / "timed", _records(stages=True, time=True))
    main(["plot", str(tmp_path / "timed"), str(tmp_path / "staged"), "--out", str(tmp_path / "timed.png")])
    assert png_size(tmp_path / "timed.png") == (1400, 1000)  # a second column: against wall time


def test_missing_matplotlib_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if it were not installed
    _train_log(tmp_path / "run", _records(stages=False))
    for argv in (
        ["leaderboard", "--png", str(tmp_path / "b.png")],
        ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "c.png")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert "plotting needs matplotlib: pip install 'speechxl[plots]'" in str(exit_info.value.code)
