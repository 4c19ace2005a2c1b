"""Parameter-efficient fine-tuning: trainable presets and globs, adapters, LoRA through peft, a new language's
vocabulary, delta checkpoints (parent + trained tensors) and `speechxl merge`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_MODEL, make_corpus, tiny_config

from speechxl import checkpoint as ckpt
from speechxl.cli import main as cli_main
from speechxl.config import config_from_dict, parse_stages
from speechxl.data.dataset import SpeechTextDataset, collate
from speechxl.data.manifest import read_manifest, write_manifest
from speechxl.data.vocab import Vocab, extend_vocab, parent_spelling
from speechxl.errors import CheckpointError, DataError
from speechxl.inference.search import beam_search
from speechxl.models import build_model, load_model
from speechxl.modules.adapters import add_lora
from speechxl.modules.transformer import MultiheadAttention
from speechxl.train.loop import train
from speechxl.train.peft import PRESETS, resolve
from speechxl.train.stages import apply_trainable

FRENCH = {
    "das rote haus ist klein": "la maison rouge est petite",
    "zwei hunde sehen die katze": "deux chiens voient le chat",
    "ich will drei äpfel kaufen": "je veux acheter trois pommes",
    "der lehrer liest ein buch": "le professeur lit un livre",
    "wir sind gestern nach hause gegangen": "nous sommes rentrés hier à la maison",
    "sie hat sieben grüne vögel": "elle a sept oiseaux verts",
    "der alte mann trinkt wasser": "le vieil homme boit de l'eau",
    "meine schwester mag die sonne": "ma sœur aime le soleil",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def parent(corpus, tmp_path_factory) -> Path:
    """A parent checkpoint: the tiny s2t model trained a few updates on the En->De corpus."""
    run = tmp_path_factory.mktemp("parent")
    train(config_from_dict(tiny_config(corpus, run, max_update=4, validate_every=0, save_every=0)))
    return ckpt.latest_checkpoint(run)


@pytest.fixture(scope="module")
def french(corpus, parent, tmp_path_factory) -> Path:
    """The same audio with French targets, and the parent's vocabulary extended with `<fr>` and French pieces."""
    root = tmp_path_factory.mktemp("fr")
    shutil.copytree(corpus / "wav", root / "wav")
    for split in ("train", "dev"):
        rows = read_manifest(corpus / f"{split}.tsv")
        write_manifest(
            root / f"{split}.tsv", [{**r, "tgt_text": FRENCH[r["tgt_text"]], "tgt_lang": "fr"} for r in rows]
        )
    extend_vocab(parent / "spm.model", list(FRENCH.values()) * 4, ["fr"], 40, root / "spm.model")
    return root


def child_config(french: Path, parent: Path, run: Path, trainable: list[str], **peft) -> dict:
    config = tiny_config(french, run, max_update=3, validate_every=0, save_every=0, weight_decay=0.0)
    config["model"] = {"peft": {"parent": str(parent), **peft}}
    config["stages"] = [{"name": "extend", "tasks": {"st": 1}, "max_update": 3, "trainable": {"only": trainable}}]
    return config


def a_batch(root: Path, vocab) -> dict:
    dataset = SpeechTextDataset.from_manifest(root / "dev.tsv", "st", vocab)
    return collate([dataset[i] for i in range(3)], "st", vocab.pad, vocab.eos)


def outputs(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch)
        return model.decoder(batch["prev_target"], enc["memory"], enc["memory_padding_mask"])


# ------------------------------------------------------------------------------------------ vocabulary


def test_extended_vocabulary_keeps_the_parent_ids_and_spells_the_new_text(french, parent):
    old, new = Vocab.load(parent / "spm.model"), Vocab.load(french / "spm.model")
    assert len(new) > len(old) and [new.piece(i) for i in range(len(old))] == [old.piece(i) for i in range(len(old))]
    assert new.tag("fr") >= len(old) and new.tag("de") == old.tag("de")
    for text in FRENCH.values():
        ids = new.encode(text)
        assert new.unk not in ids and new.decode(ids) == text
    assert any(i >= len(old) for i in new.encode("la maison rouge est petite"))


