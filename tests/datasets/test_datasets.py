import json
import os

import pytest
import torch

from deepmetric.datasets import (
    CUB,
    BaseDataset,
    Cars196,
    CSVDataset,
    Digits,
    ImageFolderDataset,
    INaturalist2018,
    StanfordOnlineProducts,
)

Image = pytest.importorskip("PIL.Image")


def write_image(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 3), color=(value, value, value)).save(path)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def cub_root(tmp_path):
    base = tmp_path / "CUB_200_2011"
    rows = [(1, "001.A/a.jpg", 1), (2, "050.B/b.jpg", 50), (3, "150.C/c.jpg", 150)]
    write(base / "images.txt", "".join(f"{i} {p}\n" for i, p, _ in rows))
    write(base / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, _, c in rows))
    for i, p, _ in rows:
        write_image(str(base / "images" / p), value=i)
    return str(tmp_path)


def test_cub_splits_by_class(cub_root):
    assert CUB(cub_root, split="train").labels == [1, 50]
    test = CUB(cub_root, split="test")
    assert test.labels == [150] and test.paths[0].endswith("150.C/c.jpg")
    assert len(CUB(cub_root)) == 3


def test_items_are_pil_images_with_transforms(cub_root):
    ds = CUB(cub_root, split="train", transform=lambda im: im.size, target_transform=lambda y: y * 10)
    assert ds[1] == ((4, 3), 500)
    img, label = CUB(cub_root)[0]
    assert img.mode == "RGB" and label == 1


def test_cars196(tmp_path):
    write(tmp_path / "names.csv", "AM General Hummer\nBMW M3/M5\n" + "x\n" * 194)
    write(tmp_path / "anno_train.csv", "a.jpg,1,2,3,4,1\nb.jpg,1,2,3,4,2\n")
    write(tmp_path / "anno_test.csv", "c.jpg,1,2,3,4,99\n")
    ds = Cars196(str(tmp_path), split="train")
    assert ds.labels == [1, 2]
    assert ds.paths[1].endswith(os.path.join("car_data", "car_data", "train", "BMW M3-M5", "b.jpg"))
    assert Cars196(str(tmp_path), split="test").labels == [99]


def test_stanford_online_products(tmp_path):
    base = tmp_path / "Stanford_Online_Products"
    write(base / "Ebay_train.txt", "image_id class_id super_class_id path\n1 7 1 bike/x.JPG\n")
    write(base / "Ebay_test.txt", "image_id class_id super_class_id path\n2 9 2 sofa/y.JPG\n")
    ds = StanfordOnlineProducts(str(tmp_path))
    assert ds.labels == [7, 9] and ds.paths[1].endswith("sofa/y.JPG")
    assert StanfordOnlineProducts(str(tmp_path), split="test").labels == [9]


def test_inaturalist(tmp_path):
    train = {"images": [{"file_name": "t/a.jpg", "id": 1}],
             "annotations": [{"image_id": 1, "category_id": 5}]}
    val = {"images": [{"file_name": "t/b.jpg", "id": 2}],
           "annotations": [{"image_id": 2, "category_id": 6}]}
    write(tmp_path / "train2018.json", json.dumps(train))
    write(tmp_path / "val2018.json", json.dumps(val))
    write(tmp_path / "Inat_dataset_splits" / "Inaturalist_train_set1.txt", "t/b.jpg\n")
    write(tmp_path / "Inat_dataset_splits" / "Inaturalist_test_set1.txt", "t/a.jpg\n")
    ds = INaturalist2018(str(tmp_path))
    assert ds.labels == [6, 5] and ds.paths[0] == os.path.join(str(tmp_path), "t/b.jpg")


def test_missing_root_without_download_names_the_layout(tmp_path):
    missing = tmp_path / "nothing_here"
    with pytest.raises(ValueError, match="download=True") as err:
        CUB(str(missing))
    assert "images.txt" in str(err.value)
    assert not missing.exists()


