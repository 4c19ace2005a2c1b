"""What a child's new-language embeddings learned (recipes/synth/extend.sh, issue 14).

  python tools/probe_new_embeddings.py --checkpoint exp/peft_synth/fr_xattn/avg --parent exp/demo/avg \\
      --manifest exp/peft_synth/tst-COMMON_fr_100.tsv [--hyps exp/peft_synth/fr_xattn/decode_tst-COMMON] [--out F]

Prints one JSON object: the mean norm of the appended embedding rows against the parent's rows, how far they
moved from where the child started (`--init`: a checkpoint of the child at update 0; else omitted), the mean
cosine of each new row to its nearest parent row, the nearest parent pieces of the new pieces most frequent in
the references, and the share of tokens that are new pieces in the references and in the hypotheses (a child
that writes few new pieces writes the new language with the parent's pieces, or not at all).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from speechxl import checkpoint as ckpt
from speechxl.data.manifest import read_manifest
from speechxl.models import load_model


def embeddings(model) -> torch.Tensor:
    return model.decoder.embed_tokens.weight.detach().float()


def hypotheses(decode_dir: Path) -> list[str]:
    """The hypothesis lines of a `speechxl translate --out` directory (hyp.txt)."""
    return (decode_dir / "hyp.txt").read_text(encoding="utf-8").splitlines()


def new_share(texts: list[str], vocab, first_new: int) -> float:
    ids = [i for text in texts for i in vocab.encode(text)]
    return sum(i >= first_new for i in ids) / max(len(ids), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the child (a delta is loaded with its parent)")
    parser.add_argument("--parent", required=True, help="the parent checkpoint (its vocabulary size)")
    parser.add_argument("--manifest", required=True, help="test manifest: references (tgt_text)")
    parser.add_argument("--hyps", default=None, help="the child's decode directory (speechxl translate --out)")
    parser.add_argument("--init", default=None, help="a checkpoint of the child before training (movement)")
    parser.add_argument("--top", type=int, default=8, help="new pieces to show with their nearest parent pieces")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model, vocab, _ = load_model(args.checkpoint)
    first_new = len(ckpt.load_vocab(Path(args.parent)))
    emb = embeddings(model)
    old, new = emb[:first_new], emb[first_new:]
    cos = F.normalize(new, dim=1) @ F.normalize(old, dim=1).T
    best, nearest = cos.max(dim=1)
    refs = [row["tgt_text"] for row in read_manifest(args.manifest)]
    counts = Counter(i for text in refs for i in vocab.encode(text) if i >= first_new)
    report = {
        "checkpoint": args.checkpoint,
        "parent_rows": first_new,
        "new_rows": int(new.size(0)),
        "norm_parent_rows": round(float(old.norm(dim=1).mean()), 4),
        "norm_new_rows": round(float(new.norm(dim=1).mean()), 4),
        "nearest_parent_cosine_mean": round(float(best.mean()), 4),
        "nearest": {
            vocab.piece(i): [vocab.piece(int(nearest[i - first_new])), round(float(best[i - first_new]), 3)]
            for i, _ in counts.most_common(args.top)
        },
        "new_piece_share_refs": round(new_share(refs, vocab, first_new), 4),
    }
    if args.init:
        start, _, _ = load_model(args.init)
        moved = (new - embeddings(start)[first_new:]).norm(dim=1) / embeddings(start)[first_new:].norm(dim=1)
        report["new_rows_relative_change"] = round(float(moved.mean()), 4)
    if args.hyps:
        hyps = hypotheses(Path(args.hyps))
        report["hyp_lines"] = len(hyps)
        report["new_piece_share_hyps"] = round(new_share(hyps, vocab, first_new), 4)
        report["hyp_examples"] = hyps[:3]
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