def test_new_rows_start_as_the_mean_of_the_parent_rows_that_spell_them(french, parent):
    old, new = Vocab.load(parent / "spm.model"), Vocab.load(french / "spm.model")
    parent_rows = ckpt.load_weights(parent / ckpt.MODEL_FILE)["decoder.embed_tokens.weight"]
    fr_tag = new.tag("fr")
    assert sorted(parent_spelling(old, new.piece(fr_tag))) == sorted([old.tag("de"), old.tag("en")])
    torch.manual_seed(0)
    spelled = build_model({"peft": {"parent": str(parent)}}, new).state_dict()["decoder.embed_tokens.weight"]
    torch.manual_seed(0)  # the same fresh values, where nothing spells a row
    drawn = build_model({"peft": {"parent": str(parent), "new_rows": "random"}}, new).state_dict()[
        "decoder.embed_tokens.weight"
    ]
    assert torch.equal(spelled[: len(old)], parent_rows) and torch.equal(drawn[: len(old)], parent_rows)
    checked = 0
    for i in range(len(old), len(new)):
        ids = parent_spelling(old, new.piece(i))
        if not ids:  # only a piece of characters the parent cannot write keeps its random start
            assert all(old.unk in old.encode(c) for c in new.piece(i).lstrip("\u2581"))
            assert torch.equal(spelled[i], drawn[i])
            continue
        if i != fr_tag:  # the parent's pieces spell it, accents stripped (`é` -> `e`)
            plain = "".join(old.piece(j) for j in ids).lstrip("\u2581")
            assert plain and set(plain) <= set(new.piece(i).lstrip("\u2581")) | set("aeiouc"), (new.piece(i), plain)
        assert torch.allclose(spelled[i], parent_rows[ids].mean(0)) and not torch.allclose(spelled[i], drawn[i])
        checked += 1
    assert checked >= (len(new) - len(old)) // 2
    with pytest.raises(DataError, match="new_rows"):
        build_model({"peft": {"parent": str(parent), "new_rows": "mean"}}, new)


# ------------------------------------------------------------------------------------------ trainable names


ARCH_CONFIGS = {
    "s2t": dict(TINY_MODEL),
    "xstnet": {"arch": "xstnet", "size": "tiny"},
    "chimera": {"arch": "chimera", "size": "tiny"},
    "costt": {"arch": "costt", "size": "tiny"},
    "lut": {"arch": "lut", "size": "tiny"},
}


@pytest.mark.parametrize("arch", sorted(ARCH_CONFIGS))
def test_presets_select_the_right_names_on_every_arch(arch, corpus):
    pytest.importorskip("peft")
    vocab = Vocab.load(corpus / "spm.model")
    spec = {"adapters": {"names": ["fr"], "bottleneck": 4}, "lora": {"r": 2}}
    model = build_model({**ARCH_CONFIGS[arch], "peft": spec}, vocab)
    names = {n for n, _ in model.named_parameters()}
    select = {preset: resolve(model, [preset], "test", arch).names for preset in PRESETS}

    assert select["full"] == names
    xattn = select["xattn"]
    assert xattn and all(".cross_attn" in n for n in xattn)
    assert {n for n in names if ".cross_attn." in n or ".cross_attn_norm." in n} == xattn
    assert select["adapters"] == {n for n in names if ".adapters." in n} != set()
    assert select["lora"] == {n for n in names if ".lora_" in n} != set()
    lna = select["lna"]
    assert xattn <= lna and not any(".ffn." in n or "embed_tokens" in n for n in lna)
    assert {n for n in names if n.startswith("encoder.") and "_norm." in n} <= lna
    assert any("self_attn.q_proj" in n and n.startswith("encoder.") for n in lna)
    assert not any(n.startswith("decoder.") and ".self_attn." in n for n in lna)
    if arch in ("s2t", "xstnet", "chimera"):
        assert {n for n in names if n.startswith("subsampler.")} <= lna


