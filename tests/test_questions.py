"""The page "Questions people ask" (book/questions.md) is generated from its data
(book/questions.yml) by book/make_questions.py: the committed page is what the script writes,
every question says where it was asked, and each either points to a section of the book
that exists or, outside the book's scope, to a source of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_questions", ROOT / "book" / "make_questions.py")
make_questions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_questions)

GROUPS = make_questions.load()
QUESTIONS = [item for group in GROUPS for item in group["questions"]]


def is_url(text: str) -> bool:
    parts = urlparse(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def test_the_committed_page_is_what_the_generator_writes():
    assert make_questions.PAGE.read_text() == make_questions.render(GROUPS), (
        "book/questions.md is out of date: run .venv/bin/python book/make_questions.py"
    )


def test_the_page_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/questions" in files


def test_at_least_sixty_distinct_questions_each_with_where_it_was_asked():
    assert len(QUESTIONS) >= 60
    assert len({item["q"].lower() for item in QUESTIONS}) == len(QUESTIONS)
    for item in QUESTIONS:
        assert is_url(item["source"]), item
        assert set(item) <= {"q", "source", "answer", "out_of_scope", "note", "title"}, item


def test_every_question_is_answered_in_the_book_or_points_outside_it():
    labels = make_questions.sections()
    for item in QUESTIONS:
        assert ("answer" in item) != ("out_of_scope" in item), item
        if "answer" in item:
            assert item["answer"] in labels, f"no section labelled {item['answer']}"
            heading = labels[item["answer"]][1]
            assert "$" not in heading or item.get("title"), f"{item['answer']}: give a title"
        else:
            pointer = item["out_of_scope"]
            assert is_url(pointer["url"]) and len(pointer["title"]) > 10, item


def test_most_questions_are_answered_in_the_book():
    answered = sum("answer" in item for item in QUESTIONS)
    assert answered >= 0.8 * len(QUESTIONS)


def test_the_page_links_each_answer_by_its_label():
    page = make_questions.PAGE.read_text()
    for item in QUESTIONS:
        if "answer" in item:
            assert f"<{item['answer']}>`" in page or f"{{ref}}`{item['answer']}`" in page
        assert item["source"] in page
