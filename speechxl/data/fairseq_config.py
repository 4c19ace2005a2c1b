"""fairseq S2T's `config_*.yaml` and `spm_*.txt` dictionary, mapped onto speechxl's data settings.

fairseq's data config (S2TDataConfig) says where the vocabulary lives (`vocab_filename`, the fairseq dictionary;
`bpe_tokenizer.sentencepiece_model`), whether targets start with a `<lang:xx>` tag (`prepend_tgt_lang_tag`), and
which feature transforms run (`transforms`: utterance_cmvn, global_cmvn with `global_cmvn.stats_npz_path`,
specaugment with `specaugment`'s fields). Each maps onto a DataConfig field; a key or transform with no speechxl
equivalent is an error naming it, never silently dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechxl.errors import DataError

FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq Dictionary's first four ids
SPECAUGMENT_FIELDS = (
    "freq_mask_F",
    "freq_mask_N",
    "time_mask_T",
    "time_mask_N",
    "time_mask_p",
    "time_warp_W",
    "mask_value",
)
# fairseq's S2TDataConfigWriter spells the warp `time_wrap_W`, which its SpecAugmentTransform never reads
# (it reads `time_warp_W`): the key is accepted and, as in fairseq, has no effect.
_IGNORED_SPECAUGMENT = {"time_wrap_W"}
# Keys that need no mapping: settings of fairseq's own loader that speechxl's always matches.
_NEUTRAL = {
    "shuffle": {True, False},
    "input_channels": {1},
    "use_sample_rate": {16000},
    "sample_rate": {16000},
    "standardize_audio": {False},
    "sampling_alpha": {1.0},
    "prepend_bos_and_append_tgt_lang_tag": {False},
    "audio_root": None,
    "specaugment": None,
    "global_cmvn": None,
    "utterance_cmvn": None,
}
_MAPPED = {
    "vocab_filename",
    "bpe_tokenizer",
    "pre_tokenizer",
    "prepend_tgt_lang_tag",
    "input_feat_per_channel",
    "transforms",
    "feature_transforms",
    "use_audio_input",
}
_TRANSFORMS = {"utterance_cmvn", "global_cmvn", "specaugment"}


@dataclass
class FairseqDataConfig:
    """What a fairseq data config means for speechxl."""

    path: Path
    dictionary: Path
    spm_model: Path
    audio_root: str
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig fields
    model: dict[str, Any] = field(default_factory=dict)  # model fields the data fixes (input_dim)


def read_dictionary(path: str | os.PathLike) -> list[str]:
    """A fairseq dictionary file (`piece count [#fairseq:overwrite]` per line) -> pieces by id."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "fairseq dictionary not found")
    pieces = list(FAIRSEQ_SPECIALS)
    seen = set(pieces)
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.rstrip().split(" ")
        overwrite = fields[-1] == "#fairseq:overwrite"
        if overwrite:
            fields = fields[:-1]
        if len(fields) < 2 or not fields[-1].lstrip("-").isdigit():
            raise DataError(path, f"expected '<piece> <count>', got {line!r}", line_no)
        piece = " ".join(fields[:-1])
        if piece in seen and not overwrite:
            raise DataError(path, f"duplicate piece {piece!r} (fairseq needs #fairseq:overwrite for that)", line_no)
        if piece not in seen:
            pieces.append(piece)
            seen.add(piece)
    return pieces