def test_globs_and_a_pattern_that_matches_nothing(corpus):
    vocab = Vocab.load(corpus / "spm.model")
    model = build_model(dict(TINY_MODEL), vocab)
    chosen = resolve(model, ["decoder.*.cross_attn.*"], "test", "here").names
    assert chosen == {n for n, _ in model.named_parameters() if n.startswith("decoder.layers.0.cross_attn.")}
    with pytest.raises(DataError, match=r"'decoder\.\*\.cross_atn\.\*' matches no parameter.*close names: "):
        resolve(model, ["decoder.*.cross_atn.*"], "test", "here")
    with pytest.raises(DataError, match="close names: xattn"):
        resolve(model, ["xatn"], "test", "here")


# ------------------------------------------------------------------------------------------ adapters, LoRA


def test_zero_initialised_adapters_and_lora_leave_the_outputs_unchanged(french, parent):
    pytest.importorskip("peft")
    vocab = Vocab.load(french / "spm.model")
    torch.manual_seed(0)  # the same initial rows for the new pieces
    plain = build_model({"peft": {"parent": str(parent)}}, vocab)
    spec = {"parent": str(parent), "adapters": {"names": ["fr", "task_st"], "bottleneck": 4}, "lora": {"r": 2}}
    torch.manual_seed(0)
    adapted = build_model({"peft": spec}, vocab)
    batch = a_batch(french, vocab)
    assert torch.equal(outputs(plain, batch), outputs(adapted, batch))
    layer = adapted.decoder.layers[0].adapters
    assert layer.active == ("fr", "task_st")  # chosen from the batch: its <fr> tag, its task
    with torch.no_grad():
        layer.adapters["fr"].up.weight.normal_()
    assert not torch.equal(outputs(plain, batch), outputs(adapted, batch))


def test_lora_on_q_k_v_would_be_bypassed_so_it_is_refused():
    """Evidence for the LoRA targets: our attention reads q/k/v_proj.weight directly (one stacked GEMM), so a
    peft LoRA wrapper on q_proj changes nothing, while one on out_proj (called as a module) does."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)

    def run(target: str) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        attn = MultiheadAttention(8, 2).eval()
        before = attn.self_attention(x)[0]
        config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=[target], init_lora_weights=False)
        peft.inject_adapter_in_model(config, attn)
        return before, attn.self_attention(x)[0]

    before, after = run("q_proj")
    assert torch.equal(before, after)  # bypassed: the LoRA update never reaches the output
    before, after = run("out_proj")
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="would have no effect"):
        add_lora(torch.nn.Sequential(MultiheadAttention(8, 2)), 2, 2, ["q_proj", "out_proj"])


@pytest.fixture(scope="module")
def mixed(corpus, french, tmp_path_factory) -> Path:
    """A multilingual corpus: De and Fr utterances alternating in one manifest, the French-extended vocabulary."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(corpus / "wav", root / "wav")
    shutil.copy(french / "spm.model", root / "spm.model")
    for split in ("train", "dev"):
        pairs = zip(read_manifest(corpus / f"{split}.tsv"), read_manifest(french / f"{split}.tsv"))
        rows = [{**row, "id": f"{row['tgt_lang']}_{row['id']}"} for pair in pairs for row in pair]
        write_manifest(root / f"{split}.tsv", rows)
    return root


