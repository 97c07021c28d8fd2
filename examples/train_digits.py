"""Train a small embedding model on scikit-learn's handwritten digits and measure retrieval.

The digits (8x8 images, 10 classes) ship inside scikit-learn, so this runs anywhere with no
download. A two-layer network maps each image to a 32-d embedding; TripletMarginLoss pulls
images of the same digit together. Precision@1 on held-out digits (does the nearest other
test image show the same digit?) is printed before and after training.

Run: ``python examples/train_digits.py [--epochs N] [--seed S]``
"""

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepmetric import distances, losses


def precision_at_1(embeddings, labels):
    """Fraction of rows whose nearest other row (cosine) has the same label."""
    sims = distances.CosineSimilarity()(embeddings)
    sims.fill_diagonal_(-2.0)
    nearest = sims.argmax(dim=1)
    return (labels[nearest] == labels).float().mean().item()


def load_data(seed):
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    return x_train, x_test, y_train, y_test


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)
    )
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    with torch.no_grad():
        baseline = precision_at_1(x_test, y_test)
        untrained = precision_at_1(model(x_test), y_test)
    print(f"precision@1 on raw pixels:        {baseline:.3f}")
    print(f"precision@1 before training:      {untrained:.3f}")

    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train))
        total, batches = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            if len(idx) < 2:
                continue
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        print(f"epoch {epoch:2d}  mean loss {total / max(batches, 1):.4f}")

    model.eval()
    with torch.no_grad():
        trained = precision_at_1(model(x_test), y_test)
    print(f"precision@1 after training:       {trained:.3f}")
    return trained


if __name__ == "__main__":
    main()
