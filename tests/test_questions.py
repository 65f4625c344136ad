"""The page "Questions people ask" (book/questions.md) is generated from its data
(book/questions.yml) by book/make_questions.py: the committed page is what the script writes,
every question says where it was asked, and each either points to a section of the book
that exists and to the FAQ entry that answers it (an entry that links to a chapter's
section), or, outside the book's scope, to a source of its own."""

from __future__ import annotations

import importlib.util
import re
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
        fields = {"q", "source", "answer", "faq", "out_of_scope", "note", "title"}
        assert set(item) <= fields, item


def test_every_question_is_answered_in_the_book_or_points_outside_it():
    labels = make_questions.sections()
    for item in QUESTIONS:
        assert ("answer" in item) != ("out_of_scope" in item), item
        if "answer" in item:
            assert item["answer"] in labels, f"no section labelled {item['answer']}"
            heading = labels[item["answer"]][1]
            assert "$" not in heading or item.get("title"), f"{item['answer']}: give a title"
        else:
            assert "faq" not in item, item
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


FAQ_ENTRIES = make_questions.faq_entries()
CHAPTER_LABELS = make_questions.chapter_labels()


def test_every_faq_entry_has_its_own_anchor():
    text = make_questions.FAQ.read_text()
    questions = re.findall(r"^\*\*.*\*\*$", text, re.M)
    anchored = re.findall(r"^\(faq-[\w-]+\)=\n\*\*.*\*\*$", text, re.M)
    assert len(FAQ_ENTRIES) == len(questions) == len(anchored) > 60
    assert len(re.findall(r"^\(faq-", text, re.M)) == len(FAQ_ENTRIES)  # no anchor twice


def test_every_question_answered_in_the_book_has_a_faq_entry_that_links_to_a_chapter():
    assert make_questions.faq_problems(QUESTIONS, FAQ_ENTRIES, CHAPTER_LABELS) == []
    assert {"ch4-eval", "ch9-fold"} <= CHAPTER_LABELS  # the chapters' labels are found
    assert not CHAPTER_LABELS & set(FAQ_ENTRIES)  # and the FAQ's are not among them


def test_the_faq_check_fails_on_a_planted_mistake():
    answered = next(item for item in QUESTIONS if "answer" in item)
    no_faq = {key: value for key, value in answered.items() if key != "faq"}
    missing_anchor = {**answered, "faq": "faq-no-such-entry"}
    entries = dict(FAQ_ENTRIES)
    # an entry whose only link goes to the FAQ or a prose page, no chapter section
    entries[answered["faq"]] = "**Q?**\nSee {ref}`the glossary <faq-eval>` and {doc}`glossary`."
    check = make_questions.faq_problems
    assert check([no_faq], FAQ_ENTRIES, CHAPTER_LABELS) != []
    assert check([missing_anchor], FAQ_ENTRIES, CHAPTER_LABELS) != []
    assert check([answered], entries, CHAPTER_LABELS) != []
    assert check([answered], FAQ_ENTRIES, CHAPTER_LABELS) == []


def test_the_page_links_each_question_to_its_faq_entry():
    page = make_questions.PAGE.read_text()
    for item in QUESTIONS:
        if "faq" in item:
            assert f"<{item['faq']}>`" in page, item["q"]
