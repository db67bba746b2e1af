"""Clean test accuracy of cached expert trajectories, epoch by epoch.

A trajectory-matching set (MTT, DATM) is distilled from a segment of an expert's
trajectory, so the expert's accuracy at the segment's end is a practical ceiling for what
the set can teach a fresh network. The distillers never see the test set; this script
reads an expert cache entry (``~/.cache/ddlnl/experts/<key>``, named in every run's log)
and scores each saved epoch on the clean test set.

    DDLNL_DATA=/work/shared/data python scripts/expert_curve.py ~/.cache/ddlnl/experts/8ccdfb3fd14c6a2fab83

The entry's ``key.json`` names the dataset, network and preprocessing; the script rebuilds
the training images the expert saw (``--preset`` for its ``data:`` section, ``--imbalance``
for a long-tailed set) and refuses to score an entry whose image digest does not match them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ddlnl.data.noise import NoiseSpec
from ddlnl.errors import DdlnlError
from ddlnl.evaluate import build_model, test_predictions
from ddlnl.experiment import prepare_data
from ddlnl.experts import images_digest, stored_epochs
from ddlnl.models.functional import unflatten_params
from ddlnl.presets import load_preset
from ddlnl.utils.io import verify_sidecar


def epoch_accuracies(traj: torch.Tensor, model: dict, num_classes: int, x_test: torch.Tensor,
                     y_test: torch.Tensor) -> list[float]:
    """Test accuracy of each row of ``traj`` (row 0: the initialisation, then the stored epochs in order)."""
    net = build_model(model, num_classes, x_test.shape[-1])
    accs = []
    for row in traj:
        net.load_state_dict(unflatten_params(net, row.float()), strict=False)
        with torch.no_grad():
            accs.append(test_predictions(net, x_test).eq(y_test).float().mean().item())
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entry", type=Path, help="expert cache folder (holds key.json and expert_<k>.safetensors)")
    ap.add_argument("--preset", default="quick", help="preset whose data: section built the training set")
    ap.add_argument("--imbalance", type=float, default=None, help="long-tail imbalance ratio of the training set")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    key_file = args.entry / "key.json"
    if not key_file.is_file():
        raise SystemExit(f"{args.entry} has no key.json: pass an expert cache folder (see the run's "
                         "'expert cache hit/miss' log line)")
    try:
        key = json.loads(key_file.read_text())
        dataset, model, kind, digest, recipe = (key["dataset"], key["model"], key["preprocess"]["kind"],
                                                key["images"], key["train"])
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{key_file} is not an expert cache key ({type(e).__name__}: {e}); "
                         "pass a folder written by ddlnl's expert cache") from None
    try:
        data = prepare_data(dataset, NoiseSpec("clean", 0.0), load_preset(args.preset) | {"preprocess": kind},
                            data_root=args.data_root, imbalance=args.imbalance)
    except DdlnlError as e:
        raise SystemExit(str(e)) from None
    if images_digest(data.x_train) != digest:
        raise SystemExit(f"{args.entry} was trained on other training images (digest {digest}) than "
                         f"{dataset} as the data: section of preset {args.preset!r} builds it; pass the "
                         "--preset and --imbalance of the run that trained it")
    files = sorted(args.entry.glob("expert_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise SystemExit(f"{args.entry} holds no expert_<k>.safetensors")
    print(f"{dataset}, {model}, preprocess {kind}, "
          f"expert recipe {json.dumps(recipe, sort_keys=True)}")
    num_classes = data.splits.train.num_classes
    stored = key.get("stored_epochs")  # an expert trained longer than matching reads keeps only some epochs
    for path in files:
        why = verify_sidecar(path)
        if why is not None:
            print(f"{path.name}: skipped ({why}; the next run that needs it rebuilds it)")
            continue
        accs = epoch_accuracies(load_file(str(path))["trajectory"], model, num_classes, data.x_test, data.y_test)
        epochs = (list(range(len(accs))) if stored is None
                  else stored_epochs(stored["last"], stored["until"], stored["also"]))
        print(f"{path.name}: " + "  ".join(f"epoch {e}: {100 * a:.2f}%" for e, a in zip(epochs, accs)))


if __name__ == "__main__":
    main()
