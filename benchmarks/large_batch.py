"""Large-batch contrastive training in bounded memory: ``python -m benchmarks.large_batch``.

Three groups of rows, each measured by ``benchmarks.harness`` in a fresh process with capped
address space (a row that exceeds its cap is an ``oom`` row, which is itself the result):

* ``step``: one training step (forward, backward, optimizer) of ``NTXentLoss`` on a batch of
  synthetic 32 x 32 images through a small ConvNet with 512-d embeddings. ``plain`` is
  ``loss(model(images), labels)``; ``cached`` is ``CachedBatchLoss(model, NTXentLoss(tile_size),
  chunk_size)``, which holds one chunk's activations and one tile of the similarity matrix at a
  time. At the large batch the plain step runs under a memory cap; at the small batch both fit
  and the table gives the cached step's time per sample relative to the plain one.
* ``loss``: ``NTXentLoss`` forward and backward alone on ``(N, D)`` embeddings, tiled at the
  large N and both tiled and dense at a size where the dense path fits. The dense path is not run
  at the large N: its ``N x N`` float32 similarity matrix alone takes ``4 N^2`` bytes (17.2 GB at
  N = 65,536), before the exponentials, masks and gradient of the same size.
* ``clip``: ``CLIPLoss`` logits memory per process, analytic (measuring it needs several
  processes): with ``P`` processes of ``M / P`` rows each, the dense loss builds the global
  ``M x M`` logits in every process (``4 M^2`` bytes in float32), while a local loss builds only
  its own ``M / P`` rows against the ``M`` gathered columns (``4 M^2 / P`` bytes).

Labels: two views per class (``arange(N) // 2``), the usual NTXent setting of one positive per
anchor. Results go to ``benchmarks/results/large_batch.json`` and a markdown table is printed
(``--from-json`` prints the saved one). ``--quick`` runs every workload at a tiny size (a smoke
run; results in ``benchmarks/results/smoke/``). The full sizes take minutes and gigabytes: run
them on a quiet machine.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAME = "large_batch"
EMBEDDING = 512
IMAGE = (3, 32, 32)
TEMPERATURE = 0.07
LEARNING_RATE = 0.01


def convnet(embedding=EMBEDDING):
    """A small ConvNet ``(N, 3, 32, 32) -> (N, embedding)``, initialised from torch's generator.

    No batch norm: it treats rows independently, so the cached step computes exactly the plain
    step's gradients (batch norm would normalise each chunk by its own statistics)."""
    layers, width = [], IMAGE[0]
    for out in (32, 64, 128):
        layers += [torch.nn.Conv2d(width, out, 3, stride=2, padding=1), torch.nn.ReLU()]
        width = out
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, embedding)]
    return torch.nn.Sequential(*layers)


def two_views(n):
    """Labels of ``n`` rows, two per class: ``0, 0, 1, 1, ...``."""
    return torch.arange(n) // 2


class TrainingStep:
    """One optimizer step per call on a fixed batch; ``mode`` is ``"plain"`` or ``"cached"``."""

    def __init__(self, batch_size, mode, chunk_size=None, tile_size=None, seed=0, embedding=EMBEDDING):
        from deepmetric.losses import CachedBatchLoss, NTXentLoss

        torch.manual_seed(seed)
        self.model = convnet(embedding)
        self.images = torch.randn(batch_size, *IMAGE)
        self.labels = two_views(batch_size)
        if mode == "plain":
            self.loss = NTXentLoss(temperature=TEMPERATURE, tile_size=tile_size)
            self.step_loss = lambda: self.loss(self.model(self.images), self.labels)
        elif mode == "cached":
            if chunk_size is None:
                raise ValueError("TrainingStep: mode='cached' needs a chunk_size")
            loss = NTXentLoss(temperature=TEMPERATURE, tile_size=tile_size)
            self.loss = CachedBatchLoss(self.model, loss, chunk_size)
            self.step_loss = lambda: self.loss(self.images, self.labels)
        else:
            raise ValueError(f"TrainingStep: mode must be 'plain' or 'cached', got {mode!r}")
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.batch_size = batch_size
        self.last_loss = None

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.step_loss()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())

    def report(self):
        return {"loss": self.last_loss, "batch_size": self.batch_size}


