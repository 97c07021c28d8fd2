"""What a run shows a person: metrics.json, a per-epoch CSV, TensorBoard scalars, two pictures and
report.md.

Pictures need matplotlib (the ``plot`` extra); without it the report says so and the rest is
still written. The 2-D projection uses UMAP when umap-learn is installed, else t-SNE.
"""

import csv
import json
import os

import numpy as np


def write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_history_row(path, row):
    """Write ``row`` (a dict with an ``epoch``) into the CSV history, replacing rows of that epoch
    and later ones: a resumed run repeats the epochs after its last checkpoint."""
    rows = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < int(row["epoch"])]
    rows.append(row)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class TensorBoardLog:
    """Per-epoch scalars under ``folder/tensorboard`` when tensorboard is installed, else nothing.

    A resumed run purges the events from the epoch it restarts at, so curves are not doubled.
    """

    def __init__(self, folder, first_epoch=1):
        self.writer = None
        if folder is None:  # a process that does not write (not rank 0 under torchrun)
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(os.path.join(folder, "tensorboard"), purge_step=first_epoch)

    def write(self, epoch, scalars, group):
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(f"{group}/{name}", value, epoch)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def history_epochs(path):
    """How many epochs the CSV history at ``path`` holds (0 when absent)."""
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as f:
        return max((int(r["epoch"]) for r in csv.DictReader(f)), default=0)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def project_2d(embeddings, seed=0):
    """``(points, method)``: a 2-D projection of the rows of ``embeddings``."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    try:
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1)
        return reducer.fit_transform(embeddings), "UMAP"
    except ImportError:
        pass
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(embeddings) - 1) / 3))
    points = TSNE(n_components=2, random_state=seed, perplexity=perplexity, init="pca").fit_transform(
        embeddings
    )
    return points, "t-SNE"


def plot_embeddings(embeddings, labels, path, title, seed=0):
    """Scatter of the held-out embeddings coloured by class; returns the method or None."""
    plt = _pyplot()
    if plt is None:
        return None
    points, method = project_2d(embeddings, seed)
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=cmap(i % cmap.N), label=str(c))
    if len(classes) <= 20:
        ax.legend(title="class", markerscale=2, fontsize=8, loc="best")
    ax.set_title(f"{title} ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return method


def plot_retrieval(queries, neighbours, labels, image_of, path, title):
    """A gallery: each row is a query and its nearest neighbours; wrong matches framed in red.

    Args:
        queries: held-out indices of the query items.
        neighbours: ``(len(queries), k)`` held-out indices of their neighbours, nearest first.
        labels: held-out labels.
        image_of: ``i -> array`` to show for held-out item ``i``.
    """
    plt = _pyplot()
    if plt is None:
        return False
    k = neighbours.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.3 * (k + 1), 1.35 * len(queries)))
    axes = np.atleast_2d(axes)
    for row, q in enumerate(queries):
        _show(axes[row, 0], image_of(q), f"query {labels[q]}", "black")
        for col in range(k):
            n = neighbours[row, col]
            correct = labels[n] == labels[q]
            _show(axes[row, col + 1], image_of(n), str(labels[n]), "green" if correct else "red")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _show(ax, image, caption, frame_color):
    cmap = "gray_r" if np.ndim(image) == 2 else None
    ax.imshow(image, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame_color)
        spine.set_linewidth(3 if frame_color == "red" else 1.5)
    ax.set_title(caption, fontsize=8, color=frame_color)


def metrics_table(rows):
    """Markdown table of ``{section: {metric: value}}``."""
    metrics = sorted({m for values in rows.values() for m in values})
    lines = ["| | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for section, values in rows.items():
        cells = [f"{values[m]:.4f}" if m in values else "" for m in metrics]
        lines.append(f"| {section} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