def write_dictionary(path: str | os.PathLike, pieces: list[str]) -> None:
    """The inverse of `read_dictionary`: pieces after the four specials, count 1 each (what fairseq's gen_vocab
    writes)."""
    if pieces[:4] != FAIRSEQ_SPECIALS:
        raise ValueError(f"a fairseq dictionary starts with {FAIRSEQ_SPECIALS}, this vocabulary with {pieces[:4]}")
    Path(path).write_text("".join(f"{piece} 1\n" for piece in pieces[4:]), encoding="utf-8")


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def specaugment_spec(fields: dict[str, Any], path: Path, line: int | None) -> str:
    """fairseq's `specaugment` dict -> our `data.specaugment` explicit-fields string. A field fairseq's config
    leaves out is 0 there (SpecAugmentTransform.from_config_dict), so every field is written out."""
    unknown = [k for k in fields if k not in SPECAUGMENT_FIELDS and k not in _IGNORED_SPECAUGMENT]
    if unknown:
        raise DataError(
            path, f"specaugment.{unknown[0]} has no speechxl equivalent (known: {', '.join(SPECAUGMENT_FIELDS)})", line
        )
    values = {k: fields.get(k, 0) for k in SPECAUGMENT_FIELDS if k != "mask_value"}
    if fields.get("mask_value") is not None:
        values["mask_value"] = fields["mask_value"]
    return ",".join(f"{k}={v}" for k, v in values.items())


def _transforms(cfg: dict[str, Any], path: Path, lines: dict[str, int]) -> tuple[str, bool]:
    """(cmvn kind, SpecAugment on in training) from `transforms` and its newer name `feature_transforms` (fairseq
    appends the second's list to the first's). fairseq picks a split's list by its name, else `_train` / `_eval`,
    else `*` (S2TDataConfig.get_transforms); speechxl has one list for training and one for evaluation, so lists
    for named splits are refused."""
    chosen: dict[bool, list[str]] = {True: [], False: []}
    for key in ("transforms", "feature_transforms"):
        transforms = cfg.get(key) or {}
        if not isinstance(transforms, dict):
            raise DataError(path, f"{key} must map split patterns to lists of transforms", lines.get(key))
        for split, names in transforms.items():
            if split not in ("*", "_train", "_eval"):
                raise DataError(
                    path,
                    f"{key}.{split}: transforms for a named split have no speechxl equivalent "
                    "(use _train, _eval or '*')",
                    lines.get(f"{key}.{split}"),
                )
            for name in names or []:
                if name not in _TRANSFORMS:
                    raise DataError(
                        path,
                        f"{key}.{split}: {name!r} has no speechxl equivalent "
                        f"(supported: {', '.join(sorted(_TRANSFORMS))})",
                        lines.get(f"{key}.{split}"),
                    )
        for train in (True, False):
            names = transforms.get("_train" if train else "_eval")
            chosen[train] += list((transforms.get("*") if names is None else names) or [])
    train, every = chosen[True], chosen[False]
    cmvn = {n for n in every if n.endswith("_cmvn")}
    if cmvn != {n for n in train if n.endswith("_cmvn")}:
        raise DataError(
            path,
            "transforms: training and evaluation normalise differently; speechxl uses one CMVN for both",
            lines.get("transforms", lines.get("feature_transforms")),
        )
    if "specaugment" in every:
        raise DataError(
            path,
            "transforms: specaugment on evaluation splits has no speechxl equivalent; put it under _train",
            lines.get("transforms", lines.get("feature_transforms")),
        )
    if len(cmvn) > 1:
        raise DataError(
            path,
            "transforms: both utterance_cmvn and global_cmvn",
            lines.get("transforms", lines.get("feature_transforms")),
        )
    kind = next(iter(cmvn)).removesuffix("_cmvn") if cmvn else "none"
    # fairseq's own float32 arithmetic, so that its models see the inputs they were trained on
    return ("utterance_fairseq" if kind == "utterance" else kind), "specaugment" in train


