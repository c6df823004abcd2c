"""Pathfinder and Path-X (Linsley et al. 2018; LRA's image-connectivity tasks).

Each image holds curved contours drawn from short straight "paddles" whose heading
turns a little at every joint, two circular markers, and distractor contours. The
label is 1 when both markers sit on the two ends of one contour and 0 when they sit on
two different contours; difficulty grows with the number of paddles per contour (6 /
9 / 14). Unlike the original generator, our paddles join without gaps and contours never
touch, so the label is exactly the pixel connectivity of the two markers (the tests
check it by flood fill).

Written in the release layout ``pathfinderNN/<difficulty>/imgs/<k>/sample_<i>.png`` with
``metadata/<k>.npy`` text lines ``imgs/<k> sample_<i>.png <i> <label> ...``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import tqdm

from experiments.lra.common import DataMissingError, FiniteTask
from experiments.tasks.base import TaskSpec

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
# Per resolution: paddle length, stroke thickness, marker radius (lra.md's recipe).
GEOMETRY = {32: (2.0, 0.5, 1.5), 64: (3.0, 1.0, 2.0), 128: (5.0, 1.5, 3.0), 256: (8.0, 2.0, 5.0)}
PER_FOLDER = 1000
EMPTY_RELEASE_FILE = ("pathfinder32", "curv_baseline", "imgs/0", "sample_172.png")


def _offsets(radius: float) -> np.ndarray:
    r = max(radius, 0.5)
    span = np.arange(-int(math.ceil(r)), int(math.ceil(r)) + 1)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    keep = dy**2 + dx**2 <= r * r
    return np.stack([dy[keep], dx[keep]], axis=1)


_OFFSETS: dict[float, np.ndarray] = {}


def _disc_pixels(ys, xs, radius, size) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels within ``radius`` of the pixels nearest each
    centre (ys[i], xs[i]), clipped to a ``size`` x ``size`` image (duplicates kept)."""
    if radius not in _OFFSETS:
        _OFFSETS[radius] = _offsets(radius)
    centres = np.stack([np.rint(ys), np.rint(xs)], axis=-1).astype(np.int64)
    pts = (centres[:, None, :] + _OFFSETS[radius][None]).reshape(-1, 2)
    ok = (pts >= 0).all(1) & (pts < size).all(1)
    return pts[ok, 0], pts[ok, 1]


def _disc(canvas, y, x, radius):
    """Set the pixels within ``radius`` of the pixel nearest (y, x)."""
    canvas[_disc_pixels(np.atleast_1d(y), np.atleast_1d(x), radius, canvas.shape[0])] = True


def _contour(rng, size, n_paddles, paddle, thickness, max_turn=math.pi / 5):
    """Pixels of one contour and its two end points, or None if it leaves the image.

    The heading turns by a uniform angle in [-max_turn, max_turn] at every joint; each
    paddle is stamped as ``4 * paddle`` small steps (whole arrays: no per-pixel loop).
    """
    if n_paddles < 1:
        raise ValueError(f"a contour needs at least one paddle, got n_paddles={n_paddles}")
    margin = paddle + 2
    y0, x0 = rng.uniform(margin, size - margin, 2)
    headings = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.uniform(-max_turn, max_turn, n_paddles))
    sub = int(4 * paddle)
    step_heading = np.repeat(headings, sub)
    ys = y0 + np.cumsum(np.sin(step_heading) * (paddle / sub))
    xs = x0 + np.cumsum(np.cos(step_heading) * (paddle / sub))
    if not ((ys >= 1) & (ys < size - 1) & (xs >= 1) & (xs < size - 1)).all():
        return None
    canvas = np.zeros((size, size), bool)
    canvas[_disc_pixels(ys, xs, thickness, size)] = True
    return canvas, (y0, x0), (float(ys[-1]), float(xs[-1]))


