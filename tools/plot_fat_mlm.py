"""What FAT-MLM hears and rebuilds: for a few utterances of a manifest, the input fbank, the masked input (the
spans the model never saw are zeroed) and the model's reconstruction, side by side in one PNG.

    python tools/plot_fat_mlm.py --checkpoint exp/fat_synth/mlm/checkpoints/best \
        --manifest data/fat_synth/en-de/dev.tsv --out docs/img/fat_mlm_reconstruction.png

The masks are the model's evaluation masks (those of the dev masked loss). Each row's title gives the L2 on
the masked frames (what the loss measures) and, for comparison, the L2 of predicting the utterance mean (zero
after CMVN) there. Needs matplotlib (pip install 'speechxl[plots]').
"""

from __future__ import annotations

import argparse
import sys

import torch

from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a FAT-MLM checkpoint directory (arch fat_mlm)")
    parser.add_argument("--manifest", required=True, help="manifest TSV whose first utterances are shown")
    parser.add_argument("--n", type=int, default=3, help="how many utterances (rows of the figure)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--dpi", type=int, default=90, help="resolution of the PNG")
    args = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_fat_mlm: matplotlib is not installed (pip install 'speechxl[plots]')")

    model, vocab, config = load_model(args.checkpoint)
    if type(model).__name__ != "FatMLM":
        sys.exit(f"plot_fat_mlm: {args.checkpoint} is a {config['model'].get('arch')} model, not fat_mlm")
    features = FeatureConfig.from_data(config.get("data", {}))
    dataset = SpeechTextDataset(
        read_manifest(args.manifest), "mlm_speech", vocab, manifest=args.manifest, features=features
    )
    n = min(args.n, len(dataset))
    fig, axes = plt.subplots(n, 3, figsize=(15, 2.6 * n), squeeze=False)
    for row in range(n):
        batch = dataset.collate([dataset[row]])
        with torch.no_grad():
            speech = model.masked_pass(batch)["speech"]
        mask = speech["frame_mask"][0]
        panels = {
            "input fbank": speech["input"][0],
            "masked input": speech["masked_input"][0],
            "reconstruction": speech["reconstruction"][0],
        }
        l2 = float((speech["reconstruction"][0] - speech["input"][0])[mask].pow(2).mean())
        mean_l2 = float(speech["input"][0][mask].pow(2).mean())
        low, high = float(speech["input"].min()), float(speech["input"].max())
        for col, (title, frames) in enumerate(panels.items()):
            ax = axes[row, col]
            ax.imshow(frames.T.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
            for start, end in _runs(mask):
                ax.axvspan(start - 0.5, end - 0.5, ymin=0.0, ymax=0.03, color="cyan")
            ax.set_title(f"{batch['ids'][0]}: {title}" if col == 0 else title, fontsize=9)
            ax.set_yticks([])
            if row == n - 1:
                ax.set_xlabel("frame (10 ms)")
        axes[row, 2].set_title(
            f"reconstruction: masked-frame L2 {l2:.2f} (predicting the mean: {mean_l2:.2f})", fontsize=9
        )
    fig.suptitle(f"FAT-MLM {args.checkpoint}: masked spans marked in cyan at the bottom", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out} ({n} utterances)")


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = torch.diff(torch.cat([torch.tensor([0]), mask.int(), torch.tensor([0])])).nonzero().squeeze(1).tolist()
    return list(zip(edges[::2], edges[1::2]))


if __name__ == "__main__":
    main()