def test_a_mixed_batch_picks_each_utterances_adapter_by_its_language(mixed, parent):
    """A batch of De and Fr utterances gives each utterance what a batch of it alone gives (its own
    language's adapter): teacher forcing over packed rows, and beam search as utterances finish."""
    vocab = Vocab.load(mixed / "spm.model")
    spec = {"parent": str(parent), "adapters": {"names": ["de", "fr"], "bottleneck": 4}}
    model = build_model({"peft": spec}, vocab).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".adapters." in name:
                param.normal_(std=0.5)  # the two languages' adapters now change the outputs differently
    dataset = SpeechTextDataset.from_manifest(mixed / "dev.tsv", "st", vocab)
    items = [dataset[i] for i in range(4)]
    assert [vocab.piece(int(item.target[0])) for item in items] == ["<de>", "<fr>", "<de>", "<fr>"]

    def teacher_forcing(batch) -> list[torch.Tensor]:
        with torch.no_grad():
            enc = model.encode(batch)
            rows = batch["prev_target"].ne(vocab.pad)
            logits = model.decoder(batch["prev_target"], enc["memory"], enc["memory_padding_mask"], rows=rows)
        return list(logits.split(rows.sum(1).tolist()))

    def search(batch) -> list[list[int]]:
        nbest = beam_search(model, batch, beam=2, max_len_b=12, prefix=batch["prefix"])
        return [hyps[0].tokens for hyps in nbest]

    batch = collate(items, "st", vocab.pad, vocab.eos)
    assert batch["audio_padding_mask"].any() and batch["prev_target"].eq(vocab.pad).any()  # packed rows
    alone = [collate([item], "st", vocab.pad, vocab.eos) for item in items]
    for together, single in zip(teacher_forcing(batch), alone):
        assert torch.allclose(together, teacher_forcing(single)[0], atol=1e-5)
    together = search(batch)
    layer = model.decoder.layers[0].adapters
    assert layer.active == () and layer.row_names == ("de", "fr") and layer.packing is None
    assert together == [search(single)[0] for single in alone]
    assert layer.active == ("fr",) and layer.row_choice is None  # a one-language batch: the batch's adapter


def test_a_multilingual_child_trains_each_language_adapter_on_mixed_batches(tmp_path, mixed, parent):
    config = child_config(mixed, parent, tmp_path / "multi", ["adapters"], adapters={"names": ["de", "fr"]})
    config["train"].update(max_update=2, validate_every=0)  # the end-of-run validation decodes mixed batches
    cfg = config_from_dict(config)
    vocab = Vocab.load(mixed / "spm.model")
    model = build_model(cfg.model, vocab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, model=model, vocab=vocab, vocab_files=[mixed / "spm.model"])
    after = model.state_dict()
    for lang in ("de", "fr"):
        up = f"decoder.layers.0.adapters.adapters.{lang}.up.weight"
        assert not torch.equal(after[up], before[up]), lang  # both languages' adapters learned
    body = [n for n in after if ".adapters." not in n and n not in model.peft_rows]
    assert body and all(torch.equal(after[n], before[n]) for n in body)  # the shared body: the parent's


# ------------------------------------------------------------------------------------------ delta checkpoints


@pytest.mark.parametrize(
    "trainable, spec",
    [
        (["xattn"], {}),
        (["adapters"], {"adapters": {"names": ["fr"], "bottleneck": 4}}),
        (["lora"], {"lora": {"r": 2}}),
    ],
)
def test_delta_checkpoint_holds_what_trained_and_loads_to_the_same_outputs(tmp_path, french, parent, trainable, spec):
    if "lora" in spec:
        pytest.importorskip("peft")
    cfg = config_from_dict(child_config(french, parent, tmp_path / "child", trainable, **spec))
    vocab = Vocab.load(french / "spm.model")
    model = build_model(cfg.model, vocab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, model=model, vocab=vocab, vocab_files=[french / "spm.model"])
    child = ckpt.latest_checkpoint(tmp_path / "child")

    after = model.state_dict()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    grown = model.peft_rows  # tensors over the vocabulary: the parent's rows, then the new ones
    for name, value in after.items():
        if name not in trained:
            assert torch.equal(value[: grown.get(name)], before[name][: grown.get(name)]), name  # frozen
    embed = "decoder.embed_tokens.weight"
    assert torch.equal(after[embed][: grown[embed]], before[embed][: grown[embed]])  # old rows frozen
    assert not torch.equal(after[embed][grown[embed] :], before[embed][grown[embed] :])  # new rows trained

    delta = ckpt.load_weights(child / ckpt.MODEL_FILE)
    assert isinstance(delta, ckpt.DeltaState)
    assert set(delta) == trained | set(grown) | set(model.peft_new)
    assert delta[embed].shape[0] == len(vocab) - grown[embed]  # only the appended rows
    assert delta.parent_sha256 == ckpt.sha256_file(parent / ckpt.MODEL_FILE)
    stored = sum(v.numel() for v in delta.values())
    assert stored < 0.5 * sum(v.numel() for v in after.values())

    loaded, _, _ = load_model(child)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in after.items())
    batch = a_batch(french, vocab)
    assert torch.equal(outputs(loaded, batch), outputs(model, batch))

    merged = cli_merge(child, tmp_path / "merged")
    assert not isinstance(ckpt.load_weights(merged / ckpt.MODEL_FILE), ckpt.DeltaState)
    shutil.move(parent, tmp_path / "parent-away")  # the merged model needs no parent
    try:
        again, _, _ = load_model(merged)
        assert torch.equal(outputs(again, batch), outputs(model, batch))
        with pytest.raises(CheckpointError, match=f"{child}.*parent checkpoint .*{parent.name} is missing"):
            load_model(child)
    finally:
        shutil.move(tmp_path / "parent-away", parent)


