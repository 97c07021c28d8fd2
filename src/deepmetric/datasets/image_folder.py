"""Images in one sub-folder per class: ``root/<class name>/<image file>``."""

import os

import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFolderDataset(torch.utils.data.Dataset):
    """Every image under ``root/<class>/``; class names are sorted and numbered from 0.

    Args:
        root: the folder holding one sub-folder per class.
        transform: applied to each PIL image (any callable; torchvision is not required).
        target_transform: applied to each integer label.
        extensions: file endings counted as images (case-insensitive).

    Attributes: ``paths``, ``labels``, ``classes`` (class names, index = label).
    """

    def __init__(self, root, transform=None, target_transform=None, extensions=IMAGE_EXTENSIONS):
        if not os.path.isdir(root):
            raise ValueError(f"ImageFolderDataset: root {root!r} is not a folder")
        self.root = root
        self.transform = transform
        self.target_transform = target_transform
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.paths, self.labels = [], []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            for dirpath, _, files in sorted(os.walk(folder)):
                for file_name in sorted(files):
                    if file_name.lower().endswith(tuple(extensions)):
                        self.paths.append(os.path.join(dirpath, file_name))
                        self.labels.append(label)
        if not self.paths:
            raise ValueError(
                f"ImageFolderDataset: no images under {root!r}; expected root/<class name>/<image> "
                f"with one of the endings {tuple(extensions)}"
            )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return load_image_item(self.paths[idx], self.labels[idx], self.transform, self.target_transform)


def load_image_item(path, label, transform, target_transform):
    """``(image, label)`` with Pillow, converted to RGB, transforms applied."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
    if transform is not None:
        img = transform(img)
    if target_transform is not None:
        label = target_transform(label)
    return img, label
