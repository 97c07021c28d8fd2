"""What a run shows a person: metrics.json, a per-epoch CSV, TensorBoard events (per-iteration loss
and learning rate, per-epoch validation metrics, held-out embeddings for the projector), two
pictures per section and report.md.

Pictures need matplotlib (the ``plot`` extra); without it the report says so and the rest is
still written. The 2-D projection is t-SNE (scikit-learn); ``DEEPMETRIC_PROJECTION=umap`` asks
for UMAP (umap-learn; its first call in a process compiles code for tens of seconds) and ``pca``
for the cheapest one.
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
    """Events under ``folder/tensorboard`` when tensorboard is installed, else nothing.

    Every event is placed on one axis, the global iteration (1, 2, ...): per-iteration loss and
    learning rate at their iteration, per-epoch values at the epoch's last iteration, the
    projector's embeddings at the epoch number. A resumed run purges the events after the
    iteration it restarts from, so curves are not doubled.
    """

    def __init__(self, folder, purge_step=None):
        self.writer = None
        if folder is None:  # a process that does not write (not rank 0 under torchrun)
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(os.path.join(folder, "tensorboard"), purge_step=purge_step)

    def write(self, step, scalars, group):
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(f"{group}/{name}", value, step)

    def embeddings(self, tag, embeddings, names, step):
        """Embeddings with one label per row for the projector (``names``: strings)."""
        if self.writer is None:
            return
        self.writer.add_embedding(embeddings, metadata=[str(n) for n in names], global_step=step, tag=tag)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def read_history(path):
    """The rows of the CSV history at ``path`` (dicts of strings), or ``[]``."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
    """``(points, method)``: a 2-D projection of the rows of ``embeddings``.

    t-SNE by default; ``DEEPMETRIC_PROJECTION=umap`` uses UMAP when umap-learn is installed (else
    t-SNE), ``pca`` the two principal components.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    choice = os.environ.get("DEEPMETRIC_PROJECTION", "tsne").lower()
    if choice not in ("umap", "tsne", "pca"):
        raise ValueError(f"DEEPMETRIC_PROJECTION must be umap, tsne or pca, got {choice!r}")
    if choice == "pca":
        centred = embeddings - embeddings.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        return centred @ components[:2].T, "PCA"
    try:
        if choice != "umap":
            raise ImportError

        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1)
        return reducer.fit_transform(embeddings), "UMAP"
    except ImportError:
        pass
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(embeddings) - 1) / 3))
    # 500 iterations instead of 1000: the picture settles long before, at half the cost
    # (scikit-learn before 1.5 calls the argument n_iter)
    import inspect

    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    points = TSNE(
        n_components=2, random_state=seed, perplexity=perplexity, init="pca", **{iterations: 500}
    ).fit_transform(embeddings)
    return points, "t-SNE"


MAX_PLOTTED_CLASSES = 12


def plot_embeddings(embeddings, labels, path, title, seed=0, name_of=str):
    """Scatter of embeddings coloured by class; returns the method or None. With more than
    ``MAX_PLOTTED_CLASSES`` classes a seeded choice of that many is shown (more colours could not
    be told apart); ``name_of`` gives the legend's class names."""
    plt = _pyplot()
    if plt is None:
        return None
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) > MAX_PLOTTED_CLASSES:
        shown = np.sort(np.random.RandomState(seed).choice(classes, MAX_PLOTTED_CLASSES, replace=False))
        keep = np.isin(labels, shown)
        embeddings, labels = embeddings[keep], labels[keep]
        title = f"{title}, {MAX_PLOTTED_CLASSES} of {len(classes)} classes"
        classes = shown
    points, method = project_2d(embeddings, seed)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=cmap(i % cmap.N), label=name_of(c))
    ax.legend(title="class", markerscale=2, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"{title} ({method})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return method


def plot_verification(roc_curves, histograms, threshold, path, title):
    """Two panels: the ROC curves (true match rate against false match rate, log scale; one
    curve per name of ``roc_curves``, each ``(fpr, tpr)``) and the histograms of positive and
    negative pair scores (``(edges, positive, negative)``, each normalised to unit area) with the
    calibrated ``threshold`` marked when given. Returns True when the picture was written."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, (roc_ax, hist_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (fpr, tpr) in roc_curves.items():
        fpr = np.asarray(fpr)
        keep = fpr > 0  # a log axis cannot show the curve's start at FMR 0
        roc_ax.plot(fpr[keep], np.asarray(tpr)[keep], label=name)
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false match rate")
    roc_ax.set_ylabel("true match rate")
    roc_ax.set_ylim(0, 1.01)
    roc_ax.grid(alpha=0.3)
    roc_ax.legend(fontsize=8, loc="lower right")
    roc_ax.set_title("ROC over every pair", fontsize=10)
    edges, positive, negative = (np.asarray(x, dtype=float) for x in histograms)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    kinds = ((negative, "different class", "tab:red"), (positive, "same class", "tab:green"))
    for counts, name, color in kinds:
        total = counts.sum()
        if total > 0:
            hist_ax.bar(centres, counts / (total * width), width=width, alpha=0.5, color=color, label=name)
    if threshold is not None:
        hist_ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    hist_ax.set_xlabel("cosine similarity of the trained embeddings")
    hist_ax.set_ylabel("density")
    hist_ax.legend(fontsize=8, loc="upper left")
    hist_ax.set_title("pair scores", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_retrieval(queries, neighbours, labels, image_of, path, title, name_of=str, related=None):
    """A gallery: each row is a query and its nearest neighbours; wrong matches framed in red.

    Args:
        queries: held-out indices of the query items.
        neighbours: ``(len(queries), k)`` held-out indices of their neighbours, nearest first.
        labels: held-out labels.
        image_of: ``i -> array`` to show for held-out item ``i``.
        related: ``(label_a, label_b) -> bool``, whether a neighbour matches (default: equal
            labels; multi-label data passes "shares a class").
    """
    plt = _pyplot()
    if plt is None:
        return False
    k = neighbours.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.3 * (k + 1), 1.35 * len(queries)))
    axes = np.atleast_2d(axes)
    for row, q in enumerate(queries):
        _show(axes[row, 0], image_of(q), f"query {name_of(labels[q])}", "black")
        for col in range(k):
            n = neighbours[row, col]
            correct = related(labels[n], labels[q]) if related else labels[n] == labels[q]
            _show(axes[row, col + 1], image_of(n), name_of(labels[n]), "green" if correct else "red")
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
