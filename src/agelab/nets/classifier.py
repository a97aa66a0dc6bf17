"""A small CNN classifier: an independent judge of samples and reconstructions.

It is trained on the real training split only, never on model outputs, and is
used to ask whether generated digits are recognisable (which classes samples
fall into, and whether g(e(x)) keeps the label of x).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm


class SmallCNN(nn.Module):
    """(B, C, 32, 32) in [-1, 1] -> logits (B, classes). ``features`` gives the penultimate layer."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
        )
        self.head = nn.Linear(4 * w, classes)
        self.meta = {"channels": channels, "classes": classes, "width": width}

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def train_classifier(train_x: Tensor, train_y: Tensor, epochs: int = 3, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True) -> SmallCNN:
    """Train on float images in [-1, 1] (N, C, 32, 32) with integer labels; small random shifts as augmentation."""
    torch.manual_seed(seed)
    model = SmallCNN(train_x.shape[1], int(train_y.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(train_x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    bar = tqdm(total=steps, desc="classifier", disable=not progress)
    for _ in range(epochs):
        perm = torch.randperm(len(train_x))
        for i in range(len(train_x) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = train_x[idx]
            dx, dy = torch.randint(-2, 3, (2,)).tolist()  # one random shift per batch
            x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch: int = 500) -> Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)])  # (N, classes)


def save_classifier(model: SmallCNN, path: str | Path, info: dict | None = None) -> None:
    path = Path(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"meta": json.dumps(model.meta), "info": json.dumps(info or {})})


def load_classifier(path: str | Path) -> SmallCNN:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    model = SmallCNN(**meta)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