def train_step(batch_size, mode, chunk_size=None, tile_size=None, seed=0, embedding=EMBEDDING):
    """A ``TrainingStep`` (the harness times its calls)."""
    return TrainingStep(batch_size, mode, chunk_size, tile_size, seed, embedding)


class LossStep:
    """``NTXentLoss`` forward and backward on fixed ``(n, d)`` embeddings per call."""

    def __init__(self, n, d, tile_size=None, seed=0):
        from deepmetric.losses import NTXentLoss

        generator = torch.Generator().manual_seed(seed)
        self.embeddings = torch.randn(n, d, generator=generator).requires_grad_()
        self.labels = two_views(n)
        self.loss = NTXentLoss(temperature=TEMPERATURE, tile_size=tile_size)
        self.last_loss = None

    def __call__(self):
        self.embeddings.grad = None
        loss = self.loss(self.embeddings, self.labels)
        loss.backward()
        self.last_loss = float(loss.detach())

    def report(self):
        return {"loss": self.last_loss}


def loss_step(n, d, tile_size=None, seed=0):
    """A ``LossStep`` (the harness times its calls)."""
    return LossStep(n, d, tile_size, seed)


def dense_matrix_gb(n, bytes_per_value=4):
    """Size in GB (10^9 bytes) of one ``n x n`` matrix: ``bytes_per_value * n^2``."""
    return bytes_per_value * n * n / 1e9


def clip_logits_bytes(global_batch, processes, local_loss, bytes_per_value=4):
    """Bytes of ``CLIPLoss`` logits held by one process (one matrix; its gradient and softmax
    are of the same size).

    ``M = global_batch`` rows split evenly over ``P = processes``: the dense loss holds
    ``M x M`` values in every process; a local loss holds its ``M / P`` rows against all ``M``
    columns."""
    if processes < 1 or global_batch % processes:
        raise ValueError(
            f"clip_logits_bytes: global_batch ({global_batch}) must split evenly over processes ({processes})"
        )
    rows = global_batch // processes if local_loss else global_batch
    return bytes_per_value * rows * global_batch


@dataclass
class Row:
    group: str  # step | loss
    name: str
    workload: str
    kwargs: dict
    memory_cap_gb: float = None  # None: the run's default cap
    note: str = ""
    samples: int = field(default=0)  # rows per call, for time per sample


def rows(quick=False):
    """The measured rows; ``quick`` shrinks every size (a smoke run of the same code paths)."""
    if quick:
        big, small, chunk, tile, loss_n, loss_small, d = 64, 32, 16, 8, 256, 128, 32
    else:
        big, small, chunk, tile, loss_n, loss_small, d = 16384, 2048, 512, 1024, 65536, 8192, EMBEDDING
    step = "benchmarks.large_batch:train_step"
    loss = "benchmarks.large_batch:loss_step"
    emb = d if quick else EMBEDDING
    out = [
        Row("step", f"plain step, batch {big}", step, {"batch_size": big, "mode": "plain", "embedding": emb},
            note="under the memory cap", samples=big),
        Row("step", f"cached step, batch {big}", step,
            {"batch_size": big, "mode": "cached", "chunk_size": chunk, "tile_size": tile, "embedding": emb},
            note=f"chunk {chunk}, tile {tile}", samples=big),
        Row("step", f"plain step, batch {small}", step,
            {"batch_size": small, "mode": "plain", "embedding": emb}, samples=small),
        Row("step", f"cached step, batch {small}", step,
            {"batch_size": small, "mode": "cached", "chunk_size": chunk, "tile_size": tile, "embedding": emb},
            note=f"chunk {chunk}, tile {tile}", samples=small),
        Row("loss", f"NTXent tiled, N={loss_n}", loss, {"n": loss_n, "d": d, "tile_size": tile},
            note=f"tile {tile}; dense not run: one N x N float32 matrix is {dense_matrix_gb(loss_n):.3g} GB",
            samples=loss_n),
        Row("loss", f"NTXent tiled, N={loss_small}", loss, {"n": loss_small, "d": d, "tile_size": tile},
            note=f"tile {tile}", samples=loss_small),
        Row("loss", f"NTXent dense, N={loss_small}", loss, {"n": loss_small, "d": d}, samples=loss_small),
    ]
    return out


