"""Every number the prose quotes is one the reader sees printed (``tests/prose_numbers.py``
holds the rules): in each chapter, among the checked outputs of the section that quotes it
(or of a section it links to), and in the FAQ, among those of the sections each answer links
to. The notebook tests fail when a re-run
prints anything else, so together they fail when a re-run changes a number the prose quotes.

The checker is itself checked: on the rules of what counts as a quoted number, and on wrong
numbers planted in a copy of chapter 7 and of the FAQ, and in a synthetic notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import prose_numbers
import pytest
from prose_numbers import CONSTANTS, check_faq, check_notebook, quoted_numbers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FAQ = ROOT / "book" / "faq.md"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_number_a_chapter_quotes_is_printed_in_it(notebook):
    missing = check_notebook(notebook)
    assert not missing, "numbers quoted but not printed:\n" + "\n".join(map(str, missing))


def test_every_number_the_faq_quotes_is_printed_by_the_chapter_it_links_to():
    missing = check_faq(FAQ, ROOT / "notebooks")
    assert not missing, "numbers quoted but not printed:\n" + "\n".join(map(str, missing))


def test_every_faq_section_with_numbers_links_to_a_chapter():
    for chapter, text in prose_numbers.faq_sections(FAQ.read_text()):
        if quoted_numbers(text):
            assert chapter is not None, text.splitlines()[0]
            assert (ROOT / "notebooks" / f"{chapter}.ipynb").exists(), chapter


def test_the_constants_are_few_each_has_a_reason_and_is_quoted_where_listed():
    assert len(CONSTANTS) <= 6
    for (page, number), reason in CONSTANTS.items():
        assert len(reason) > 20, (page, number)
        path = FAQ if page == "faq" else ROOT / "notebooks" / f"{page}.ipynb"
        if page == "faq":
            text = path.read_text()
        else:
            notebook = nbformat.read(path, as_version=4)
            text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
        assert number in [q.text for q in quoted_numbers(text)], f"{number} is not quoted on {page}"


@pytest.mark.parametrize(
    ("markdown", "quoted"),
    [
        ("the loss ends between 0.18 and 0.27", ["0.18", "0.27"]),
        ("1.99x slower, 2.0 times the time", ["1.99x", "2.0 times"]),
        ("about 12% of sigma, 3 times as noisy", ["12%", "3 times"]),
        ("a median of 3e-06, below 1e-7", ["3e-06", "1e-7"]),
        ("from $0.0008$ to $0.0069$", ["0.0008", "0.0069"]),
        ("a mean of -0.41 and float32-level noise", ["0.41"]),
        # not quoted: integers, code, roles, targets, display math, links, versions in code
        ("chapter 7, 5 seeds, batches of 32, in 2015", []),
        ("`torch.randn(8, 3, 0.5)` and ```python\nx = 0.25\n```", []),
        ("{ref}`ch7-sweep` and {cite}`ioffe2015batch`", []),
        ("$$y = 0.5\\,x$$", []),
        ("[the docs](https://example.org/v1.2/page)", []),
    ],
)
def test_what_counts_as_a_quoted_number(markdown, quoted):
    assert [q.text for q in quoted_numbers(markdown)] == quoted


def notebook_with(markdown, output, *, timing=False, code="print(value)"):
    cell = nbformat.v4.new_code_cell(code)
    if timing:
        cell.metadata["tags"] = ["nbval-ignore-output"]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    return nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell(markdown)])


def write(tmp_path, notebook, name="99_synthetic.ipynb"):
    path = tmp_path / name
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize(
    ("output", "markdown", "found"),
    [
        ("test accuracy 0.97\n", "reaches 0.97", True),
        ("test accuracy 0.9712\n", "reaches 0.97", True),  # rounded as the prose rounds it
        ("test accuracy 0.9712\n", "reaches 0.98", False),
        ("test accuracy 0.97\n", "reaches 0.973", False),  # more digits than were printed
        ("ratio 0.12\n", "an error of 12%", True),
        ("ours/native 1.99 [1.96]\n", "1.99x slower", True),
        ("median 3e-06\n", "a median of 3e-06", True),
        ("median 3e-06\n", "a median of 4e-06", False),
    ],
)
def test_a_quoted_number_matches_a_printed_one_only_as_rounded(tmp_path, output, markdown, found):
    missing = check_notebook(write(tmp_path, notebook_with(markdown, output)))
    assert (not missing) is found


def test_a_timing_cell_does_not_count_as_printed(tmp_path):
    timed = notebook_with(
        "the compiled module takes 0.77 of the time", "compiled/native 0.77\n", timing=True
    )
    assert [m.quote.text for m in check_notebook(write(tmp_path, timed))] == ["0.77"]
    checked = notebook_with("the compiled module takes 0.77 of the time", "compiled/native 0.77\n")
    assert not check_notebook(write(tmp_path, checked))


def test_a_number_set_in_the_code_counts_as_shown(tmp_path):
    notebook = notebook_with("at learning rate 0.3", "done\n", code="lr = 0.3\nprint('done')")
    assert not check_notebook(write(tmp_path, notebook))


def test_a_wrong_number_planted_in_chapter_7_fails(tmp_path):
    path = ROOT / "notebooks" / "07_bn_in_training.ipynb"
    notebook = nbformat.read(path, as_version=4)
    right = "0.34 to 0.54"
    index = next(
        i for i, c in enumerate(notebook.cells) if c.cell_type == "markdown" and right in c.source
    )
    notebook.cells[index].source = notebook.cells[index].source.replace(right, "0.36 to 0.54")
    missing = check_notebook(write(tmp_path, notebook, path.name))
    assert [(m.where, m.quote.text) for m in missing] == [(f"cell {index}", "0.36")]


def test_a_wrong_number_planted_in_the_faq_fails(tmp_path):
    text = FAQ.read_text()
    right = "from 0.0008 to 0.0069"
    assert right in text
    planted = tmp_path / "faq.md"
    planted.write_text(text.replace(right, "from 0.0008 to 0.0096"))
    missing = check_faq(planted, ROOT / "notebooks")
    assert [m.quote.text for m in missing] == ["0.0096"]
    assert "What BatchNorm buys you" in missing[0].where


def test_a_faq_number_must_be_printed_in_the_section_it_links_to(tmp_path):
    # chapter 7 prints 0.88 elsewhere, but not in the section this answer links to
    text = FAQ.read_text()
    right = "from 0.65 to 0.83"
    assert right in text
    chapter = nbformat.read(ROOT / "notebooks" / "07_bn_in_training.ipynb", as_version=4)
    assert any(value == 0.88 for _, value in prose_numbers.printed_values(chapter))
    planted = tmp_path / "faq.md"
    planted.write_text(text.replace(right, "from 0.65 to 0.88"))
    missing = check_faq(planted, ROOT / "notebooks")
    assert [m.quote.text for m in missing] == ["0.88"]
    assert "BatchNorm in training" in missing[0].where


def test_sections_run_to_the_next_label_of_the_same_level():
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("(a)=\n## A"),
            nbformat.v4.new_code_cell("1"),
            nbformat.v4.new_markdown_cell("(a-sub)=\n### A, in detail"),
            nbformat.v4.new_code_cell("2"),
            nbformat.v4.new_markdown_cell("(b)=\n## B"),
            nbformat.v4.new_code_cell("3"),
        ]
    )
    sections = prose_numbers.labelled_sections(notebook)
    assert [c.source for c in sections["a"] if c.cell_type == "code"] == ["1", "2"]
    assert [c.source for c in sections["a-sub"] if c.cell_type == "code"] == ["2"]
    assert [c.source for c in sections["b"] if c.cell_type == "code"] == ["3"]


def test_a_chapter_number_must_be_printed_in_its_own_section(tmp_path):
    # 0.13 is printed in chapter 7's regularizer section; quoted in its placement section,
    # which prints no 0.13, it is not found
    path = ROOT / "notebooks" / "07_bn_in_training.ipynb"
    notebook = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if c.source.startswith("(ch7-placement)="))
    notebook.cells[index].source += " The test loss was 0.13."
    missing = check_notebook(write(tmp_path, notebook, path.name))
    assert [(m.where, m.quote.text) for m in missing] == [(f"cell {index}", "0.13")]


def test_a_faq_number_must_come_from_the_linked_chapter_not_another(tmp_path):
    # 0.0069 is printed by chapter 6; moved into the chapter 7 section it is not found there
    text = FAQ.read_text()
    planted = tmp_path / "faq.md"
    marker = "**Which batch size is too small?**\n"
    assert marker in text
    planted.write_text(text.replace(marker, marker + "The effective rate reaches 0.0069. "))
    assert [m.quote.text for m in check_faq(planted, ROOT / "notebooks")] == ["0.0069"]
