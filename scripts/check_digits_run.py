"""Judge a trained run with an independent classifier (trained here on the real training split).

    python scripts/check_digits_run.py RUN [--data-root ../shared/data] [--classifier PATH] [--n 10000]

Prints (and writes RUN/classifier_check.json):
  * the classifier's own test accuracy (so the judge's quality is known),
  * the class histogram of n samples g(z) (are all ten classes produced?),
  * the fraction of samples classified with confidence > 0.9,
  * reconstruction label agreement: how often argmax f(g(e(x))) == argmax f(x) and == the true label, on the test split.
Works for runs on mnist (and digits).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import agelab
from agelab.data import load_dataset, to_float
from agelab.nets.classifier import load_classifier, predict, save_classifier, train_classifier
from agelab.sampling import sample_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--classifier", default=None, help="safetensors file; trained and saved there if missing")
    ap.add_argument("--epochs", type=int, default=None,
                    help="classifier epochs (default: 3, or as many as 600 steps of batch 128 take on a small "
                         "training split: 55 on digits, where 3 epochs gave a 41%%-accurate judge)")
    ap.add_argument("--n", type=int, default=10000, help="number of samples to classify")
    args = ap.parse_args()

    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    root = args.data_root or cfg.get("data_root")
    train = load_dataset(cfg["dataset"], "train", 32, root)
    test = load_dataset(cfg["dataset"], "test", 32, root)
    x_test, y_test = to_float(test.images), test.labels

    clf_path = Path(args.classifier or f"{cfg['dataset']}-classifier.safetensors")
    if clf_path.exists():
        clf = load_classifier(clf_path)
    else:
        epochs = args.epochs or max(3, math.ceil(600 / max(1, len(train.labels) // 128)))
        clf = train_classifier(to_float(train.images), train.labels, epochs=epochs)
        save_classifier(clf, clf_path, {"dataset": cfg["dataset"], "epochs": epochs})
    clf_acc = (predict(clf, x_test).argmax(1) == y_test).float().mean().item()

    model = agelab.load(run)
    with torch.no_grad():
        samples = sample_images(model, args.n, seed=123)
        p_samples = predict(clf, samples)
        rec = torch.cat([model.reconstruct(x_test[i : i + 500]) for i in range(0, len(x_test), 500)])
    hist = torch.bincount(p_samples.argmax(1), minlength=10).tolist()
    confident = (p_samples.max(1).values > 0.9).float().mean().item()
    pred_x = predict(clf, x_test).argmax(1)
    pred_rec = predict(clf, rec).argmax(1)
    result = {
        "checkpoint": str(model.checkpoint_path),
        "classifier": str(clf_path),
        "classifier_test_accuracy": clf_acc,
        "samples": args.n,
        "sample_class_histogram": hist,
        "sample_classes_present": sum(h > 0 for h in hist),
        "sample_min_class_fraction": min(hist) / args.n,
        "sample_confident_fraction": confident,
        "recon_agrees_with_classifier_on_real": (pred_rec == pred_x).float().mean().item(),
        "recon_accuracy_true_labels": (pred_rec == y_test).float().mean().item(),
        "test_images": len(x_test),
    }
    (run / "classifier_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