def clip_rows(global_batch=65536, processes=(1, 2, 4, 8)):
    """The analytic ``CLIPLoss`` logits rows: bytes per process, dense versus local loss."""
    return [
        {
            "processes": p,
            "global_batch": global_batch,
            "dense_gb": clip_logits_bytes(global_batch, p, local_loss=False) / 1e9,
            "local_gb": clip_logits_bytes(global_batch, p, local_loss=True) / 1e9,
        }
        for p in processes
    ]


def measure_all(selected, memory_cap_gb, time_cap_s, repeats=3, log=sys.stderr):
    from benchmarks.harness import measure

    entries = []
    for row in selected:
        cap = row.memory_cap_gb or memory_cap_gb
        result = measure(row.workload, row.kwargs, repeats=repeats, warmup=1, timeout_s=time_cap_s,
                         memory_limit_gb=cap)
        entry = {"group": row.group, "name": row.name, "kwargs": row.kwargs, "note": row.note,
                 "samples": row.samples, "memory_cap_gb": cap, **result.to_dict()}
        entries.append(entry)
        print(f"{row.name:32s} {result.status:8s} {result.median_s or 0:.3f} s "
              f"{result.peak_extra_mb or 0:.0f} MB", file=log, flush=True)
    return entries


def _per_sample_us(entry):
    if entry.get("status") != "ok" or not entry.get("samples"):
        return None
    return 1e6 * entry["median_s"] / entry["samples"]


def render(entries, clip):
    """A markdown table of the measured rows, the cached/plain and tiled/dense time ratios, and
    the analytic CLIPLoss table."""
    lines = [
        "| row | status | time per call | time per sample | peak extra memory | memory cap | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        ok = e.get("status") == "ok"
        per = _per_sample_us(e)
        seconds = f"{e['median_s']:.3f} s" if ok else "-"
        per_sample = f"{per:.1f} us" if per is not None else "-"
        memory = f"{e['peak_extra_mb']:.0f} MB" if ok else "-"
        note = e.get("note") or ""
        if not ok and e.get("detail"):
            note = f"{note} ({e['detail'][:80]})".strip()
        lines.append(
            f"| {e['name']} | {e['status']} | {seconds} | {per_sample} | {memory} | "
            f"{e['memory_cap_gb']:g} GB | {note} |"
        )
    ratios = []
    by_name = {e["name"]: e for e in entries}
    for e in entries:
        for slow, fast in (("cached step", "plain step"), ("NTXent tiled", "NTXent dense")):
            if e["name"].startswith(slow):
                other = by_name.get(e["name"].replace(slow, fast))
                a, b = _per_sample_us(e), _per_sample_us(other) if other else None
                if a is not None and b is not None:
                    ratios.append(f"- {e['name']}: {a / b:.2f}x the time per sample of {other['name']}")
    if ratios:
        lines += ["", *ratios]
    lines += [
        "",
        "CLIPLoss logits per process (float32, analytic: one M x M or M/P x M matrix):",
        "",
        "| processes P | global batch M | dense (4 M^2 bytes) | local loss (4 M^2 / P bytes) |",
        "|---|---|---|---|",
    ]
    for c in clip:
        lines.append(
            f"| {c['processes']} | {c['global_batch']} | {c['dense_gb']:.2f} GB | {c['local_gb']:.2f} GB |"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.large_batch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="every workload at a tiny size (a smoke run)")
    parser.add_argument("--memory-cap-gb", type=float, default=8.0, help="address space per measurement")
    parser.add_argument("--time-cap", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (at most)")
    parser.add_argument("--only", nargs="*", default=None, help="row names to measure")
    parser.add_argument("--from-json", action="store_true", help="print the saved results; measure nothing")
    parser.add_argument("--results", type=Path, default=None, help="where to write the JSON results")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = args.results or (RESULTS / "smoke" if args.quick else RESULTS) / f"{NAME}.json"
    clip = clip_rows(256 if args.quick else 65536, (1, 2) if args.quick else (1, 2, 4, 8))
    if args.from_json:
        entries = json.loads(path.read_text())["rows"]
    else:
        selected = [r for r in rows(args.quick) if not args.only or r.name in args.only]
        entries = measure_all(selected, args.memory_cap_gb, args.time_cap, args.repeats)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": entries, "clip_logits": clip}, indent=1) + "\n")
    print(render(entries, clip))


if __name__ == "__main__":
    main()
