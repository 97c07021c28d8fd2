"""The documentation holds together: every relative link in README.md and docs/*.md reaches an
existing file (and, with a ``#fragment``, a heading of that page), no page cites a specification
section, an issue number or a branch, and the worked example of docs/design.md runs."""

import pathlib
import re
import unicodedata

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
# What a reader of the docs does not have: the project's specification, its issue tracker, its
# branches. The same pattern as the check run over docs, README.md and src.
CITATION = re.compile(r"spec part|spec §|§[0-9]|\bissue [0-9]+|\(branch |this branch", re.I)


def prose(text):
    """The text without fenced code blocks and inline code (links are not read from code)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor of a heading: lower case, inline markup and punctuation dropped, spaces
    turned into hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a markdown page, with GitHub's -1, -2 ... for repeated headings."""
    seen = {}
    out = set()
    for _, title in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def relative_links(path):
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        yield target


def test_the_slug_rule_on_known_headings():
    assert slug("The default recipe: Glyphs") == "the-default-recipe-glyphs"
    assert slug("ContrastiveLoss(pos_margin=0, neg_margin=1)") == "contrastivelosspos_margin0-neg_margin1"
    assert slug("Distances, reducers, regularizers") == "distances-reducers-regularizers"
    assert slug("`deepmetric train [config] --output OUTPUT`") == "deepmetric-train-config---output-output"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in relative_links(page):
        file_part, _, fragment = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert broken == [], f"{page.name}: " + "; ".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) `[code](not-a-link.md)`\n")
    targets = list(relative_links(page))
    assert targets == ["#title", "missing.md"]
    assert "title" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_a_specification_issue_or_branch(page):
    text = page.read_text(encoding="utf-8")
    hits = [line for line in text.splitlines() if CITATION.search(line)]
    assert hits == []


def test_no_docstring_or_comment_of_the_library_cites_them_either():
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if CITATION.search(line)
    ]
    assert hits == []


def test_the_citation_check_catches_each_form():
    for line in ("see spec part 2", "spec §3", "(§7 item 15)", "fixed in issue 12",
                 "(branch rank-b)", "not in this branch's code"):
        assert CITATION.search(line), line
    assert not CITATION.search("the reference's behaviour")


def test_no_docs_page_is_an_orphan():
    """Every page under docs/ is linked from README.md or from another page."""
    linked = set()
    for page in PAGES:
        for target in relative_links(page):
            file_part = target.partition("#")[0]
            if file_part:
                dest = (page.parent / file_part).resolve()
                if dest != page.resolve():
                    linked.add(dest)
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == []


def python_blocks(page):
    return re.findall(r"^```python\n(.*?)^```", (REPO / page).read_text(encoding="utf-8"), re.S | re.M)


def test_the_worked_example_of_the_design_page_runs_and_both_routes_agree():
    blocks = python_blocks("docs/design.md")
    namespace = {}
    exec(compile(blocks[0], "docs/design.md", "exec"), namespace)  # the loss class
    from deepmetric import reducers
    from deepmetric.utils import loss_and_miner_utils as lmu

    torch.manual_seed(0)
    emb = torch.randn(24, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (24,))
    for reducer in (None, reducers.MeanReducer(), reducers.AvgNonZeroReducer(),
                    reducers.ThresholdReducer(low=0.1, high=2.0), reducers.SumReducer()):
        kwargs = {} if reducer is None else {"reducer": reducer}
        loss = namespace["SquaredContrastiveLoss"](**kwargs)
        check = {"loss": loss, "emb": emb, "labels": labels, "lmu": lmu, "torch": torch}
        exec(compile(blocks[1], "docs/design.md", "exec"), check)  # dense vs listed
        # and the formula itself: mean of positive distances + mean of squared negative hinges
        if reducer is None or type(reducer) is reducers.MeanReducer:  # (SumReducer subclasses it)
            a1, p, a2, n = lmu.get_all_pairs_indices(labels)
            d = torch.cdist(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(emb))
            expected = d[a1, p].mean() + torch.relu(1.0 - d[a2, n]).pow(2).mean()
            torch.testing.assert_close(check["dense"], expected)
            grad_dense, = torch.autograd.grad(check["dense"], emb)
            grad_listed, = torch.autograd.grad(check["listed"], emb)
            torch.testing.assert_close(grad_dense, grad_listed)
