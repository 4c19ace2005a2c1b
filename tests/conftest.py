"""Shared fixtures: a tiny SynthST corpus, synthesised once per test session (per xdist worker).

`synth_mustc`   root of a MuST-C v1 layout, en-de only: ROOT/en-de/data/{train,dev,tst-COMMON}/{wav,txt}
`synth_covost2` root of a CoVoST 2 / Common Voice layout: ROOT/en (en->de) and ROOT/de (de->en)
Both: 24 train / 8 dev / 8 test sentences, ROOT/ext_mt/train.{en,de} with 16 text-only pairs, and
ROOT/synth_info.json (seed, counts, voices per split). Treat them as read-only: they are shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_SEED = 11
SYNTH_SIZES = {"n_train": 24, "n_dev": 8, "n_test": 8, "n_ext_mt": 16}


def _synthesize(root: Path, layout: str) -> Path:
    from speechxl.synth.synth import synthesize

    synthesize(root, layout, ["de"], seed=SYNTH_SEED, jobs=2, **SYNTH_SIZES)
    return root


@pytest.fixture(scope="session")
def synth_mustc(tmp_path_factory) -> Path:
    return _synthesize(tmp_path_factory.mktemp("synth_mustc"), "mustc")


@pytest.fixture(scope="session")
def synth_covost2(tmp_path_factory) -> Path:
    return _synthesize(tmp_path_factory.mktemp("synth_covost2"), "covost2")
