"""Train two encoders on paired data of two modalities with CLIPLoss and measure retrieval.

The data are synthetic, so this runs anywhere in seconds: each pair shares a hidden vector z;
the "image" is a random non-linear view of z (24 numbers) and the "text" another one
(16 numbers), each with its own noise. Two small MLPs map both modalities into one 32-d space,
and CLIPLoss (symmetric InfoNCE with a learnable temperature) pulls each pair together.
Image-to-text top-1 retrieval accuracy on held-out pairs (is the nearest text the image's own
caption?) is printed before and after training.

Run: ``python examples/clip_pairs.py [--steps N] [--seed S]``
"""

import argparse

import torch

from deepmetric import losses


def project(z, weights, noise, generator):
    """A noisy non-linear view of the hidden vectors ``z``."""
    view = torch.tanh(z @ weights[0]) @ weights[1]
    return view + noise * torch.randn(view.shape, generator=generator)


def retrieval_accuracy(image_emb, text_emb):
    """Fraction of images whose most similar text (cosine) is their own pair."""
    sims = torch.nn.functional.normalize(image_emb, dim=1) @ torch.nn.functional.normalize(text_emb, dim=1).T
    return (sims.argmax(dim=1) == torch.arange(len(sims))).float().mean().item()


def mlp(width_in, width_out):
    return torch.nn.Sequential(torch.nn.Linear(width_in, 64), torch.nn.ReLU(), torch.nn.Linear(64, width_out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    image_weights = (torch.randn(8, 32, generator=g), torch.randn(32, 24, generator=g) / 4)
    text_weights = (torch.randn(8, 32, generator=g), torch.randn(32, 16, generator=g) / 4)

    def pairs(n):
        z = torch.randn(n, 8, generator=g)
        return project(z, image_weights, 0.1, g), project(z, text_weights, 0.1, g)

    test_images, test_texts = pairs(256)
    image_encoder, text_encoder = mlp(24, 32), mlp(16, 32)
    loss_fn = losses.CLIPLoss()
    params = list(image_encoder.parameters()) + list(text_encoder.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)

    with torch.no_grad():
        before = retrieval_accuracy(image_encoder(test_images), text_encoder(test_texts))
    print(f"image->text top-1 on 256 held-out pairs before training: {before:.3f}")

    for step in range(1, args.steps + 1):
        images, texts = pairs(args.batch_size)
        loss = loss_fn(image_encoder(images), text_encoder(texts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}  temperature {loss_fn.temperature:.4f}")

    with torch.no_grad():
        after = retrieval_accuracy(image_encoder(test_images), text_encoder(test_texts))
    print(f"image->text top-1 on 256 held-out pairs after training:  {after:.3f}")
    return before, after


if __name__ == "__main__":
    main()
