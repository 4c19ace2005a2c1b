"""A SimulEval 1.1.4 agent for every speechxl model (speechxl.inference.streaming does the work).

    simuleval --agent-class speechxl.inference.simuleval_agent.SpeechXLAgent \\
        --checkpoint exp/run/avg --policy waitk --waitk 3 \\
        --source source.txt --target target.txt --source-segment-size 280 --output OUT [--computation-aware]

`simuleval` is an optional extra: `pip install '.[streaming]'`. Known 1.1.4 behaviours handled here:
- the evaluator pops exactly one action per pushed chunk: on the last chunk (`states.source_finished`) the agent
  writes everything left in one WriteAction with `finished=True`;
- latency is counted per word (`--latency-unit word`): a committed token that ends inside a word is held back
  until the word is complete, or the source is finished, so no word is split across two writes;
- with `--computation-aware` 1.1.4 computes the plain metrics computation-aware as well: `non_ca_scores(OUT)`
  (and `python -m speechxl.inference.simuleval_agent OUT`) recompute the non-CA figures from instances.log.
"""

from __future__ import annotations

import json
import math
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path

import numpy as np
from simuleval.agents import SpeechToTextAgent
from simuleval.agents.actions import ReadAction, WriteAction

from speechxl.inference.streaming import POLICIES, PolicyOptions, StreamingTranslator
from speechxl.models import load_model

LATENCY_METRICS = ("AL", "LAAL", "DAL", "AP", "ATD")


class SpeechXLAgent(SpeechToTextAgent):
    def __init__(self, args: Namespace):
        self.translator = None  # GenericAgent.__init__ calls reset()
        super().__init__(args)
        device = getattr(args, "device", "cpu")  # simuleval's own --device (cpu by default)
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, vocab, config = load_model(args.checkpoint, device=device)
        options = PolicyOptions(
            policy=args.policy,
            k=args.waitk,
            la_n=args.la_n,
            la_beam=args.la_beam,
            frames=args.frames,
            attn_layer=args.attn_layer,
            max_len_a=args.max_len_a,
            max_len_b=args.max_len_b,
            final_beam=args.final_beam,
        )
        self.translator = StreamingTranslator(
            model,
            vocab,
            config.get("data", {}),
            options,
            task=args.task,
            tgt_lang=args.speechxl_tgt_lang,
            src_lang=args.speechxl_src_lang,
            device=device,
        )
        self._start_state()

    @staticmethod
    def add_args(parser: ArgumentParser) -> None:
        parser.add_argument("--checkpoint", required=True, help="speechxl checkpoint directory")
        parser.add_argument("--policy", choices=POLICIES, default="waitk", help="waitk, la (LA-n) or alignatt")
        parser.add_argument("--waitk", type=int, default=3, help="wait-k: chunks read before the first write")
        parser.add_argument("--la-n", type=int, default=2, help="LA-n: agreement of the last n hypotheses")
        parser.add_argument("--la-beam", type=int, default=1, help="LA-n: beam of each re-decoding")
        parser.add_argument(
            "--frames",
            type=int,
            default=2,
            help="AlignAtt f: wait while attention points into the last f encoder frames",
        )
        parser.add_argument("--attn-layer", type=int, default=-1, help="AlignAtt: decoder layer (-1: last)")
        parser.add_argument("--final-beam", type=int, default=1, help="beam of the final decoding at source end")
        parser.add_argument("--max-len-a", type=float, default=0.0)
        parser.add_argument("--max-len-b", type=int, default=200)
        parser.add_argument("--task", default="st", help="speechxl task (st, asr)")
        # simuleval owns --tgt-lang (a file of per-instance languages): ours are named apart
        parser.add_argument("--speechxl-src-lang", default="en", help="source language (its tag, for asr)")
        parser.add_argument("--speechxl-tgt-lang", default="de", help="target language: the forced tag")

    @classmethod
    def from_args(cls, args: Namespace) -> "SpeechXLAgent":
        return cls(args)

    def _start_state(self) -> None:
        if self.translator is not None:
            self.translator.reset()
        self.pushed = 0  # samples of states.source already given to the translator
        self.pending = ""  # committed text not yet written: an incomplete last word

    def reset(self) -> None:
        super().reset()
        self._start_state()

    def policy(self, states=None):
        states = states if states is not None else self.states
        if self.translator.finished:
            return WriteAction("", finished=True)
        if states.source_sample_rate not in (0, 16000):
            raise ValueError(f"speechxl models read 16 kHz audio; the source is {states.source_sample_rate} Hz")
        new = np.asarray(states.source[self.pushed :], dtype=np.float32)
        self.pushed = len(states.source)
        commit = self.translator.push(new, finished=states.source_finished)
        text = self.pending + commit.text
        if states.source_finished:
            self.pending = ""
            return WriteAction(text.strip(), finished=True)
        cut = text.rfind(" ")
        words, self.pending = (text[:cut], text[cut:]) if cut > 0 else ("", text)
        if not words.strip():
            return ReadAction()
        return WriteAction(words.strip(), finished=False)


def non_ca_scores(output_dir: str | Path, latency_unit: str = "word") -> dict[str, float]:
    """Non-computation-aware latency (`delays`) and computation-aware (`elapsed`) from OUT/instances.log, with
    SimulEval's own scorers: 1.1.4 with --computation-aware reports CA figures under the plain names too."""
    from simuleval.evaluator.instance import LogInstance
    from simuleval.evaluator.scorers.latency_scorer import LATENCY_SCORERS_DICT

    lines = (Path(output_dir) / "instances.log").read_text(encoding="utf-8").splitlines()
    instances = {i: LogInstance(line, latency_unit) for i, line in enumerate(lines) if line.strip()}
    # instances without output have no delays: SimulEval's scorers skip them (nan when none is left)
    instances = dict(enumerate(ins for ins in instances.values() if getattr(ins, "delays", None)))
    scores: dict[str, float] = {"n_scored": len(instances)}
    if not instances:
        return {**scores, **{name: math.nan for name in LATENCY_METRICS}}
    for name in LATENCY_METRICS:
        scores[name] = float(LATENCY_SCORERS_DICT[name](computation_aware=False)(instances))
        if all(getattr(ins, "elapsed", None) for ins in instances.values()):
            scores[f"{name}_CA"] = float(LATENCY_SCORERS_DICT[name](computation_aware=True)(instances))
    return scores


if __name__ == "__main__":
    print(json.dumps(non_ca_scores(sys.argv[1]), indent=2))
