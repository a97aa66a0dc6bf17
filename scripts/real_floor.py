"""FID / KID of a dataset's training images against its test split: the floor a sample FID is read against.

    python scripts/real_floor.py --dataset cifar10 --data-root DATA [--n-train 50000] [--also 5000 10000]
        [--features inception] [--compile]

The literature's CIFAR-10 floor is 50,000 training images against the 10,000 test images
(about 3 on the official batches; docs/evaluation.md says what ours is on the JPEG copy).
Features are cached per set (agelab.evaluate.real_features): a second run, or ``agelab eval``
on the same dataset, reads them; a run stopped midway continues from its partial files. The
training subset is the first ``--n-train`` of a seeded permutation (seed 0: the subset
``agelab eval --n-samples N`` uses for its own floor, so both share the cache). ``--also N ...``
reports the floor of the first N of those images too, from the same features: FID is biased
upwards for small sets, and a sample FID over N images is read against the floor over N.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", help="dataset with train and test splits (default: cifar10)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $AGELAB_DATA, then the cache)")
    p.add_argument("--image-size", type=int, default=32, help="image size the dataset is read at (default: 32)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: the whole split)")
    p.add_argument("--also", type=int, nargs="+", default=[], metavar="N",
                   help="also the floor of the first N training images (each N below --n-train), e.g. 5000 10000")
    p.add_argument("--features", choices=("inception", "classifier"), default="inception",
                   help="feature extractor (default: inception, the standard FID network)")
    p.add_argument("--classifier", default=None, help="domain classifier file for --features classifier")
    p.add_argument("--batch-size", type=int, default=100, help="images per extractor batch (default: 100)")
    p.add_argument("--compile", action="store_true", help="run the Inception through torch.compile "
                   "(agelab eval --compile-extractor; faster on CPU after about a minute of compiling)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = p.parse_args(argv)

    from agelab.cpu import cpu_description
    from agelab.data import load_dataset
    from agelab.evaluate import load_domain_classifier, real_features
    from agelab.metrics.features import InceptionExtractor
    from agelab.metrics.sample_quality import frechet_distance, kernel_inception_distance

    started = time.time()
    test = load_dataset(args.dataset, "test", args.image_size, args.data_root)
    train = load_dataset(args.dataset, "train", args.image_size, args.data_root)
    if args.features == "inception":
        ext = InceptionExtractor.from_weights(None, progress=not args.no_progress, compile=args.compile)
    else:
        ext = load_domain_classifier(args.classifier, args.dataset, args.image_size, train.channels, required=True)
    ext = ext.to(args.device)
    n = min(args.n_train or len(train), len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    log: list[dict] = []
    common = dict(dataset=args.dataset, image_size=args.image_size, batch_size=args.batch_size,
                  progress=not args.no_progress, log=log)
    f_test, _ = real_features(ext, test.images, split="test", desc="features: test split", **common)
    f_train, _ = real_features(ext, train.images[idx], split="train",
                               desc=f"features: train split ({n} random images, seed 0)", **common)
    kid_mean, kid_std = kernel_inception_distance(f_test, f_train)
    subsets = []
    for m in sorted(set(args.also)):
        if not 2 <= m < n:
            p.error(f"--also {m}: must be between 2 and the {n} training images")
        k_mean, k_std = kernel_inception_distance(f_test, f_train[:m])
        subsets.append({"n_train": m, "fid": frechet_distance(f_test, f_train[:m]), "kid": k_mean, "kid_std": k_std})
    result = {"dataset": args.dataset, "extractor": ext.name, "weights": getattr(ext, "weights", None),
              "n_test": len(f_test), "n_train": len(f_train), "fid": frechet_distance(f_test, f_train),
              "kid": kid_mean, "kid_std": kid_std, "subsets": subsets, "feature_sets": log, "cpu": cpu_description(),
              "threads": torch.get_num_threads(), "seconds": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%d")}
    print(f"{args.dataset}: FID {result['fid']:.3f}, KID {kid_mean:.5f} +- {kid_std:.5f} "
          f"({n} train vs {len(f_test)} test images, {ext.name}); {result['seconds']:.0f} s on {result['cpu']['model']}, "
          f"{result['threads']} threads")
    for sub in subsets:
        print(f"  the first {sub['n_train']} of them: FID {sub['fid']:.3f}, KID {sub['kid']:.5f} +- {sub['kid_std']:.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
