"""Paste PNG grids side by side into one small figure (RGB if any input is): side_by_side.py OUT IN1 IN2 ..."""

import sys

from PIL import Image


def main() -> None:
    out, paths = sys.argv[1], sys.argv[2:]
    ims = [Image.open(p) for p in paths]
    mode = "L" if all(i.mode in ("L", "1") for i in ims) else "RGB"  # grayscale grids stay one channel
    ims = [i.convert(mode) for i in ims]
    gap = 12
    w = sum(i.size[0] for i in ims) + gap * (len(ims) - 1)
    h = max(i.size[1] for i in ims)
    canvas = Image.new(mode, (w, h), 255 if mode == "L" else (255, 255, 255))
    x = 0
    for im in ims:
        canvas.paste(im, (x, 0))
        x += im.size[0] + gap
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    main()
