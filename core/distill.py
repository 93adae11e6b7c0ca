"""Distil a fully fine-tuned model into a query-only adapter over the base model's vectors.

A full fine-tune (:mod:`core.finetune`) carries its gain to a new company's filing cut into chunks longer
than the base model reads (bench/README, protocol (u)), but using it means re-embedding the corpus and
rebuilding every index. A linear adapter trained on the questions alone does not carry over there. This
trains the adapter on the fine-tune's *rankings* instead: for each query, the teacher's softmax over every chunk the user has
ingested (its own query and chunk vectors) is the target, and the adapter, applied to the base
query vector and scored against the **base** chunk vectors the index already holds, learns to match
it (KL divergence). The queries are the training questions plus offline pseudo-queries made from
every ingested chunk (:mod:`core.pseudo_queries`), so the documents users will search, new ones
included, shape the map; no evaluation question is ever used.

The adapter ships like any other (LlamaIndex folder); only the base embedder runs at query time.
Cost: the fine-tune once, then one teacher embedding of the chunks and queries (cached) and a few
hundred full-batch steps on cached vectors (seconds).

It needs the documents users will search among the chunks it ranks: distilled over the training
filing alone, it lost about 2 points of hit@5 on another (bench/README). And its gains came from chunks
longer than the base model reads, whose later text the teacher reads: on a filing cut into chunks the
base model reads whole it gained nothing (:data:`core.carryover.DISTILLED_SHORT_CHUNKS`). Hence
:func:`choose_recipe` (``train``'s ``auto``: distil only when those documents are known and mostly in
such chunks), and the fingerprints each
distilled adapter keeps of the text it ranked (:func:`save_ranked`, :func:`ranked_coverage`), by
which Compare warns when an evaluation set's documents were not among them.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapters import build_adapter
from .progress import Progress

#: The file, in a distilled adapter's folder, that records which text it learned to rank (sampled word
#: 4-gram fingerprints of every chunk): :func:`ranked_coverage` reads it to tell whether an evaluation
#: set's documents were among them. A distilled adapter is fitted to the documents it ranked; over
#: other ones it can lose (bench/README, "Distilled over the training filing only").
RANKED_FILE = "distilled_over.txt"
_RANKED_HEADER = "# adapterlab text fingerprints v1"  # a record in another scheme reads as no record
# words per fingerprinted n-gram: the same filing read by two PDF readers and chunked apart matches 0.70 at 4
# (0.64 at 5, 0.74 at 3), another company's filing 0.04 (0.03, 0.08): bench/README
_SHINGLE = 4
_KEEP_ONE_IN = 16  # n-grams kept: those starting at a word whose crc32 is 0 modulo this (the same in every text)
_PER_DOCUMENT = 200  # chunks per document that uncovered_documents reads (a seeded sample above that)
#: The share of a text's fingerprints among the training chunks' at which it counts as the questions' own: an
#: ingested document (:func:`uncovered_documents`) or the chunks a named evaluation set asks about
#: (:func:`eval_overlap`). Measured (bench/README, "Which recipe for new questions on the training chunks"): on
#: the training chunks the adapter trained on the questions gained more than fine-tune, then distil, on new
#: text less, and a mixture of the two at this share is about level on hit@5 and favours the adapter on MRR@5.
IN_CORPUS_SHARE = 0.5
#: The share of the searched documents' chunks longer than the base model reads at which ``auto`` distils
#: (:func:`choose_recipe`). Every protocol where the distillation beat the adapter ranked such chunks (the
#: Lyft JSON's median is 484 tokens); on another filing chunked by AdapterLab (every chunk within the 256 the
#: base model reads) it did not (bench/README, "Chunks the base model reads whole").
LONG_CHUNKS_SHARE = 0.5
#: A document (or the text a named evaluation set asks about) of which under this share is among the training
#: set's chunks, asked about or not, is another document altogether, for :func:`resolve_teacher_blend`: another
#: company's filing (SmolLM2's Uber questions against the Lyft JSON's chunks read 0.05, boilerplate), not held-out
#: chunks of the training filing ((c) 0.19, (e) 0.15, (f) 0.13; bench/README).
OTHER_DOCUMENT_SHARE = 0.1
#: The share of offline pseudo-queries among the training questions (by the workspace's record of what it
#: generated) at which ``auto``'s adapter reason quotes what offline questions carried over to real ones on the
#: chunks they were made from (:data:`core.carryover.OWN_CHUNKS_CARRYOVER`), instead of the blind-distillation
#: loss: those chunks are the ones such questions say users will search.
OFFLINE_SHARE = 0.5
#: the words that mark ``auto``'s reason for such a training set (the CLI's ``--recipe distil`` reads them)
OFFLINE_REASON = "of the training questions are offline pseudo-queries"
_LONG_SAMPLE = 400  # chunks whose tokens long_chunk_share counts (a seeded sample above that)
# a distillation's time over the fine-tune's re-embedding estimate for as many chunks: it also embeds the
# questions and 2 pseudo-queries per chunk with both models, then steps (the Lyft JSON's 334 chunks, two
# cores: 46 s, base vectors not yet cached, against an estimate of 14.5-18 s). The blended teacher
# (DistillConfig.teacher_blend) reads every text twice: 64 s against 43 s without it, (a)'s 200 chunks. Since
# its long read takes the vectors of texts the short read saw whole (_read_or_reuse), a distillation over the
# Lyft JSON, base chunk vectors cached, a fresh teacher, takes 87 s where it took 114 s: the factor scaled so
_DISTIL_PER_REEMBED = 2.85


@dataclass
class DistillConfig:
    """Settings of :func:`distill_adapter` (the defaults are the measured ones: bench/README)."""

    steps: int = 200
    lr: float = 1e-3
    temperature: float = 0.05
    pseudo_queries: int = 2  # offline pseudo-queries per chunk (0: the training questions only)
    max_pseudo_chunks: int = 5000  # on a larger corpus, pseudo-queries from a seeded sample of this many chunks
    # on a larger corpus, the softmax ranks a seeded sample of this many chunks (the fine-tuned model embeds
    # only those: on a CPU that embedding is most of the cost); every document stays represented
    max_ranked_chunks: int = 20000
    batch_size: int = 2048  # queries per step; at or above their number every step is full-batch
    seed: int = 0
    # tokens of each chunk and query the fine-tuned teacher reads, up to its model's position limit (0: the
    # model's own input length, 256 for all-MiniLM-L6-v2). More of a long chunk makes better targets: with
    # the 334 Lyft chunks (median 484 tokens) the distilled adapter gained more at 512 (bench/README)
    teacher_max_tokens: int = 512
    # the teacher's score for a query and a chunk: the mean of its cosines at its own input length and at
    # teacher_max_tokens (when they differ), instead of the long read alone. The long read helps questions about
    # a chunk's later text and costs questions about its start; the blend keeps most of both (bench/README,
    # "Both lengths"). The teacher embeds every chunk and query twice: its cost grows by about half. ``auto``
    # (:func:`resolve_teacher_blend`): the long read alone when the distillation ranks another document
    # altogether (another company's filing, where it gained twice the blend's hit@5), else the blend
    teacher_blend: bool | str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """From a saved request (unknown keys ignored, so an older or newer record still loads)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def validate(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.temperature <= 0 or self.batch_size < 1:
            raise ValueError("steps, lr, temperature and batch_size must be positive")
        if self.pseudo_queries < 0:
            raise ValueError(f"pseudo_queries must be 0 or more, got {self.pseudo_queries}")
        if self.teacher_max_tokens < 0:
            raise ValueError(
                f"teacher_max_tokens must be 0 (the model's own length) or more, got {self.teacher_max_tokens}"
            )
        if self.max_ranked_chunks < 2 or self.max_pseudo_chunks < 1:
            raise ValueError("max_ranked_chunks must be at least 2 and max_pseudo_chunks at least 1")
        if self.teacher_blend not in (True, False, "auto"):
            raise ValueError(f"teacher_blend must be true, false or 'auto', got {self.teacher_blend!r}")


@dataclass
class DistillResult:
    """What a ``distill`` run (:func:`core.runs.execute_run`) returns: the adapter and its summary."""

    adapter: nn.Module
    details: dict[str, Any]

    @property
    def cancelled(self) -> bool:
        return bool(self.details.get("cancelled"))

    def summary(self) -> dict[str, Any]:
        return dict(self.details)


#: ``train``'s recipes: ``adapter`` trains the adapter on the questions (seconds on cached vectors, any
#: base model); ``distil`` fully fine-tunes a sentence-transformers base on them, then distils it into a
#: linear adapter over the documents you will search (minutes); ``auto`` chooses (:func:`choose_recipe`).
RECIPES = ("auto", "adapter", "distil")


def choose_recipe(
    embedder: str,
    searched: str | None,
    eval_overlap: float | None = None,
    long_share: float | None = None,
    offline_share: float | None = None,
    own_documents: Sequence[str] = (),
) -> tuple[str, str]:
    """(``adapter`` or ``distil``, the reason) for the ``auto`` recipe.

    ``searched`` says which documents users will search beyond those the training questions are about,
    when that is known (an evaluation set named whose questions are about other text, or ingested documents
    the questions do not cover: :func:`uncovered_documents`), else ``None``. ``eval_overlap``: for an
    evaluation set named, the share of the text its questions ask about that is among the training chunks
    (:func:`eval_overlap`); at :data:`IN_CORPUS_SHARE` or more it asks new questions about the training
    chunks, where the adapter trained on the questions gained more than the distilled one
    (:data:`core.carryover.DISTILLED_IN_CORPUS`), in seconds, and the reason says so. ``long_share``: the
    share of the searched documents' chunks longer than the base model reads (:func:`long_chunk_share`);
    under :data:`LONG_CHUNKS_SHARE` the adapter is trained, because the distillation's measured gains came
    from its teacher reading the later text of such chunks (:data:`core.carryover.DISTILLED_SHORT_CHUNKS`).
    ``offline_share``: the share of offline pseudo-queries among the training questions; at
    :data:`OFFLINE_SHARE` or more, with no other documents to search, the adapter is trained and the reason
    quotes both recipes' carry-over to real questions on the chunks such questions come from. ``own_documents``:
    where the documents users will search are other chunks of the training questions' own documents (an
    evaluation set about them, nothing else ingested), the same rule with the measurements of that case (new
    sections of the training filing, :data:`core.carryover.SAME_KIND_CARRYOVER`) as its reason.

    The rule, from the measured protocols (bench/README, "Distilling the fine-tune"): fine-tune, then
    distil, when the base model can be fine-tuned (not an API) and ``searched`` is known. On another company's filing it gained about 3 points of hit@5 where
    the adapter trained on the questions gained about 0. It needs those documents: distilled over the
    training filing only, it lost about 2 points there (:data:`core.carryover.DISTILLED_ELSEWHERE`), a
    loss the question-trained adapter does not have; so when nothing says where users will search, the
    adapter is trained on the questions (never significantly below the base model on any protocol)."""
    from .carryover import (
        DISTILLED_ELSEWHERE,
        DISTILLED_IN_CORPUS,
        DISTILLED_SHORT_CHUNKS,
        OWN_CHUNKS_CARRYOVER,
        SAME_KIND_CARRYOVER,
    )
    from .export import is_api_embedder

    def pt(key: str) -> str:
        return f"{100 * float(DISTILLED_ELSEWHERE[key]):+.1f}".replace("-", "\u2212")

    if is_api_embedder(embedder):
        return (
            "adapter",
            "the base model is an API: its weights cannot be fine-tuned, so the adapter learns from the questions",
        )
    if not searched and offline_share is not None and offline_share >= OFFLINE_SHARE:
        c = OWN_CHUNKS_CARRYOVER
        return "adapter", (
            f"{offline_share:.0%} {OFFLINE_REASON}, made from the chunks you will search. Trained on such questions and searching those chunks, real questions gained "
            f"{_gains(c, 'adapter')} hit@5 / MRR@5 with the adapter, in seconds, and {_gains(c, 'distilled')} with "
            "fine-tune, then distil, in minutes (bench/README, \u201cThe no-key path on AdapterLab's own chunks\u201d): "
            "choose that recipe for the larger gain"
        )
    if not searched and eval_overlap is not None and eval_overlap >= IN_CORPUS_SHARE:
        c = DISTILLED_IN_CORPUS
        return "adapter", (
            f"the evaluation set named asks about the training questions' own chunks ({eval_overlap:.0%} of the "
            "text its questions are about): new questions on the same documents. There the adapter trained on the "
            f"questions gained {_gains(c, 'gpt_adapter')} hit@5 / MRR@5 on GPT's questions, fine-tune, then distil "
            f"{_gains(c, 'gpt_distilled')}; on a small model's, {_gains(c, 'small_llm_adapter')} against "
            f"{_gains(c, 'small_llm_distilled')} (bench/README). The adapter takes seconds, not minutes"
        )
    if not searched:
        return "adapter", (
            "nothing says which documents you will search (no evaluation set named, no ingested document beyond "
            "the ones the questions are about), so the adapter learns from the questions; on another company's "
            f"filing that changed hit@5 / MRR@5 by {pt('adapter_gain_hit@5')} / {pt('adapter_gain_mrr@5')} points "
            "(bench/README). "
            "Name your evaluation set, or ingest the documents you will search: where their chunks are longer than "
            f"the base model reads, fine-tune, then distil over them gained {pt('over_searched_gain_hit@5')} / "
            f"{pt('over_searched_gain_mrr@5')} there (median of 5 seeds). It fits the adapter to the documents it "
            f"ranks: distilled over the training filing only, it changed hit@5 by {pt('over_other_gain_hit@5')} on "
            "the other"
        )
    if own_documents:
        k = SAME_KIND_CARRYOVER
        shown = ", ".join(own_documents[:3]) + (f" and {len(own_documents) - 3} more" if len(own_documents) > 3 else "")
        where = f"the evaluation set named asks about other chunks of the training questions' own documents ({shown})"
        distilled = (
            f"fine-tune, then distil gained {_pct(k, 'distilled_min')} to {_pct(k, 'distilled_max')} hit@5 on new "
            f"sections of a training filing cut into chunks longer than the base model reads, where the adapter "
            f"gained {_pct(k, 'adapter_distilled_protocols_min')} to {_pct(k, 'adapter_distilled_protocols_max')}"
        )
        if long_share is not None and long_share < LONG_CHUNKS_SHARE:
            return "adapter", (
                f"{where}, cut into chunks the base model reads whole ({long_share:.0%} are longer than it reads). "
                f"On new sections of a training filing the adapter gained {_pct(k, 'adapter_min')} to "
                f"{_pct(k, 'adapter_max')} hit@5 where they hold the same kinds of text (bench/README); {distilled}, "
                "a gain its teacher drew from the later text of long chunks. The adapter takes seconds; fine-tune, "
                "then distil is one choice away"
            )
        longer = (
            f"; {long_share:.0%} of their chunks are longer than the base model reads" if long_share is not None else ""
        )
        return "distil", f"{where}{longer}: {distilled} (bench/README). Minutes on a CPU, not seconds"
    if long_share is not None and long_share < LONG_CHUNKS_SHARE:
        c = DISTILLED_SHORT_CHUNKS
        return "adapter", (
            f"the documents you will search ({searched}) are cut into chunks the base model reads whole "
            f"({long_share:.0%} are longer than it reads). Fine-tune, then distil gained there no more than the "
            f"adapter: on another company's filing chunked by AdapterLab, {_gains(c, 'distilled')} hit@5 / MRR@5 against "
            f"{_gains(c, 'adapter')} (bench/README); its larger gains came from chunks longer than the base model reads, "
            "whose later text its teacher reads. The adapter takes seconds"
        )
    longer = (
        f"; {long_share:.0%} of their chunks are longer than the base model reads" if long_share is not None else ""
    )
    return "distil", (
        f"fine-tune, then distil over the documents you will search ({searched}{longer}): on another company's "
        f"filing, chunked longer than the base model reads, it gained {pt('over_searched_gain_hit@5')} hit@5 / "
        f"{pt('over_searched_gain_mrr@5')} MRR@5 (median of 5 seeds), where an adapter trained on the questions "
        "gained about 0 (bench/README). Minutes on a CPU, not seconds"
    )


def _pct(measured: dict[str, object], key: str) -> str:
    """``"+2.3 pt"``: the hit@5 gain ``{key}_gain_hit@5`` of a measured record (:mod:`core.carryover`) in points."""
    return f"{100 * float(measured[f'{key}_gain_hit@5']):+.1f} pt".replace("-", "\u2212")


def _gains(measured: dict[str, object], key: str) -> str:
    """``"+4.0 / +4.2"``: the hit@5 / MRR@5 gains ``{key}_gain_hit@5`` and ``..._mrr@5`` of a measured record
    (:mod:`core.carryover`) in points."""
    hit, mrr = (100 * float(measured[f"{key}_gain_{m}@5"]) for m in ("hit", "mrr"))
    return f"{hit:+.1f} / {mrr:+.1f}".replace("-", "\u2212")


def auto_choice(
    embedder: str,
    train_ds: Any,
    documents: dict[str, Sequence[str]],
    eval_ds: Any | None = None,
    offline_share: float | None = None,
    own_documents: Sequence[str] = (),
    **embedder_kwargs: Any,
) -> tuple[str, str]:
    """(recipe, why) of ``train``'s ``auto`` for ``train_ds`` with ``documents`` (name -> chunk texts) ingested
    and ``eval_ds`` named (:class:`core.datasets.QADataset`), by :func:`choose_recipe`.

    A named evaluation set tells where users will search only when its questions are mostly about other text
    than the training chunks (:func:`eval_overlap` under :data:`IN_CORPUS_SHARE`): new questions on the
    training chunks are the adapter's case. Where users will search is known, the base model (``embedder``;
    ``embedder_kwargs`` go to :func:`core.embedders.resolve_embedder`) counts the tokens of those chunks:
    chunks it reads whole are the adapter's case too (:func:`long_chunk_share`). ``offline_share``: the share of
    offline pseudo-queries among the training questions, when known (:func:`choose_recipe`). ``own_documents``: the
    documents the evaluation set asks about when they are all the training questions' own (by file name:
    :func:`core.runs.training_documents`): new sections of them, which :func:`choose_recipe` quotes for itself."""
    from .embedders import resolve_embedder
    from .export import is_api_embedder

    overlap = eval_overlap(train_ds, eval_ds) if eval_ds is not None else None
    elsewhere = eval_ds is not None and (overlap is None or overlap < IN_CORPUS_SHARE)
    uncovered = uncovered_documents(asked_texts(train_ds), documents)
    searched = describe_searched(elsewhere, uncovered)
    own = list(own_documents) if elsewhere and not uncovered else []
    long_share = None
    if searched and not is_api_embedder(embedder):
        texts = [t for name in uncovered for t in documents[name]] + (asked_texts(eval_ds) if elsewhere else [])
        long_share = long_chunk_share(texts, resolve_embedder(embedder, **embedder_kwargs))
    return choose_recipe(embedder, searched, overlap, long_share, offline_share, own)


def teacher_readers(spec: str, config: DistillConfig, short: int | None = None, **kwargs: Any) -> list[Any]:
    """The fine-tuned model ``spec`` as the embedders a distillation's teacher runs: at ``short`` tokens (the
    index's read: the base model's input length; default the fine-tune's own) and at :func:`teacher_length`,
    blended when :attr:`DistillConfig.teacher_blend` and the two differ, else the latter alone (``kwargs`` go to
    :func:`core.embedders.resolve_embedder`: workspace, prefixes)."""
    from .embedders import resolve_embedder

    own = resolve_embedder(spec, **kwargs)
    if short and short != getattr(own, "max_seq_length", None):  # a fine-tune saved to read more than the base
        own = resolve_embedder(spec, max_seq_length=short, **kwargs)
    n = teacher_length(spec, config)
    if not n or n == getattr(own, "max_seq_length", None):
        return [own]
    long = resolve_embedder(spec, max_seq_length=n, **kwargs)
    return [own, long] if config.teacher_blend is not False else [long]  # "auto" unresolved: the blend


def teacher_length(folder: str | os.PathLike, config: DistillConfig) -> int | None:
    """The input length a distillation runs the fine-tuned model in ``folder`` at: ``config.teacher_max_tokens``
    capped at the model's position limit, or ``None`` (its own length) for 0 or a folder that states no limit."""
    from .onnx_embedder import position_limit

    limit = position_limit(folder) if os.path.isdir(folder) else None
    return min(config.teacher_max_tokens, limit) if config.teacher_max_tokens and limit else None


def recipe_estimate(
    runs: Iterable[dict[str, Any]],
    embedder: str,
    n_pairs: int,
    n_chunks: int,
    epochs: int = 1,
    batch_size: int = 32,
    max_ranked_chunks: int = DistillConfig.max_ranked_chunks,
) -> dict[str, Any]:
    """What the distil recipe will cost here, before it starts: the fine-tune's steps, and the seconds of
    both runs when this workspace has finished a fine-tune of ``embedder`` (``runs`` as
    :func:`core.runs.list_runs` gives them, newest first), else ``None`` for them.

    The fine-tune scales with the training questions (every step runs the whole model on a batch of them
    and their chunks): seconds per question and epoch of the newest finished fine-tune. The distillation is
    mostly the fine-tuned model embedding the ranked chunks and their pseudo-queries: seconds per ranked
    chunk of the newest finished distillation, or, with none, the fine-tune's own timed re-embedding sample
    times :data:`_DISTIL_PER_REEMBED`. Both are this machine's pace on earlier data, so chunks of
    another length move them; the progress bar then says the time left as the run goes.

    Returns ``{"steps", "finetune_seconds", "distil_seconds", "basis"}`` (``basis``: which run, in words)."""
    from .finetune import duration_text

    n_pairs, n_chunks = max(0, int(n_pairs)), min(max(0, int(n_chunks)), int(max_ranked_chunks))
    out: dict[str, Any] = {
        "steps": -(-n_pairs // max(1, int(batch_size))) * max(1, int(epochs)),
        "finetune_seconds": None,
        "distil_seconds": None,
        "basis": None,
    }

    def mine(r: dict[str, Any], kind: str) -> bool:
        res = r.get("result") or {}
        return (
            r.get("kind") == kind
            and r.get("status") == "done"
            and (r.get("config") or {}).get("embedder", "default") == embedder
            and not res.get("cancelled")
            and float(res.get("seconds") or 0) > 0
        )

    runs = list(runs)
    ft = next((r for r in runs if mine(r, "finetune") and (r["result"].get("n_train_queries") or 0) > 0), None)
    if ft is None:
        return out
    res = ft["result"]
    per_pair = float(res["seconds"]) / (int(res["n_train_queries"]) * max(1, int(res.get("epochs") or 1)))
    out["finetune_seconds"] = per_pair * n_pairs * max(1, int(epochs))
    out["basis"] = (
        f"the fine-tune \u201c{ft['name']}\u201d: {int(res['n_train_queries']):,} questions in "
        + duration_text(float(res["seconds"]))
    )
    dist = next((r for r in runs if mine(r, "distill") and (r["result"].get("n_chunks") or 0) > 0), None)
    if dist is not None:
        out["distil_seconds"] = float(dist["result"]["seconds"]) / int(dist["result"]["n_chunks"]) * n_chunks
    else:
        cost = res.get("cost") or {}
        est, n = cost.get("reembed_seconds_estimate"), cost.get("chunks_to_reembed")
        if est and n:
            out["distil_seconds"] = float(est) / int(n) * n_chunks * _DISTIL_PER_REEMBED
    return out


def uncovered_documents(
    train_texts: Iterable[str], documents: dict[str, Sequence[str]], min_coverage: float = IN_CORPUS_SHARE
) -> list[str]:
    """The names of ``documents`` (name -> chunk texts) of which under ``min_coverage`` of the text is among
    ``train_texts`` (the chunks the training questions ask about, :func:`asked_texts`): documents the
    questions are not about, or cover under that share of (a sample of chunks asked about), by
    :func:`text_fingerprints`, so a training set chunked apart from the workspace still covers its own."""
    from .questions import sample_chunk_ids

    trained = text_fingerprints(train_texts)
    out = []
    for name, texts in documents.items():
        prints = text_fingerprints(sample_chunk_ids(texts, _PER_DOCUMENT))  # an estimate: bounded page-load cost
        if prints and len(prints & trained) / len(prints) < min_coverage:
            out.append(name)
    return out


def eval_overlap(train_ds: Any, eval_ds: Any) -> float | None:
    """Share of the text ``eval_ds``'s questions ask about (its relevant chunks) that is among the chunks
    ``train_ds``'s questions ask about, by :func:`text_fingerprints` (so an evaluation set chunked apart from the
    training set still matches); ``None`` when its questions name no chunk it holds. Both are
    :class:`core.datasets.QADataset`. A training chunk no question asks about counts as new text, as in
    :func:`core.selection.choose_design`."""
    return coverage(text_fingerprints(asked_texts(eval_ds)), text_fingerprints(asked_texts(train_ds)))


def long_chunk_share(texts: Sequence[str], embedder: Any) -> float | None:
    """The share of ``texts`` (a seeded sample of :data:`_LONG_SAMPLE`) longer than ``embedder`` reads (its
    ``max_seq_length``, special tokens counted, as ingestion flags a chunk ``truncated``); ``None`` when
    there are none or the embedder states no length or cannot count tokens."""
    from .questions import sample_chunk_ids

    limit = getattr(embedder, "max_seq_length", None)
    counter = getattr(embedder, "count_tokens_batch", None)
    picked = sample_chunk_ids(list(texts), _LONG_SAMPLE)
    if not picked or not limit or counter is None:
        return None
    return sum(n > limit for n in counter(picked)) / len(picked)


def asked_texts(ds: Any) -> list[str]:
    """The texts of the chunks ``ds``'s questions ask about (a :class:`core.datasets.QADataset`; its corpus can
    hold every chunk of its documents, asked about or not): the text the questions cover."""
    ids = {c for ids in ds.relevant_docs.values() for c in ids if c in ds.corpus}
    return [ds.corpus[c] for c in sorted(ids)]


def resolve_teacher_blend(
    config: DistillConfig, train_ds: Any, documents: dict[str, Sequence[str]], eval_ds: Any | None = None
) -> tuple[bool, str]:
    """(whether the teacher blends its two reads, why) for a distillation of ``train_ds``'s questions that ranks
    ``documents`` (name -> chunk texts) and the chunks of ``eval_ds`` (named, or ``None``).

    A ``True`` or ``False`` :attr:`DistillConfig.teacher_blend` is kept. ``auto``: the long read alone when a
    ranked document, or the text the named evaluation set asks about, is another document altogether (under
    :data:`OTHER_DOCUMENT_SHARE` of it among the training set's chunks, asked about or not, by
    :func:`uncovered_documents`' fingerprints), else the blend. New sections of the training filing are not
    another document: a held-out half of its chunks named as the evaluation set keeps the blend, which was
    chosen on such protocols, and so does a named set of other sections (another kind of text) when most of
    its text lies in an ingested document the training set covers: the training filing itself. Measured
    (bench/README, "The teacher's read on another company's filing"): Lyft's questions distilled over Uber's
    10-K, the long read gained twice the blend's hit@5 and more MRR@5 on every seed; the blend was chosen on
    protocols within one filing, where it holds the targets the long read misses. Where the training filing is
    ingested in short chunks, they are read whole at both lengths, so the two teachers differ little there."""
    if isinstance(config.teacher_blend, bool):
        return config.teacher_blend, "set"
    named = "the evaluation set named"
    ranked = {**documents, **({named: asked_texts(eval_ds)} if eval_ds is not None else {})}
    other = uncovered_documents(train_ds.corpus.values(), ranked, min_coverage=OTHER_DOCUMENT_SHARE)
    if named in other:  # text alone cannot tell another filing from other sections of this one; the workspace can
        own = [t for name, texts in documents.items() if name not in other for t in texts]
        if own and not uncovered_documents(own, {named: ranked[named]}):  # most of it in an ingested document
            other.remove(named)  # the training set covers: other sections of the training filing
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        return False, f"the long read alone: it ranks another document altogether ({shown})"
    return True, "both reads, blended: nothing it ranks is another document altogether"


def describe_searched(eval_named: bool, uncovered: Sequence[str]) -> str | None:
    """The ``searched`` of :func:`choose_recipe` in words: the evaluation set, the uncovered documents, or ``None``."""
    parts = ["the evaluation set named"] if eval_named else []
    if uncovered:
        shown = ", ".join(uncovered[:3]) + (f" and {len(uncovered) - 3} more" if len(uncovered) > 3 else "")
        parts.append(f"ingested documents the questions mostly do not ask about: {shown}")
    return "; ".join(parts) or None


def text_fingerprints(texts: Iterable[str]) -> set[str]:
    """Sampled fingerprints of ``texts``: the word 4-grams (lower-cased, whitespace folded) that start at an
    anchor word (its crc32 is 0 modulo :data:`_KEEP_ONE_IN`), hashed, so the same passage gives the same
    fingerprints however a document was cut into chunks; a text with no anchor keeps its least 4-gram
    hash. About one per 16 words (a million-word corpus keeps ~60,000), and only those grams are built:
    about 0.1 ms per 360-word chunk."""
    out: set[str] = set()
    anchor: dict[str, bool] = {}

    def digest(words: list[str]) -> int:
        return int.from_bytes(hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest(), "big")

    for text in texts:
        words = unicodedata.normalize("NFKC", str(text)).lower().split()
        last = max(1, len(words) - _SHINGLE + 1)
        starts = []
        for i in range(last):
            w = words[i] if words else ""
            hit = anchor.get(w)
            if hit is None:
                hit = anchor[w] = zlib.crc32(w.encode("utf-8")) % _KEEP_ONE_IN == 0
            if hit:
                starts.append(i)
        if starts:
            out.update(f"{digest(words[i : i + _SHINGLE]):016x}" for i in starts)
        else:  # a short text: its least gram hash, the same wherever it sits
            out.add(f"{min(digest(words[i : i + _SHINGLE]) for i in range(last)):016x}")
    return out


def save_ranked(folder: str | os.PathLike, chunks: Iterable[str]) -> Path:
    """Record in a distilled adapter's ``folder`` what text it learned to rank (:data:`RANKED_FILE`)."""
    from .workspace import atomic_write_bytes

    path = Path(folder) / RANKED_FILE
    atomic_write_bytes(path, "\n".join([_RANKED_HEADER, *sorted(text_fingerprints(chunks))]).encode("ascii"))
    return path


def read_ranked(folder: str | os.PathLike) -> set[str] | None:
    """The fingerprints of the text the adapter in ``folder`` was distilled over; ``None`` when ``folder``
    holds no record in this scheme (not a distilled adapter, or another version)."""
    try:
        lines = (Path(folder) / RANKED_FILE).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return set(lines[1:]) if lines and lines[0] == _RANKED_HEADER else None


def coverage(wanted: set[str], known: set[str]) -> float | None:
    """Share of the fingerprints ``wanted`` (:func:`text_fingerprints`) among ``known``; ``None`` for none."""
    return len(wanted & known) / len(wanted) if wanted else None


def ranked_coverage(folder: str | os.PathLike, texts: Iterable[str]) -> float | None:
    """Share of ``texts``' fingerprints (an evaluation set's chunks) among those of the chunks the adapter
    in ``folder`` was distilled over; ``None`` when ``folder`` holds no record (not a distilled adapter)."""
    ranked = read_ranked(folder)
    return None if ranked is None else coverage(text_fingerprints(texts), ranked)


def distill_queries(
    questions: Sequence[str], chunks: Sequence[str], per_chunk: int, seed: int = 0, max_chunks: int = 5000
) -> list[str]:
    """The training questions plus ``per_chunk`` offline pseudo-queries made from each chunk's own text
    (from a seeded sample of ``max_chunks`` chunks on a larger corpus, so the step cost stays bounded)."""
    out = list(questions)
    if per_chunk:
        from .pseudo_queries import offline_generator
        from .questions import sample_chunk_ids

        gen = offline_generator(None, seed=seed)
        gen.fit(chunks)
        rows = sample_chunk_ids(range(len(chunks)), max_chunks, seed)
        out += [q for i in rows for q in gen.generate(chunks[i], per_chunk)]
    return out


def _weights_identity(reader: Any) -> str | None:
    """A reader's identity without its input length: equal for one model read at two lengths."""
    ident = getattr(reader, "identity", None)
    return re.sub(r"@len\d+", "", ident) if isinstance(ident, str) else None


def _read_or_reuse(
    reader: Any,
    earlier: Sequence[Any],
    earlier_vecs: Sequence[torch.Tensor],
    texts: list[str],
    role: str,
    embed: Callable[[Callable[..., Any], list[str], str], torch.Tensor],
    label: str,
    tell: Callable[[str], None] = lambda m: None,
) -> tuple[torch.Tensor, int]:
    """``reader``'s vectors of ``texts`` (``role``: ``queries`` or ``texts``), and how many it took from an
    ``earlier`` reader of the same weights (:func:`_weights_identity`) at a shorter input length instead of
    embedding them: a text that fits that length is read whole by both, so the two vectors are the same
    (questions, most pseudo-queries, short chunks). Nothing is embedded twice. ``tell`` hears how many."""
    fn = reader.embed_queries if role == "queries" else reader.embed_texts
    what = f"{label}, {'queries' if role == 'queries' else 'chunks'}"
    n = getattr(reader, "max_seq_length", None)
    weights = _weights_identity(reader)
    shorter = [
        (j, m)
        for j, r in enumerate(earlier)
        if (m := getattr(r, "max_seq_length", None)) and n and m < n and weights and _weights_identity(r) == weights
    ]
    counter = getattr(reader, "count_tokens_batch", None)
    if not shorter or counter is None or not texts:
        return embed(fn, texts, what), 0
    j, limit = max(shorter, key=lambda jm: jm[1])
    prefix = getattr(reader, "query_prefix" if role == "queries" else "passage_prefix", "") or ""
    try:
        fits = [c <= limit for c in counter([prefix + t for t in texts])]
    except Exception:  # noqa: BLE001 - a reader that cannot count tokens reads everything
        return embed(fn, texts, what), 0
    rest = [i for i, ok in enumerate(fits) if not ok]
    tell(f"{what}: {len(texts) - len(rest):,} of {len(texts):,} fit in {limit} tokens, their vectors reused")
    out = earlier_vecs[j].clone()  # normalized: the blend normalizes each reader's vectors anyway
    if rest:
        out[rest] = nn.functional.normalize(embed(fn, [texts[i] for i in rest], what), dim=-1)
    return out, len(texts) - len(rest)


def distill_adapter(
    teacher: Any,
    base,
    questions: Sequence[str],
    chunks: Sequence[str],
    config: DistillConfig | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A linear adapter on ``base``'s query vectors whose ranking of ``chunks`` (``base``'s vectors) matches
    ``teacher``'s (its own vectors), and a summary. Both embedders cache, so nothing is embedded twice.
    ``teacher`` may be a list of embedders (one model read at several lengths: :func:`teacher_readers`): its
    score for a query and a chunk is then the mean of their cosines.

    ``progress(done, total, message)`` is called as it goes; ``cancel`` (a ``threading.Event``) stops it
    after the current step, keeping the adapter trained so far (``summary["cancelled"]``). ``callback``
    receives history events as adapter training emits them (``{"type": "phase", "message"}``, then
    ``{"type": "step", "step", "epoch": 1, "loss", "lr"}`` per step, the loss being the KL), so a run's
    live chart draws a distillation like any other run."""
    config = config or DistillConfig()
    config.validate()
    chunks = list(dict.fromkeys(chunks))  # one row per distinct text
    if len(chunks) < 2:
        raise ValueError("distilling needs at least two chunks to rank")
    n_distinct = len(chunks)
    if n_distinct > config.max_ranked_chunks:  # a seeded sample, in order: spread over every document
        from .questions import sample_chunk_ids

        chunks = sample_chunk_ids(chunks, config.max_ranked_chunks, config.seed)
    queries = distill_queries(questions, chunks, config.pseudo_queries, config.seed, config.max_pseudo_chunks)
    if not queries:
        raise ValueError("distilling needs queries: training questions or pseudo-queries")
    say = progress or (lambda *a: None)
    record = callback or (lambda e: None)
    phase = f"embedding {len(chunks):,} chunks and {len(queries):,} queries with the base model and the fine-tuned one"
    say(0, config.steps, phase)
    record({"type": "phase", "message": phase})

    def embed(fn, texts: list[str], label: str) -> torch.Tensor:
        """One embedding pass (cached texts are free), its progress named: a new corpus takes the teacher
        minutes to embed, and the bar says so instead of sitting at step 0."""
        tell = (lambda d, t, m="": say(d, t, f"{label}: {m}" if m else label)) if progress else None
        return torch.tensor(np.asarray(fn(texts, progress=tell), dtype=np.float32))

    qb = embed(base.embed_queries, queries, "base model, queries")
    db = embed(base.embed_texts, chunks, "base model, chunks")
    readers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    qts, dts = [], []
    reused = 0
    tell = lambda m: say(0, config.steps, m)  # noqa: E731
    for i, reader in enumerate(readers):
        n = getattr(reader, "max_seq_length", None)
        label = "fine-tuned model" + (f" at {n} tokens" if len(readers) > 1 and n else "")
        q_vecs = _read_or_reuse(reader, readers[:i], qts, queries, "queries", embed, label, tell)
        d_vecs = _read_or_reuse(reader, readers[:i], dts, chunks, "texts", embed, label, tell)
        reused += q_vecs[1] + d_vecs[1]
        qts.append(nn.functional.normalize(q_vecs[0], dim=-1))
        dts.append(nn.functional.normalize(d_vecs[0], dim=-1))
    # one vector per text whose dot products are the mean of the readers' cosines
    qt = torch.cat(qts, dim=1) / len(readers) ** 0.5
    dt = torch.cat(dts, dim=1) / len(readers) ** 0.5
    del qts, dts
    db = nn.functional.normalize(db, dim=-1)
    torch.manual_seed(config.seed)
    adapter = build_adapter("linear", qb.shape[1])  # starts as the identity: the base model's own ranking
    opt = torch.optim.Adam(adapter.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    cancelled = False
    record({"type": "phase", "message": f"matching the fine-tuned ranking: {config.steps} steps"})
    for step in range(1, config.steps + 1):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        rows = (
            torch.randperm(len(queries), generator=gen)[: config.batch_size]
            if config.batch_size < len(queries)
            else slice(None)
        )
        target = torch.softmax(qt[rows] @ dt.T / config.temperature, -1)  # per batch: memory ~ batch x chunks
        scores = nn.functional.normalize(adapter(qb[rows]), dim=-1) @ db.T / config.temperature
        loss = nn.functional.kl_div(torch.log_softmax(scores, -1), target, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        record({"type": "step", "step": step, "epoch": 1, "loss": losses[-1], "lr": config.lr})
        if step % 10 == 0 or step == config.steps:
            say(step, config.steps, f"step {step}/{config.steps}: KL to the fine-tuned ranking {losses[-1]:.4f}")
    adapter.eval()
    summary = {
        "config": asdict(config),
        "n_questions": len(questions),
        "n_pseudo_queries": len(queries) - len(questions),
        "n_chunks": len(chunks),
        "n_chunks_distinct": n_distinct,  # above max_ranked_chunks, n_chunks of them were ranked
        "teacher_reads": [getattr(r, "max_seq_length", None) for r in readers],  # input lengths, blended
        # texts a longer read would see whole, as a shorter read already had: its vectors, not a second pass
        "teacher_texts_reused": reused,
        "steps_done": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "cancelled": cancelled,
    }
    return adapter, summary