def read_fairseq_config(
    path: str | os.PathLike, *, spm_model: str | os.PathLike | None = None, dictionary: str | os.PathLike | None = None
) -> FairseqDataConfig:
    """Read a fairseq S2T `config_*.yaml`. Relative paths in it are relative to its directory (fairseq's --data
    directory, where its prep scripts write the config beside the manifests). `spm_model` / `dictionary`
    override the config's."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "fairseq data config not found")
    text = path.read_text(encoding="utf-8")
    try:
        cfg = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        raise DataError(path, f"malformed YAML: {err}") from err
    if not isinstance(cfg, dict):
        raise DataError(path, "expected a mapping", 1)
    lines = _key_lines(node)
    base = path.parent
    for key, value in cfg.items():
        if key in _MAPPED:
            continue
        if key not in _NEUTRAL:
            raise DataError(path, f"key {key!r} has no speechxl equivalent", lines.get(key))
        allowed = _NEUTRAL[key]
        if allowed is not None and value not in allowed:
            raise DataError(
                path,
                f"{key}: {value!r} has no speechxl equivalent (supported: "
                f"{', '.join(map(str, sorted(allowed, key=str)))})",
                lines.get(key),
            )

    if dictionary is None:
        if not cfg.get("vocab_filename"):
            raise DataError(path, "no vocab_filename (the fairseq dictionary); give one", 1)
        dictionary = _resolve(base, cfg["vocab_filename"])
    bpe = cfg.get("bpe_tokenizer") or {}
    if bpe and bpe.get("bpe") != "sentencepiece":
        raise DataError(
            path,
            f"bpe_tokenizer.bpe {bpe.get('bpe')!r} has no speechxl equivalent (sentencepiece)",
            lines.get("bpe_tokenizer.bpe"),
        )
    extra = sorted(set(bpe) - {"bpe", "sentencepiece_model"})
    if extra:
        raise DataError(path, f"bpe_tokenizer.{extra[0]} has no speechxl equivalent", lines.get("bpe_tokenizer"))
    if spm_model is None:
        if not bpe.get("sentencepiece_model"):
            raise DataError(path, "no bpe_tokenizer.sentencepiece_model; give the SentencePiece model", 1)
        spm_model = _resolve(base, bpe["sentencepiece_model"])
        if not spm_model.is_file() and (base / Path(bpe["sentencepiece_model"]).name).is_file():
            spm_model = base / Path(bpe["sentencepiece_model"]).name  # the data directory moved since prep
    pre = cfg.get("pre_tokenizer") or {}
    if pre.get("tokenizer") not in (None, "none"):
        raise DataError(
            path,
            f"pre_tokenizer.tokenizer {pre.get('tokenizer')!r} has no speechxl equivalent",
            lines.get("pre_tokenizer.tokenizer"),
        )

    cmvn, specaugment = _transforms(cfg, path, lines)
    data: dict[str, Any] = {
        "prepend_lang_tag": bool(cfg.get("prepend_tgt_lang_tag", False)),
        "cmvn": cmvn,
        "features": "wave" if cfg.get("use_audio_input", False) else "fbank",
    }
    if cmvn == "global":
        stats = (cfg.get("global_cmvn") or {}).get("stats_npz_path")
        if not stats:
            raise DataError(
                path, "transforms use global_cmvn but global_cmvn.stats_npz_path is not set", lines.get("global_cmvn")
            )
        data["global_cmvn_stats"] = str(_resolve(base, stats).resolve())
    data["specaugment"] = (
        specaugment_spec(cfg.get("specaugment") or {}, path, lines.get("specaugment")) if specaugment else ""
    )
    if specaugment and not cfg.get("specaugment"):
        raise DataError(
            path,
            "transforms._train uses specaugment but the specaugment fields are not set",
            lines.get("transforms._train"),
        )
    if data["features"] == "wave" and cmvn != "none":
        raise DataError(
            path, "use_audio_input with a CMVN transform has no speechxl equivalent", lines.get("use_audio_input")
        )
    model = {"input_dim": int(cfg.get("input_feat_per_channel", 80))}
    return FairseqDataConfig(
        path=path,
        dictionary=Path(dictionary),
        spm_model=Path(spm_model),
        audio_root=str(cfg.get("audio_root") or ""),
        data=data,
        model=model,
    )


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines
