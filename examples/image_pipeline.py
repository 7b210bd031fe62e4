"""An image pipeline with NumPy and Pillow on deterministically generated (seeded) images.

Per image, a chain of tasks: ``make_image`` (gradient + random discs) → ``blur`` (Gaussian)
→ ``thumbnail`` (resize) → ``grayscale`` → ``histogram_stats``. Two fan-ins follow:
``summarize`` combines the per-image statistics into one summary dict, and
``contact_sheet`` tiles every thumbnail into one RGB array. ``build()`` returns both sinks.
"""

import numpy as np
from PIL import Image, ImageFilter

import shoal


@shoal.task
def make_image(seed, size):
    """A size×size RGB image: a colour gradient with a few random discs on top."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = c0 * (1 - x)[..., None] + c1 * y[..., None]
    for _ in range(rng.integers(3, 8)):
        cy, cx, r = rng.random(3) * [1, 1, 0.3]
        img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@shoal.task
def blur(img, radius):
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


@shoal.task
def thumbnail(img, size):
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


@shoal.task
def grayscale(img):
    return np.asarray(Image.fromarray(img).convert("L"))


@shoal.task
def histogram_stats(gray):
    hist, _ = np.histogram(gray, bins=16, range=(0, 256))
    return {
        "mean": round(float(gray.mean()), 4),
        "std": round(float(gray.std()), 4),
        "hist": hist.tolist(),
    }


@shoal.task
def summarize(stats):
    means = [s["mean"] for s in stats]
    return {
        "images": len(stats),
        "mean_brightness": round(sum(means) / len(means), 4),
        "darkest": means.index(min(means)),
        "brightest": means.index(max(means)),
        "hist": np.sum([s["hist"] for s in stats], axis=0).tolist(),
    }


@shoal.task
def contact_sheet(thumbs, cols, pad=2):
    """Tile equally sized RGB thumbnails into a grid (white padding) -> uint8 array."""
    h, w, _ = thumbs[0].shape
    rows = -(-len(thumbs) // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, t in enumerate(thumbs):
        r, c = divmod(k, cols)
        sheet[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = t
    return sheet


def build(n=12, size=128, thumb=64, radius=2, cols=4):
    thumbs = [thumbnail(blur(make_image(seed, size), radius), thumb) for seed in range(n)]
    stats = [histogram_stats(grayscale(t)) for t in thumbs]
    return summarize(stats), contact_sheet(thumbs, cols)


def reference(n=12, size=128, thumb=64, radius=2, cols=4):
    thumbs = [thumbnail.func(blur.func(make_image.func(s, size), radius), thumb) for s in range(n)]
    stats = [histogram_stats.func(grayscale.func(t)) for t in thumbs]
    return summarize.func(stats), contact_sheet.func(thumbs, cols)


def main():
    summary, sheet = shoal.compute(*build())
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"contact sheet: {sheet.shape[1]}x{sheet.shape[0]} RGB, {sheet.nbytes} bytes")
    print(shoal.last_run())


if __name__ == "__main__":
    main()
