"""``deepmetric search``: item numbers and query files (.npy, .csv, images) read with the
dataset's own preprocessing, sections, and one-line errors for bad queries."""

import numpy as np
import pytest
from _cli_helpers import digits_config, glyphs_config

from deepmetric.cli.main import main

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def cheap_projection(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    out = folder / "run"
    assert main(["train", digits_config(folder, 1), "--output", str(out), "--quiet"]) == 0
    return out


def neighbours(printed):
    """``{query name: [item, ...]}`` from search's output."""
    found, current = {}, None
    for line in printed.splitlines():
        if line.startswith("query "):
            current = line[len("query "):].rstrip(":")
            found[current] = []
        elif line.strip()[:1].isdigit():
            found[current].append(int(line.split("item ")[1].split()[0]))
    return found


def held_out_item(run, index):
    import torch

    from deepmetric.cli.config import load_config
    from deepmetric.cli.data import build_data

    data = build_data(load_config(str(run / "config.yaml")))
    x = data.sections["held_out"][index][0]
    assert torch.is_tensor(x)
    return x.numpy().reshape(-1)


def test_item_numbers_list_k_neighbours_without_the_item_itself(digits_run, capsys):
    assert main(["search", "--output", str(digits_run), "--k", "3", "0", "5"]) == 0
    found = neighbours(capsys.readouterr().out)
    assert [len(v) for v in found.values()] == [3, 3]
    assert 0 not in found[next(k for k in found if k.startswith("item 0 "))]


def test_query_files_are_read_like_the_dataset_items(digits_run, tmp_path, capsys):
    x = held_out_item(digits_run, 7)  # scaled to [0, 1], as Digits stores it
    np.save(tmp_path / "q.npy", x)
    np.savetxt(tmp_path / "q.csv", x[None], delimiter=",")
    np.savetxt(tmp_path / "raw.txt", (x * 16)[None])  # sklearn's raw 0-16 values
    assert main(["search", "--output", str(digits_run), "--k", "4", "7",
                 str(tmp_path / "q.npy"), str(tmp_path / "q.csv"), str(tmp_path / "raw.txt")]) == 0
    printed = capsys.readouterr().out
    assert "values above 1 read as 0-16 pixel levels and divided by 16" in printed
    found = neighbours(printed)
    by_item = next(v for k, v in found.items() if k.startswith("item 7 "))
    for name in ("q.npy", "q.csv", "raw.txt"):
        from_file = found[str(tmp_path / name)]
        assert from_file[0] == 7  # the item itself is the nearest
        assert from_file[1:] == by_item[:3]


def test_several_rows_are_several_queries(digits_run, tmp_path, capsys):
    rows = np.stack([held_out_item(digits_run, 1), held_out_item(digits_run, 2)])
    np.savetxt(tmp_path / "two.csv", rows, delimiter=",")
    assert main(["search", "--output", str(digits_run), "--k", "1", str(tmp_path / "two.csv")]) == 0
    found = neighbours(capsys.readouterr().out)
    assert found == {f"{tmp_path / 'two.csv'}[0]": [1], f"{tmp_path / 'two.csv'}[1]": [2]}


def test_an_image_file_is_a_query(digits_run, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    x = held_out_item(digits_run, 3).reshape(8, 8)
    # dark ink on white paper, four times the size: read back as the item
    big = np.kron(1.0 - x, np.ones((4, 4)))
    image.fromarray((big * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    assert main(["search", "--output", str(digits_run), "--k", "1", str(tmp_path / "digit.png")]) == 0
    assert neighbours(capsys.readouterr().out)[str(tmp_path / "digit.png")] == [3]


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("1,2,3\n", "must hold 64 values per item (8x8 pixels), got 3 values"),
        ("a,b\n", "cannot be read as numbers"),
        (",".join(["20"] * 64) + "\n", "pixel values must lie in [0, 1] or [0, 16]"),
        (",".join(["nan"] * 64) + "\n", "NaN or infinite"),
    ],
)
def test_bad_query_files_are_one_line_errors(digits_run, tmp_path, capsys, content, fragment):
    (tmp_path / "bad.csv").write_text(content)
    assert main(["search", "--output", str(digits_run), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_files_that_are_not_what_they_claim_are_one_line_errors(digits_run, tmp_path, capsys):
    (tmp_path / "fake.npy").write_text("not numpy")
    (tmp_path / "fake.png").write_text("not an image")
    for name, fragment in (("fake.npy", "cannot be read as numbers"), ("fake.png", "is not a readable image"),
                           ("absent.png", "neither an item number nor an existing file")):
        assert main(["search", "--output", str(digits_run), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err
    assert main(["search", "--output", str(digits_run), "999999"]) == 2
    assert "out of range (held_out has 540 items)" in capsys.readouterr().err
    assert main(["search", "--output", str(digits_run), "--k", "0", "1"]) == 2


def test_search_takes_a_section(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", glyphs_config(tmp_path, 1), "--output", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "--output", str(out), "--section", "zero_shot", "--k", "2", "639"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("query item 639 (class ")
    assert main(["search", "--output", str(out), "--section", "held_out", "639"]) == 2
    assert "out of range (held_out has 134 items)" in capsys.readouterr().err
    # a glyph drawn as an array of pixels (0-255 levels) is a query as well
    from deepmetric.datasets import Glyphs

    item = Glyphs("test", samples_per_class=10).data[5, 0].numpy()
    np.save(tmp_path / "glyph.npy", item * 255)
    assert main(["search", "--output", str(out), "--section", "zero_shot", "--k", "1",
                 str(tmp_path / "glyph.npy")]) == 0
    assert neighbours(capsys.readouterr().out)[str(tmp_path / "glyph.npy")] == [5]