def _dilate(mask):
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= out[:, :-1]
    out[:, :-1] |= out[:, 1:]
    return out


def make_image(
    rng: np.random.Generator,
    size: int = 32,
    n_paddles: int = 14,
    label: int | None = None,
    n_distractors: int | None = None,
    return_markers: bool = False,
):
    """``(image uint8 [size, size], label)``; contours are kept one pixel apart.

    ``return_markers`` adds the two marker centres (pixel coordinates), for checks.
    """
    paddle, thickness, radius = GEOMETRY.get(size, GEOMETRY[32])
    label = int(rng.integers(2)) if label is None else label
    n_distractors = max(1, 20 // max(n_paddles, 1)) if n_distractors is None else n_distractors
    for _ in range(1000):
        occupied = np.zeros((size, size), bool)
        contours = []
        for index in range(2 + n_distractors):
            for _ in range(200 if index < 2 else 10):  # distractors are optional
                c = _contour(rng, size, n_paddles, paddle, thickness)
                if c is None:
                    continue
                marks = np.zeros_like(occupied)
                for end in (c[1], c[2]):
                    _disc(marks, *end, radius)
                body = c[0] | marks
                if not (_dilate(body) & occupied).any():
                    occupied |= body
                    contours.append(c)
                    break
        if len(contours) < 2:
            continue
        image = np.zeros((size, size), bool)
        for canvas, _, _ in contours:
            image |= canvas
        first, second = contours[0], contours[1]
        ends = (first[1], first[2]) if label else (first[1], second[1])
        for end in ends:
            _disc(image, *end, radius)
        image = (image * 255).astype(np.uint8)
        if return_markers:
            return image, label, [(int(round(y)), int(round(x))) for y, x in ends]
        return image, label
    raise RuntimeError(f"could not place contours in a {size}x{size} image; lower n_paddles")


def _folder_job(args):
    root, folder, start, count, size, n_paddles, seed = args
    meta = os.path.join(root, "metadata", f"{folder}.npy")
    img_dir = os.path.join(root, "imgs", str(folder))
    if _folder_done(meta, img_dir, count):  # cached: a re-run only makes what is missing
        return count
    rng = np.random.default_rng([seed, folder])
    os.makedirs(img_dir, exist_ok=True)
    lines = []
    for i in range(start, start + count):
        image, label = make_image(rng, size, n_paddles, label=i % 2)
        name = f"sample_{i}.png"
        path = os.path.join(img_dir, name)
        if not os.path.exists(path):
            _write_png(path, image)
        lines.append(f"imgs/{folder} {name} {i} {label} {size} {n_paddles}\n")
    with open(meta + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(meta + ".tmp", meta)
    return count


def _folder_done(meta: str, img_dir: str, count: int) -> bool:
    """The metadata is written last, so a complete one means the folder is finished."""
    if not os.path.exists(meta):
        return False
    with open(meta) as f:
        names = [line.split()[1] for line in f if line.strip()]
    return len(names) == count and all(os.path.exists(os.path.join(img_dir, n)) for n in names)


def _write_png(path, image):
    from PIL import Image

    Image.fromarray(image, mode="L").save(path)


def generate(
    data_dir: str,
    n_images: int,
    resolution: int = 32,
    difficulty: str = "curv_contour_length_14",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> str:
    """Write ``n_images`` (half positive) in the release layout; returns the difficulty dir."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; valid: {', '.join(DIFFICULTIES)}")
    root = os.path.join(data_dir, f"pathfinder{resolution}", difficulty)
    os.makedirs(os.path.join(root, "metadata"), exist_ok=True)
    jobs = [
        (
            root,
            k,
            k * PER_FOLDER,
            min(PER_FOLDER, n_images - k * PER_FOLDER),
            resolution,
            DIFFICULTIES[difficulty],
            seed,
        )
        for k in range(math.ceil(n_images / PER_FOLDER))
    ]
    bar = tqdm.tqdm(total=n_images, desc=f"pathfinder{resolution}", disable=not progress)
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            bar.update(_folder_job(job))
    else:
        with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
            for done in pool.map(_folder_job, jobs):
                bar.update(done)
    bar.close()
    return root


def read_release(root: str) -> tuple[list[str], np.ndarray]:
    """(image paths, labels) from ``metadata/*.npy``, skipping empty image files."""
    meta_dir = os.path.join(root, "metadata")
    paths, labels = [], []
    for name in sorted(os.listdir(meta_dir), key=lambda n: (len(n), n)):
        with open(os.path.join(meta_dir, name)) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 4:
                    continue
                path = os.path.join(root, fields[0], fields[1])
                if not os.path.exists(path) or os.path.getsize(path) == 0:
                    continue  # the release has one empty file (pathfinder32 baseline #172)
                paths.append(path)
                labels.append(int(fields[3]))
    return paths, np.asarray(labels, np.int32)


def load_pixels(paths: list[str]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])


class Pathfinder(FiniteTask):
    """Pixels in [0, 1] as a [resolution^2, 1] feature sequence; seeded 80/10/10 split."""

    def __init__(
        self,
        data_dir: str = "data",
        resolution: int = 32,
        difficulty: str = "curv_contour_length_14",
        split_seed: int = 42,
    ):
        self.data_dir, self.resolution, self.difficulty = data_dir, resolution, difficulty
        self.split_seed = split_seed
        name = "pathx" if resolution >= 128 else "pathfinder"
        self.spec = TaskSpec(
            name, "classify", seq_len=resolution * resolution, d_input=1, n_classes=2
        )
        self._all = None
        super().__init__(self._read)

    def _root(self) -> str:
        rel = os.path.join(f"pathfinder{self.resolution}", self.difficulty)
        for base in (self.data_dir, os.path.join(self.data_dir, "lra_release")):
            if os.path.isdir(os.path.join(base, rel, "metadata")):
                return os.path.join(base, rel)
        raise DataMissingError(
            f"Pathfinder {self.resolution} ({self.difficulty}) not found under "
            f"{self.data_dir!r}. Generate it with `python run.py data pathfinder --resolution "
            f"{self.resolution} --difficulty {self.difficulty} --data_dir {self.data_dir}`, "
            "or unpack the LRA release (lra_release/pathfinderNN/) there."
        )

    def _read(self, split: str) -> dict[str, np.ndarray]:
        if self._all is None:
            paths, labels = read_release(self._root())
            order = np.random.default_rng(self.split_seed).permutation(len(paths))
            n = len(paths)
            cut = {
                "train": order[: int(0.8 * n)],
                "val": order[int(0.8 * n) : int(0.9 * n)],
                "test": order[int(0.9 * n) :],
            }
            self._all = (paths, labels, cut)
        paths, labels, cut = self._all
        index = cut[split]
        pixels = load_pixels([paths[i] for i in index]).astype(np.float32) / 255.0
        return {"inputs": pixels.reshape(len(index), -1, 1), "targets": labels[index]}


def save_grid(images: np.ndarray, labels: np.ndarray, path: str, columns: int = 8) -> str:
    """A PNG grid of samples titled with their labels (for the docs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title("connected" if label else "apart", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_sample_grid(root: str, n: int = 16) -> str:
    """``root/samples.png``: the first ``n`` images of a generated or released set."""
    paths, labels = read_release(root)
    return save_grid(load_pixels(paths[:n]), labels[:n], os.path.join(root, "samples.png"))


class PathX(Pathfinder):
    """Path-X: Pathfinder at 128 x 128 (16384 pixels)."""

    def __init__(
        self,
        data_dir: str = "data",
        resolution: int = 128,
        difficulty: str = "curv_contour_length_14",
        split_seed: int = 42,
    ):
        super().__init__(data_dir, resolution, difficulty, split_seed)