def cli_merge(child: Path, out: Path) -> Path:
    cli_main(["merge", "--checkpoint", str(child), "--out", str(out)])
    return out


def test_a_changed_parent_is_refused_and_deltas_average(tmp_path, french, parent):
    cfg = config_from_dict(child_config(french, parent, tmp_path / "child", ["xattn"]))
    cfg.train.save_every = 1
    train(cfg)
    checkpoints = ckpt.list_checkpoints(tmp_path / "child")
    averaged = ckpt.average_checkpoints(checkpoints[-2:], tmp_path / "avg")
    assert isinstance(ckpt.load_weights(averaged / ckpt.MODEL_FILE), ckpt.DeltaState)
    load_model(averaged)

    changed = tmp_path / "changed-parent"
    shutil.copytree(parent, changed)
    state = ckpt.load_weights(changed / ckpt.MODEL_FILE)
    state["decoder.layers.0.fc_never"] = torch.zeros(1)
    ckpt.save_weights(state, changed / ckpt.MODEL_FILE)
    config = ckpt.load_config_dict(averaged)
    config["model"]["peft"]["parent"] = str(changed)
    moved = tmp_path / "moved"
    shutil.copytree(averaged, moved)
    (moved / ckpt.CONFIG_FILE).write_text(ckpt.yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"its parent {changed} has changed: .*SHA-256"):
        load_model(moved)


def test_stage_log_states_the_trainable_share(corpus, capsys):
    vocab = Vocab.load(corpus / "spm.model")
    model = build_model(dict(TINY_MODEL), vocab)
    (stage,) = parse_stages([{"name": "x", "tasks": {"st": 1}, "trainable": {"only": ["xattn"]}}], "test")
    counts = apply_trainable(model, stage)
    total = counts["trainable"] + counts["frozen"]
    assert f"stage x: {counts['trainable']:,} of {total:,} parameters train (" in capsys.readouterr().out


def test_reinit_draws_cross_attention_afresh_and_stores_it(french, parent):
    vocab = Vocab.load(french / "spm.model")
    child = build_model({"peft": {"parent": str(parent), "reinit": ["cross_attn", "cross_attn_norm"]}}, vocab)
    parent_state = ckpt.load_weights(parent / ckpt.MODEL_FILE)
    for name, value in child.state_dict().items():
        if name in child.peft_rows:
            continue
        same = torch.equal(value, parent_state[name])
        assert same != (".cross_attn." in name or ".cross_attn_norm." in name or name in child.peft_new), name
    assert any(".cross_attn.q_proj.weight" in n for n in child.peft_new)
    with pytest.raises(DataError, match="reinit"):
        build_model({"peft": {"parent": str(parent), "reinit": ["cros_attn"]}}, vocab)
