import csv

import pytest

from speechxl.data.manifest import COLUMNS, read_manifest, split_audio_slice, write_manifest
from speechxl.errors import DataError

ROWS = [
    {
        "id": "ted_1_0",
        "audio": "/data/ted_1.wav:16000:32000",
        "n_frames": 32000,
        "tgt_text": 'Er sagte: "Hallo".',
        "speaker": "spk.1",
        "src_text": 'He said "hello".',
        "src_lang": "en",
        "tgt_lang": "de",
    },
    {
        "id": "ext_mt_0",
        "audio": "",
        "n_frames": 0,
        "tgt_text": "Guten Morgen",
        "speaker": "",
        "src_text": "Good morning",
        "src_lang": "en",
        "tgt_lang": "de",
    },
]


def test_round_trip_keeps_every_field_unquoted(tmp_path):
    path = tmp_path / "train.tsv"
    write_manifest(path, ROWS)
    assert read_manifest(path) == [{k: str(v) for k, v in row.items()} for row in ROWS]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == COLUMNS
    assert '"hello"' in lines[1]  # never quoted or escaped: fairseq reads with QUOTE_NONE
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file behind


def test_reads_as_fairseq_reads_it(tmp_path):
    path = tmp_path / "train.tsv"
    write_manifest(path, ROWS)
    with open(path, newline="", encoding="utf-8") as f:  # fairseq's S2T dataset reader settings
        rows = list(
            csv.DictReader(
                f, delimiter="\t", quotechar=None, doublequote=False, lineterminator="\n", quoting=csv.QUOTE_NONE
            )
        )
    assert [r["tgt_text"] for r in rows] == [r["tgt_text"] for r in ROWS]


def test_reads_plain_fairseq_manifest_and_fills_missing_columns(tmp_path):
    path = tmp_path / "dev_st.tsv"
    path.write_text("id\taudio\tn_frames\ttgt_text\tspeaker\nu1\tfbank80.zip:12:3400\t120\tHallo\tspk\n")
    (row,) = read_manifest(path)
    assert row["tgt_text"] == "Hallo" and row["src_text"] == "" and row["tgt_lang"] == ""


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    good = "\t".join(["a", "x.wav", "10", "t", "s", "src", "en", "de"])
    path.write_text("\t".join(COLUMNS) + "\n" + good + "\n" + good.replace("a\t", "b\t") + "\textra\n")
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert str(err.value).startswith(f"{path}:3:")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("a\tx.wav\tten\tt\ts\tsrc\ten\tde", "n_frames"),
        ("a\t\t10\tt\ts\tsrc\ten\tde", "text-only"),
    ],
)
def test_invalid_fields_name_the_line(tmp_path, bad, message):
    path = tmp_path / "bad.tsv"
    path.write_text("\t".join(COLUMNS) + "\n" + bad + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_manifest(path)
    assert err.value.line == 2


def test_missing_required_column_and_duplicate_id(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("id\taudio\tn_frames\nx\ty.wav\t3\n")
    with pytest.raises(DataError, match="tgt_text") as err:
        read_manifest(path)
    assert err.value.line == 1
    write_manifest(path, [ROWS[0], ROWS[0]])
    with pytest.raises(DataError, match="duplicate id") as err:
        read_manifest(path)
    assert err.value.line == 3


@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_tab_or_newline_in_text_is_rejected_and_nothing_written(tmp_path, char):
    path = tmp_path / "train.tsv"
    rows = [ROWS[1], dict(ROWS[0], tgt_text=f"zwei{char}Zeilen")]
    with pytest.raises(DataError, match="tgt_text") as err:
        write_manifest(path, rows)
    assert err.value.line == 3 and "ted_1_0" in str(err.value)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_split_audio_slice():
    assert split_audio_slice("/a/b.wav:160:3200") == ("/a/b.wav", 160, 3200)
    assert split_audio_slice("clips16k/x.wav") == ("clips16k/x.wav", None, None)
    assert split_audio_slice("C:/x.wav") == ("C:/x.wav", None, None)