def test_missing_file_inside_root_names_it(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    with pytest.raises(FileNotFoundError, match="images.txt"):
        CUB(str(tmp_path))


def test_unknown_split(cub_root):
    with pytest.raises(ValueError, match="supported splits"):
        CUB(cub_root, split="val")


def test_user_subclass_may_download(tmp_path):
    class Tiny(BaseDataset):
        def generate_split(self):
            with open(os.path.join(self.root, "labels.txt")) as f:
                self.labels = [int(x) for x in f.read().split()]
            self.paths = [""] * len(self.labels)

        def download_and_remove(self):
            write(os.path.join(self.root, "labels.txt"), "3 4")

    root = tmp_path / "new"
    assert Tiny(str(root), download=True).labels == [3, 4]
    with pytest.raises(ValueError, match="does not exist"):
        Tiny(str(tmp_path / "absent"))


def test_digits_held_out_classes():
    train, test = Digits("train"), Digits("test")
    assert set(train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(test.labels.tolist()) == {5, 6, 7, 8, 9}
    assert len(train) + len(test) == len(Digits("train+test")) == 1797
    x, y = train[0]
    assert x.shape == (64,) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert isinstance(y, int)


def test_digits_held_out_samples_is_seeded_and_stratified():
    a = Digits("test", protocol="held_out_samples", seed=1)
    b = Digits("test", protocol="held_out_samples", seed=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.data, b.data)
    assert set(a.labels.tolist()) == set(range(10))
    assert len(a) == pytest.approx(0.3 * 1797, abs=2)


def test_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        Digits("validation")
    with pytest.raises(ValueError, match="protocol"):
        Digits("train", protocol="random")


def test_image_folder(tmp_path):
    write_image(str(tmp_path / "dog" / "1.png"), 10)
    write_image(str(tmp_path / "cat" / "a.JPG"), 20)
    write_image(str(tmp_path / "cat" / "b.png"), 30)
    write(tmp_path / "cat" / "notes.txt", "not an image")
    ds = ImageFolderDataset(str(tmp_path), transform=lambda im: im.getpixel((0, 0))[0])
    assert ds.classes == ["cat", "dog"] and ds.labels == [0, 0, 1]
    assert ds[2] == (10, 1)
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(str(tmp_path), extensions=(".xyz",))
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolderDataset(str(tmp_path / "missing"))


def test_csv_dataset(tmp_path):
    write_image(str(tmp_path / "img" / "x.png"), 40)
    write(tmp_path / "list.csv", "path,label\nimg/x.png,3\n")
    ds = CSVDataset(str(tmp_path / "list.csv"))
    img, label = ds[0]
    assert label == 3 and img.mode == "RGB" and img.getpixel((0, 0))[0] == 40
    write(tmp_path / "bad.csv", "img/x.png,three\n")
    with pytest.raises(ValueError, match=r"bad.csv:1 label must be an integer, got 'three'"):
        CSVDataset(str(tmp_path / "bad.csv"))
    write(tmp_path / "wide.csv", "a,1,2\n")
    with pytest.raises(ValueError, match="2 columns"):
        CSVDataset(str(tmp_path / "wide.csv"))
    with pytest.raises(FileNotFoundError):
        CSVDataset(str(tmp_path / "absent.csv"))


def test_csv_dataset_multi_label_rows_become_multi_hot(tmp_path):
    for name, value in (("a", 10), ("b", 20), ("c", 30)):
        write_image(str(tmp_path / f"{name}.png"), value)
    write(tmp_path / "list.csv", "path,label\na.png,3|1\nb.png, 0 \nc.png,1|1|4\n")
    ds = CSVDataset(str(tmp_path / "list.csv"), label_separator="|")
    assert ds.multi_label and ds.num_classes == 5
    assert ds.label_sets == [(1, 3), (0,), (1, 4)]
    assert ds.labels.tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 1]]
    assert ds.labels.dtype == torch.int64
    img, label = ds[2]
    assert img.getpixel((0, 0))[0] == 30 and label.tolist() == [0, 1, 0, 0, 1]
    wide = CSVDataset(str(tmp_path / "list.csv"), label_separator="|", num_classes=7)
    assert wide.labels.shape == (3, 7) and wide.labels[:, :5].tolist() == ds.labels.tolist()
    write(tmp_path / "semicolon.csv", "a.png,3;1\nb.png,2\n")
    semi = CSVDataset(str(tmp_path / "semicolon.csv"), label_separator=";")
    assert semi.labels.tolist() == [[0, 1, 0, 1], [0, 0, 1, 0]]


def test_csv_dataset_single_label_default_is_unchanged(tmp_path):
    write(tmp_path / "list.csv", "a.png,2\nb.png,0\n")
    ds = CSVDataset(str(tmp_path / "list.csv"))
    assert ds.labels == [2, 0] and not ds.multi_label and ds.label_sets is None
    write(tmp_path / "multi.csv", "a.png,2|1\n")
    with pytest.raises(ValueError, match=r"multi.csv:1 label must be an integer, got '2\|1'"):
        CSVDataset(str(tmp_path / "multi.csv"))


@pytest.mark.parametrize(
    "cell, message",
    [
        ("3|", r"labels must be integers separated by '\|', got '3\|'"),
        ("", r"labels must be integers separated by '\|', got ''"),
        ("2|x", r"label must be an integer, got 'x'"),
        ("-1|2", r"labels must be non-negative, got '-1\|2'"),
    ],
)
def test_csv_dataset_bad_multi_label_cells_are_rejected(tmp_path, cell, message):
    write(tmp_path / "list.csv", f"a.png,{cell}\n")
    with pytest.raises(ValueError, match=r"list.csv:1 " + message):
        CSVDataset(str(tmp_path / "list.csv"), label_separator="|")


def test_csv_dataset_bad_multi_label_arguments_are_rejected(tmp_path):
    write(tmp_path / "list.csv", "a.png,1|5\n")
    path = str(tmp_path / "list.csv")
    with pytest.raises(ValueError, match="has label 5, not below num_classes=3"):
        CSVDataset(path, label_separator="|", num_classes=3)
    with pytest.raises(ValueError, match="num_classes is only for multi-label data"):
        CSVDataset(path, num_classes=6)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        CSVDataset(path, label_separator="|", num_classes=0)
    with pytest.raises(ValueError, match="label_separator must be a non-empty string or None, got ''"):
        CSVDataset(path, label_separator="")
