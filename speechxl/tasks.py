"""The task table: what each training/decoding task reads, what it learns and how it is scored.

Dataset, batching, progressive stages, models, validation and `speechxl translate` read this table and
nothing else about tasks. Adding a task is one `register_task(Task(...))` plus, where the default
behaviour of a model does not fit, that model's code (docs/internals.md, Tasks).

A task names manifest columns (`audio src_text tgt_text src_lang tgt_lang`) and batch keys
(`audio`, `transcript` = tokens of src_text, `target` = tokens of tgt_text):

- `fields`: columns a row must have (non-empty) to train on it; rows without them are counted skips.
- `budget`: `audio` (fbank frames or wave samples per batch) or `tokens` (text tokens per batch).
- `encoder_input`: `audio` or `text` (the transcript).
- `decoder_target`: the batch key the decoder learns (`target` or `transcript`), or None for a loss-only
  task without a decoder target (FAT-MLM's masked-LM tasks: the model masks and predicts its inputs).
- `prefix_lang`: the column whose language tag starts the decoder target; it is ignored by the loss and
  forced by search (when the data prepends language tags at all: `data.prepend_lang_tag`).
- `output`: what decoding this task writes (`translation`, `transcript`), or None: a loss-only task.
  `OUTPUTS` says which column is its reference and which metrics score it.
"""

from __future__ import annotations

from dataclasses import dataclass

AUDIO, TEXT = "audio", "text"
TARGET, TRANSCRIPT = "target", "transcript"
# The manifest column behind each token sequence of a batch.
TEXT_COLUMN = {TRANSCRIPT: "src_text", TARGET: "tgt_text"}
LANG_COLUMN = {TRANSCRIPT: "src_lang", TARGET: "tgt_lang"}


@dataclass(frozen=True)
class Output:
    """A kind of decoded text: the manifest column it is scored against and its metrics (first = main)."""

    reference: str
    metrics: tuple[str, ...]


OUTPUTS: dict[str, Output] = {
    "translation": Output(reference="tgt_text", metrics=("bleu", "chrf")),
    "transcript": Output(reference="src_text", metrics=("wer",)),
}


@dataclass(frozen=True)
class Task:
    name: str
    fields: tuple[str, ...]
    budget: str
    encoder_input: str
    decoder_target: str | None
    output: str | None

    @property
    def prefix_lang(self) -> str | None:
        return LANG_COLUMN[self.decoder_target] if self.decoder_target else None

    @property
    def needs_audio(self) -> bool:
        return "audio" in self.fields

    @property
    def texts(self) -> tuple[str, ...]:
        """The token sequences a training batch of this task carries (`transcript`, `target`)."""
        return tuple(key for key in (TRANSCRIPT, TARGET) if TEXT_COLUMN[key] in self.fields)

    @property
    def metrics(self) -> tuple[str, ...]:
        return OUTPUTS[self.output].metrics if self.output else ()

    @property
    def reference(self) -> str | None:
        return OUTPUTS[self.output].reference if self.output else None


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task to the table (or replace one of the same name)."""
    for value, allowed, what in (
        (task.budget, (AUDIO, "tokens"), "budget"),
        (task.encoder_input, (AUDIO, TEXT), "encoder_input"),
        (task.decoder_target, (TARGET, TRANSCRIPT), "decoder_target"),
    ):
        if value not in allowed:
            if not (what == "decoder_target" and value is None and task.output is None):  # loss-only task
                raise ValueError(f"task {task.name}: {what} must be one of {allowed}, not {value!r}")
    if task.output is not None and task.output not in OUTPUTS:
        raise ValueError(f"task {task.name}: output must be one of {sorted(OUTPUTS)} or None, not {task.output!r}")
    TASKS[task.name] = task
    return task


for _task in (
    Task(
        "st",
        fields=("audio", "tgt_text"),
        budget=AUDIO,
        encoder_input=AUDIO,
        decoder_target=TARGET,
        output="translation",
    ),
    Task(
        "asr",
        fields=("audio", "src_text"),
        budget=AUDIO,
        encoder_input=AUDIO,
        decoder_target=TRANSCRIPT,
        output="transcript",
    ),
    Task(
        "mt",
        fields=("src_text", "tgt_text"),
        budget="tokens",
        encoder_input=TEXT,
        decoder_target=TARGET,
        output="translation",
    ),
    # audio + transcript + translation in one batch: models train several losses from one audio encoding
    Task(
        "triplet",
        fields=("audio", "src_text", "tgt_text"),
        budget=AUDIO,
        encoder_input=AUDIO,
        decoder_target=TARGET,
        output="translation",
    ),
):
    register_task(_task)

# FAT-MLM's masked-LM tasks (speechxl/models/fat.py), one per subset of fields a corpus may have: the model
# masks whichever of speech / source text / target text a batch carries and predicts them (loss only: no
# decoder target, no output; validation ranks checkpoints by the masked loss). Bitext from `ext_mt` arrives as
# `mt` batches, which FAT-MLM reads by their fields too (translation LM).
for _task in (
    Task("mlm_speech", fields=("audio",), budget=AUDIO, encoder_input=AUDIO, decoder_target=None, output=None),
    Task("mlm_asr", fields=("audio", "src_text"), budget=AUDIO, encoder_input=AUDIO, decoder_target=None, output=None),
    Task(
        "mlm_triplet",
        fields=("audio", "src_text", "tgt_text"),
        budget=AUDIO,
        encoder_input=AUDIO,
        decoder_target=None,
        output=None,
    ),
    Task(
        "mlm_bitext",
        fields=("src_text", "tgt_text"),
        budget="tokens",
        encoder_input=TEXT,
        decoder_target=None,
        output=None,
    ),
    Task("mlm_text", fields=("src_text",), budget="tokens", encoder_input=TEXT, decoder_target=None, output=None),
):
    register_task(_task)

# Not a task but a data source: the external text-only MT manifest (`data.ext_mt_split`), trained as `mt`.
EXT_MT = "ext_mt"


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def task_of_source(name: str) -> Task:
    """The task of a training source: a task name, or `ext_mt` (external MT, trained as mt)."""
    return get_task("mt" if name == EXT_MT else name)


def source_names() -> tuple[str, ...]:
    """What a stage's `tasks:` may name: every task, and `ext_mt`."""
    return (*TASKS, EXT_MT)


def decoded_task(names) -> Task | None:
    """The task validation decodes and scores among `names`: speech translation when trained, else the
    first task with an output (MT, ASR, ...); None when none has one (loss-only pre-training)."""
    tasks = [task_of_source(name) for name in names]
    rank = {"st": 0, "triplet": 1, "mt": 2}
    preferred = sorted((t for t in tasks if t.output), key=lambda t: rank.get(t.name, 3))
    return preferred[0] if preferred else None
