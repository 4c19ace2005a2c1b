"""Joint SentencePiece vocabulary with language / task tags whose ids are the model's ids.

Trained with fairseq's dictionary order (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3), then the tags
`<audio> <asr> <ast>` and one `<xx>` per language as user-defined symbols, so each tag is one piece.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

log = logging.getLogger(__name__)

TASK_TAGS = ["audio", "asr", "ast"]
SPECIAL_PIECES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
# A tag or special piece: `<de>`, `<zh-CN>`, `<audio>`, `</s>`. Ordinary pieces never look like this
# because SentencePiece marks word starts with "▁".
_TAG_PIECE = re.compile(r"^</?[A-Za-z][A-Za-z0-9_:-]*>$")


def tag_piece(name: str) -> str:
    return f"<{name}>"


def train_vocab(texts: Iterable[str], out_prefix: str | os.PathLike, vocab_size: int, langs: Sequence[str]) -> "Vocab":
    """Train a unigram model on `texts`; writes `<out_prefix>.model` and `.vocab` atomically.

    A size larger than the text supports falls back to the largest size it does support
    (`hard_vocab_limit=False`); compare `len(vocab)` with `vocab_size` to see whether that happened.
    """
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    texts = list(texts)
    symbols = [tag_piece(t) for t in TASK_TAGS] + [tag_piece(lang) for lang in dict.fromkeys(langs)]
    with tempfile.TemporaryDirectory(dir=out_prefix.parent, prefix=".spm.") as tmp:
        tmp_prefix = Path(tmp) / "spm"
        options = dict(
            model_prefix=str(tmp_prefix),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            bos_id=0,
            pad_id=1,
            eos_id=2,
            unk_id=3,
            user_defined_symbols=symbols,
            minloglevel=2,
        )
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), **options)
        except RuntimeError as err:
            if "Vocabulary size too high" in str(err):
                log.warning("vocab size %d is too large for this text; using the largest it supports", vocab_size)
                spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), hard_vocab_limit=False, **options)
            elif "smaller than required_chars" in str(err):
                raise ValueError(
                    f"vocab size {vocab_size} cannot hold every character of the training text "
                    f"plus the special pieces and tags ({err}); use a larger vocab size"
                ) from err
            else:
                raise
        for suffix in (".vocab", ".model"):  # .model last: its presence means the pair is complete
            os.replace(f"{tmp_prefix}{suffix}", f"{out_prefix}{suffix}")
    return Vocab.load(f"{out_prefix}.model")


class Vocab:
    """Token ids <-> text. With `pieces` (index = id) the ids follow an imported fairseq/HF dictionary;
    SentencePiece still segments the text, and pieces missing from the dictionary become `unk`."""

    def __init__(self, model_proto: bytes, pieces: Sequence[str] | None = None):
        self._proto = model_proto
        self._pieces = list(pieces) if pieces is not None else None
        self._setup()

    @classmethod
    def load(cls, spm_path: str | os.PathLike, pieces: Sequence[str] | None = None) -> "Vocab":
        return cls(Path(spm_path).read_bytes(), pieces)

    def _setup(self) -> None:
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        if self._pieces is None:
            self._id_to_piece = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        else:
            self._id_to_piece = self._pieces
        self._piece_to_id = {p: i for i, p in enumerate(self._id_to_piece)}
        for name, piece in SPECIAL_PIECES.items():
            if piece not in self._piece_to_id:
                raise ValueError(f"vocabulary has no {piece!r} piece (needed as {name})")
            setattr(self, name, self._piece_to_id[piece])
        self._dropped_on_decode = {i for i, p in enumerate(self._id_to_piece) if _TAG_PIECE.match(p)}

    # SentencePieceProcessor is rebuilt from the model bytes so a Vocab can go to DataLoader workers.
    def __getstate__(self) -> dict:
        return {"proto": self._proto, "pieces": self._pieces}

    def __setstate__(self, state: dict) -> None:
        self._proto, self._pieces = state["proto"], state["pieces"]
        self._setup()

    def __len__(self) -> int:
        return len(self._id_to_piece)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without bos/eos."""
        if self._pieces is None:
            return self._sp.encode(text)
        return [self._piece_to_id.get(p, self.unk) for p in self._sp.encode(text, out_type=str)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special pieces and tags are dropped."""
        pieces = [self._id_to_piece[i] for i in ids if i not in self._dropped_on_decode]
        return self._sp.decode_pieces(pieces)

    def piece(self, token_id: int) -> str:
        return self._id_to_piece[token_id]

    def _tag_piece(self, name: str) -> str | None:
        # ours are `<de>`; fairseq's and HF's multilingual dictionaries spell language tags `<lang:de>`
        for piece in (tag_piece(name), f"<lang:{name}>"):
            if piece in self._piece_to_id:
                return piece
        return None

    def has_tag(self, name: str) -> bool:
        return self._tag_piece(name) is not None

    def tag(self, name: str) -> int:
        """Id of `<name>` (or fairseq's `<lang:name>`): a language (`"de"`) or a task tag (`"audio"`, `"asr"`)."""
        piece = self._tag_piece(name)
        if piece is None:
            raise KeyError(f"vocabulary has no tag {tag_piece(name)}")
        return self._piece_to_id[piece]


# ------------------------------------------------------------------------------------ adding a language
# A trained model's vocabulary grows by appending pieces: existing ids keep their meaning, so the parent's
# embedding rows load unchanged and the new language's rows are appended (speechxl/models/peft.py). The
# SentencePiece model proto is extended in place rather than retrained: a repeated protobuf field may be
# continued by appending more of its records, so the new pieces are serialised and added at the end.

_NORMAL, _USER_DEFINED = 1, 4  # SentencePiece.Type


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _piece_record(piece: str, score: float, kind: int) -> bytes:
    """One `ModelProto.pieces` entry (field 1): SentencePiece{piece = 1, score = 2 (float), type = 3}."""
    text = piece.encode("utf-8")
    body = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", score) + b"\x18" + _varint(kind)
    return b"\x0a" + _varint(len(body)) + body


def extend_vocab(
    parent: str | os.PathLike, texts: Iterable[str], langs: Sequence[str], new_pieces: int, out: str | os.PathLike
) -> tuple["Vocab", dict]:
    """The parent's SentencePiece model with the new languages' tags and up to `new_pieces` pieces appended.

    The pieces come from a unigram model trained on `texts` (the new language's training text): its most
    likely pieces that the parent lacks, with their scores, plus any character of `texts` the parent cannot
    spell (so nothing becomes `<unk>`). Writes `out` atomically; returns the vocab and a report."""
    parent_vocab = Vocab.load(parent)
    if parent_vocab._pieces is not None:
        raise ValueError(f"{parent}: an imported dictionary (vocab.json) cannot be extended")
    have = set(parent_vocab._piece_to_id)
    texts = list(texts)
    records, report = [], {"parent": str(parent), "parent_size": len(parent_vocab), "tags": [], "pieces": 0}
    for lang in langs:
        if not parent_vocab.has_tag(lang):
            records.append(_piece_record(tag_piece(lang), 0.0, _USER_DEFINED))
            have.add(tag_piece(lang))
            report["tags"].append(tag_piece(lang))
    with tempfile.TemporaryDirectory(prefix=".spm-extend.") as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_prefix=f"{tmp}/new",
            vocab_size=max(2 * new_pieces, 64),  # many of its pieces are the parent's already
            hard_vocab_limit=False,
            model_type="unigram",
            character_coverage=1.0,
            minloglevel=2,
        )
        trained = spm.SentencePieceProcessor(model_file=f"{tmp}/new.model")
    candidates = sorted(
        (
            (trained.get_score(i), trained.id_to_piece(i))
            for i in range(trained.get_piece_size())
            if not (trained.is_unknown(i) or trained.is_control(i)) and trained.id_to_piece(i) not in have
        ),
        reverse=True,
    )
    chosen = [(piece, score) for score, piece in candidates[:new_pieces]]
    lowest = min((score for _, score in chosen), default=0.0)
    chars = sorted({c for text in texts for c in text.replace(" ", "")} - have - {p for p, _ in chosen})
    chosen += [(c, lowest - 1.0) for c in chars]
    for piece, score in chosen:
        records.append(_piece_record(piece, score, _NORMAL))
    report["pieces"] = len(chosen)
    proto = Path(parent).read_bytes() + b"".join(records)
    vocab = Vocab(proto)
    moved = [i for i in range(len(parent_vocab)) if vocab.piece(i) != parent_vocab.piece(i)]
    if moved:  # cannot happen with appended records; a check that the parent's ids kept their pieces
        raise ValueError(f"{parent}: extending moved piece ids {moved[:8]}")
    out = Path(out)
    tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_out.write_bytes(proto)
    os.replace(tmp_out, out)
    report["size"] = len(vocab)
    return vocab, report


def parent_spelling(parent: "Vocab", piece: str) -> list[int]:
    """The parent's ids that stand for a piece appended to its vocabulary (`extend_vocab`), to start that
    piece's embedding from: a new language tag -> the parent's language tags (it is one more of them); any other
    piece -> the parent's pieces that spell its text with accents stripped (`é` -> `e`), characters the parent
    cannot write left out, a lone word-start `▁` dropped when the piece has none. Empty when nothing is left
    (`'`, `¿`): that row keeps its random start."""
    if _TAG_PIECE.match(piece):
        task_tags = {tag_piece(t) for t in TASK_TAGS}
        return [
            i
            for i in range(len(parent))
            if _TAG_PIECE.match(parent.piece(i)) and parent.piece(i) not in task_tags | set(SPECIAL_PIECES.values())
        ]
    text = "".join(
        c for c in unicodedata.normalize("NFKD", piece.replace("\u2581", " ")) if not unicodedata.combining(c)
    )
    pieces = parent._sp.encode(text, out_type=str)
    if not piece.startswith("\u2581") and pieces and pieces[0] == "\u2581":
        pieces = pieces[1:]
    ids = [parent._piece_to_id.get(p, parent.unk) for p in pieces]
    return [i for i in ids if i != parent.unk]
