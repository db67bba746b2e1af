"""``ddlnl export``: a distilled set as a PNG grid, an image folder or DATM's files, to take away."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a SyntheticSet file as a PNG grid, an image folder or DATM/MTT files")
    p.add_argument("set", help="a .safetensors file written by ddlnl (or a DATM/MTT folder)")
    p.add_argument("--to", required=True, metavar="FORMAT",
                   help="png-grid (one PNG, a row per class), imagefolder (OUT/<class>/<i>.png + labels.json) "
                        "or datm (images_best.pt, labels_best.pt, lr_best.pt)")
    p.add_argument("--out", required=True, help="the PNG file (png-grid) or the folder (imagefolder, datm)")
    p.add_argument("--force", action="store_true", help="replace an existing --out (a non-empty folder's contents are deleted)")


def main(args) -> int:
    from ddlnl.export import export_set, load_set

    synset = load_set(args.set)
    out = export_set(synset, args.to, args.out, force=args.force)
    n = synset.images.shape[0]
    if args.to == "png-grid":
        print(f"wrote {out} ({n} stored images in pixels, a row per class)")
    elif args.to == "imagefolder":
        print(f"wrote {out} (the decoded training images as PNGs, {synset.label_kind} labels in {out}/labels.json)")
    else:
        dataset = synset.meta.get("dataset", "DATASET")
        print(f"wrote {out} (images_best.pt in {synset.preprocess.kind} space, labels_best.pt"
              f"{', lr_best.pt' if synset.lr is not None else ''}); evaluate it with "
              f"`ddlnl evaluate {out} --dataset {dataset} --preprocess {synset.preprocess.kind}`")
    return 0
