"""Which questions can work as search queries (core.question_filter)."""

import pytest

from core.datasets import QADataset
from core.question_filter import filter_dataset, why_not_searchable

CHUNK = (
    "Revenue was $3.2 billion in 2021, an increase of 36% compared to the prior year, driven by the "
    "recovery of rideshare demand as vaccination rates rose across the United States."
)


@pytest.mark.parametrize(
    "q, reason",
    [
        ("What is the total revenue from the passage?", "the passage"),
        ("According to the context information, how did revenue change?", "the context information"),
        ("Which section of the document covers market risk?", "the document"),
        ("Based on the given text, what drove growth?", "the given text"),
        ("Here are two questions:", "no question mark"),
        ("Discuss the revenue growth drivers", "no question mark"),
        (
            "Why did revenue was $3.2 billion in 2021, an increase of 36% compared to the prior year, driven by the recovery?",
            "copies",
        ),
    ],
)
def test_unsearchable_questions_are_named_with_a_reason(q, reason):
    why = why_not_searchable(q, CHUNK)
    assert why is not None and reason in why


@pytest.mark.parametrize(
    "q",
    [
        "How much did Lyft's revenue grow in 2021?",
        "What drove the recovery of rideshare demand?",
        "Which documents does the SEC require from registrants?",  # "documents" as a subject, not "the document"
    ],
)
def test_real_queries_pass(q):
    assert why_not_searchable(q, CHUNK) is None


def test_filter_dataset_drops_and_reports():
    ds = QADataset(
        {
            "a": "How much did revenue grow in 2021?",
            "b": "What does the passage say about revenue?",
            "c": "Summarise it",
        },
        {"n": CHUNK},
        {"a": ["n"], "b": ["n"], "c": ["n"]},
    )
    kept, dropped = filter_dataset(ds)
    assert list(kept.queries) == ["a"] and set(dropped) == {"b", "c"}
    assert kept.corpus == ds.corpus
