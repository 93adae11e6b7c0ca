"""Quality benchmark: does the default adapter lift retrieval on questions it never saw?

Protocols on the real Lyft questions (../shared/data/qa/lyft_2021_train_dataset.json), three
seeds each, test side only, Δ against the base with a paired bootstrap 95% CI:

* (a) cross-section: the first 60% of the chunks in file order train, the rest test (a stand-in
  for a new document: later sections of a filing differ from earlier ones); evaluated over the
  test chunks only, as a new document would be.
* (r) (a) reversed: the last 60% of the chunks train, the first 40% test (disjoint test questions
  from (a)'s: a second new-document check for a choice made on (a)).
* (e) interleaved blocks: the file cut into 10 contiguous blocks, the even ones train and the odd
  ones test, over the test chunks only: a new document that covers the same *kinds* of section
  as the training one (the 10-K's body, its financial statements and its exhibits are on both
  sides), as another company's filing would; (a) and (r) instead change the kind of text (the
  last 43% of the shared file's chunks are the exhibits: employment and severance agreements).
* (f) (e) swapped: the odd blocks train, the even ones test.
* (g) 6 blocks, the 2nd and 5th test; (h) 4 blocks, the 3rd tests: checks added after the
  validation rule (``cv_validation=auto``) was chosen on (a) (c) (e) (f) (r), never used to choose.
* (b) in-corpus: the first question of each chunk trains, the second tests (new questions about
  chunks the adapter trained on), over the whole corpus.
* (s) (b) swapped: the second question of each chunk trains, the first tests (other test
  questions than (b)'s: a check of a choice made on (b)).
* (c) chunk split: 70% of the chunks (seeded) train, 30% test, over the whole corpus.
* (q) a sample of questions: the first question of a seeded random quarter of the chunks trains (what
  the Questions page's "Sample of chunks" makes), the second question of *every* chunk tests, over the
  whole corpus: real queries spread over the filing, a quarter of them new questions on chunks the
  adapter trained on, three quarters about chunks it never saw.
* (u) the guide's own protocol: every question of ``--dataset`` trains, ``--eval-dataset`` (LLM questions
  over *another* company's filing, with its own chunks) tests, ranked over that filing's chunks. Needs
  an evaluation file: the shared data has LLM questions over Lyft only (bench/README.md says which
  file the numbers came from).
* (d) the no-key path: offline questions (``--offline-generator``, default the app's offline
  method) generated over the Lyft PDF train the adapter; the test is every real LLM question of
  the shared file, over its own chunks (the adapter is query-only, so the two chunkings need not
  match). bench/no_key.py compares every offline method.

In (a) and (c) every chunk of the file is handed to training as the product does (the user
has ingested it); the run's config decides whether chunks without training questions are
negatives (``unlabelled_negatives``, off by default).

Rows: base, LlamaIndex's defaults (linear, 4 epochs), the AdapterLab default (linear,
cross-validated: the adapter recipe), two-layer (cross-validated), the AdapterLab auto recipe (what
``train`` does with no flag for a user who ingested the protocol's documents: the adapter row where
the questions cover every ingested document, else fine-tune, then distil, minutes per seed) and,
with --finetune, a full fine-tune of the base model (sentence-transformers' trainer) as the
expensive reference (read at the saved model's own length).

    python bench/quality.py [--protocols a b c] [--seeds 0 1 2] [--cv-cost] [--finetune]

Ablations run inside the product: ``--systems`` picks rows, ``--set KEY=VALUE`` overrides a
:class:`~core.training.TrainConfig` field of the AdapterLab default and two-layer rows (the
value is read as JSON, else as a string), ``--negatives all`` makes every chunk of the file a
negative, ``--negatives train`` passes the training chunks alone, ``--questions-per-chunk N``
trains on at most N questions per chunk, ``--cv-cost`` times the default against a plain run:

    python bench/quality.py --systems default --set false_negative_threshold=0 --negatives train

Paired comparisons over many seeds: ``--json FILE`` writes every per-seed Δ, ``--paired-with FILE``
prints the mean paired difference (± standard error) of this run against such a file on the same
seeds; ``--noise-rate`` only counts how often the default trains on no-signal fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.datasets import QADataset  # noqa: E402
from core.embedders import AdapterEmbedder, resolve_embedder  # noqa: E402
from core.evaluation import compare  # noqa: E402
from core.reports import labelled_rows  # noqa: E402
from core.training import TrainConfig, split_by_chunk, train, unasked_search_chunks  # noqa: E402
from core.workspace import Workspace  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "lyft_2021_train_dataset.json"


#: block protocols: (number of contiguous blocks of the file, the blocks that test)
BLOCK_SPLITS = {
    "e": (10, {1, 3, 5, 7, 9}),
    "f": (10, {0, 2, 4, 6, 8}),
    "g": (6, {1, 4}),
    "h": (4, {2}),
}


def protocol(ds: QADataset, name: str, seed: int) -> tuple[QADataset, QADataset, set[str]]:
    """(train dataset, test dataset, test chunk ids) for a protocol. The training dataset's
    corpus holds the training chunks only; every other chunk of the file is passed to training
    as an unlabelled negative unless ``--negatives train``."""
    nodes = list(ds.corpus)
    if name == "a":
        cut = int(0.6 * len(nodes))
        train_c, test_c = nodes[:cut], nodes[cut:]
        tr = [q for q in ds.queries if ds.relevant_docs[q][0] in set(train_c)]
        te = [q for q in ds.queries if ds.relevant_docs[q][0] not in set(train_c)]
        return ds.subset(tr, train_c), ds.subset(te, test_c), set(test_c)
    if name == "r":  # (a) reversed: the last 60% train, the first 40% are the new document
        cut = int(0.4 * len(nodes))
        train_c, test_c = nodes[cut:], nodes[:cut]
        tr = [q for q in ds.queries if ds.relevant_docs[q][0] in set(train_c)]
        te = [q for q in ds.queries if ds.relevant_docs[q][0] not in set(train_c)]
        return ds.subset(tr, train_c), ds.subset(te, test_c), set(test_c)
    if name in BLOCK_SPLITS:  # contiguous blocks of the file, some of them test (over the test chunks only)
        n_blocks, test_blocks = BLOCK_SPLITS[name]
        size = -(-len(nodes) // n_blocks)
        blocks = [nodes[i : i + size] for i in range(0, len(nodes), size)]
        train_c = [n for i, b in enumerate(blocks) if i not in test_blocks for n in b]
        test_c = [n for i, b in enumerate(blocks) if i in test_blocks for n in b]
        tr = [q for q in ds.queries if ds.relevant_docs[q][0] in set(train_c)]
        te = [q for q in ds.queries if ds.relevant_docs[q][0] not in set(train_c)]
        return ds.subset(tr, train_c), ds.subset(te, test_c), set(test_c)
    if name == "b":
        seen: set[str] = set()
        tr, te = [], []
        for q in ds.queries:
            c = ds.relevant_docs[q][0]
            (te if c in seen else tr).append(q)
            seen.add(c)
        return ds.subset(tr), ds.subset(te), {ds.relevant_docs[q][0] for q in te}
    if name == "s":  # (b) swapped: the second question of each chunk trains, the first tests
        last: dict[str, str] = {}
        for q in ds.queries:
            last[ds.relevant_docs[q][0]] = q
        tr = [q for q in ds.queries if last[ds.relevant_docs[q][0]] == q]
        te = [q for q in ds.queries if last[ds.relevant_docs[q][0]] != q]
        return ds.subset(tr), ds.subset(te), {ds.relevant_docs[q][0] for q in te}
    if name == "q":
        first: dict[str, str] = {}
        for q in ds.queries:
            first.setdefault(ds.relevant_docs[q][0], q)
        picked = set(random.Random(seed).sample(sorted(first), round(len(first) / 4)))
        tr = [q for c, q in first.items() if c in picked]
        te = [q for q in ds.queries if first[ds.relevant_docs[q][0]] != q]
        return ds.subset(tr), ds.subset(te), {ds.relevant_docs[q][0] for q in te}
    if name == "c":
        tr, te = split_by_chunk(ds, 0.3, seed)
        test_c = {ds.relevant_docs[q][0] for q in te}
        return ds.subset(tr, [c for c in ds.corpus if c not in test_c]), ds.subset(te), test_c
    raise ValueError(name)


def load_eval_dataset(path: str | None, protocols: list[str]) -> QADataset | None:
    """The ``--eval-dataset`` of protocol (u), refusing (u) without one."""
    if "u" in protocols and not path:
        raise SystemExit("protocol (u) needs --eval-dataset: questions over another document")
    return QADataset.load(path) if path else None


def split(
    ds: QADataset, eval_ds: QADataset | None, name: str, seed: int
) -> tuple[QADataset, QADataset, set[str], dict]:
    """(train, test, test chunk ids, every ingested chunk) of a protocol: :func:`protocol`'s split of ``ds``
    with all of its chunks ingested, or for (u) every question of ``ds`` against ``eval_ds``, both filings
    ingested (as for a user who uploaded both)."""
    if name == "u":
        return ds, eval_ds, set(eval_ds.corpus), {**ds.corpus, **eval_ds.corpus}
    train_ds, test_ds, test_chunks = protocol(ds, name, seed)
    return train_ds, test_ds, test_chunks, dict(ds.corpus)


def ingested_by_document(
    pn: str, ds: QADataset, eval_ds: QADataset | None, ingested: dict[str, str] | None
) -> dict[str, dict[str, str]]:
    """The ingested chunks of protocol ``pn`` per document (name -> id -> text), as the product reads the workspace:
    the file, in (u) both filings (``ingested``: what :func:`split` says is ingested, ``None`` in (d))."""
    if not ingested:
        return {}
    if pn == "u":
        return {"training filing": dict(ds.corpus), "evaluation filing": dict(eval_ds.corpus)}
    return {"the file": dict(ingested)}


def at_most_per_chunk(ds: QADataset, n: int) -> QADataset:
    """``ds`` keeping the first ``n`` questions of each chunk (file order)."""
    count: dict[str, int] = {}
    keep = []
    for q in ds.queries:
        c = ds.relevant_docs[q][0]
        count[c] = count.get(c, 0) + 1
        if count[c] <= n:
            keep.append(q)
    return ds.subset(keep, list(ds.corpus))


SYSTEMS = {
    "llamaindex": "LlamaIndex defaults",
    "default": "AdapterLab default",
    "two-layer": "two-layer",
    "auto": "AdapterLab auto recipe",
}


def protocol_documents(pn: str, ds: QADataset, eval_ds: QADataset | None, train_ds: QADataset) -> dict[str, list[str]]:
    """The documents a user running protocol ``pn`` has ingested (name -> chunk texts): the file, in (u) both
    filings, in (d) the PDF's chunks (the offline questions') and the JSON's (the same filing chunked twice)."""
    if pn == "u":
        return {"training filing": list(ds.corpus.values()), "evaluation filing": list(eval_ds.corpus.values())}
    if pn == "d":
        return {"the PDF": list(train_ds.corpus.values()), "the JSON's chunks": list(ds.corpus.values())}
    return {"the file": list(ds.corpus.values())}


def auto_recipe(embedder: str, train_ds: QADataset, documents: dict[str, list[str]]) -> tuple[str, str]:
    """What the product's ``train --recipe auto`` chooses for ``train_ds`` in a workspace holding ``documents``,
    no evaluation set named: the product's own rule (:func:`core.distill.auto_choice`)."""
    from core.distill import auto_choice

    return auto_choice(embedder, train_ds, documents)


def distil_recipe(
    train_ds: QADataset,
    chunks: list[str],
    emb,
    ws,
    seed: int,
    steps: int | None = None,
    base: str = "default",
    documents: dict[str, list[str]] | None = None,
    blend: bool | None = None,
) -> tuple[object, object, float, float]:
    """The product's distil recipe: a full fine-tune of ``base`` (a sentence-transformers spec; a backend suffix
    such as ``@onnx-int8`` is dropped: the weights are the same) on ``train_ds`` (default settings, this seed),
    then its distillation into a linear adapter over ``chunks`` (default settings; ``steps`` overrides). The
    teacher's reads are the product's choice for the ingested ``documents`` (name -> chunk texts:
    :func:`core.distill.resolve_teacher_blend`), unless ``blend`` says.
    Returns (the student adapter, the fine-tuned model as an embedder, fine-tune seconds, distillation seconds)."""
    from core.distill import DistillConfig, distill_adapter, resolve_teacher_blend, teacher_readers
    from core.finetune import finetune

    t = time.time()
    ft = finetune(train_ds, base.split("@", 1)[0], Path(tempfile.mkdtemp(prefix="ft-")), seed=seed)
    ft_s, t = time.time() - t, time.time()
    config = DistillConfig(seed=seed, **({"steps": steps} if steps else {}))
    if blend is None:
        blend = resolve_teacher_blend(config, train_ds, documents or {})[0]
    config.teacher_blend = blend
    readers = teacher_readers(str(ft.out_dir), config, short=getattr(emb, "max_seq_length", None), workspace=ws)
    student, _ = distill_adapter(readers, emb, list(train_ds.queries.values()), chunks, config)
    # the fine-tune as a system: the saved model at its own input length, as sentence-transformers loads it
    return student, resolve_embedder(str(ft.out_dir), workspace=ws), ft_s, time.time() - t


def overrides(pairs: list[str]) -> dict[str, object]:
    """``["epochs=16", "loss=in_batch"]`` -> ``{"epochs": 16, "loss": "in_batch"}`` (JSON values, else strings)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def offline_protocol(ws_dir: str, pdf: Path, per_chunk: int = 2, method: str | None = None) -> QADataset:
    """Offline questions by ``method`` (core.pseudo_queries; default its default) over ``pdf``, in their own
    workspace (ingested once, reused); see bench/no_key.py, which measures every method."""
    from bench.no_key import offline_dataset, offline_workspace
    from core.pseudo_queries import DEFAULT_OFFLINE_METHOD

    return offline_dataset(offline_workspace(ws_dir, pdf), method or DEFAULT_OFFLINE_METHOD, per_chunk)


def cv_cost(ds: QADataset, emb, negatives_all: bool, repeats: int = 3) -> None:
    """Wall time of the default (cross-validated) run against one plain run of the configured
    epochs, seed 0, vectors cached, best of ``repeats`` each: protocol (a) and (e) (the *chunks*
    design) and (b) (*questions*, where ``cv_rule=auto`` tries up to twice the epochs). The default
    run is timed with its folds side by side (``core.training.fold_workers``, the product's default)
    and one at a time (``ADAPTERLAB_CV_WORKERS=1``); the CPU-time ratio of the former is shown too."""
    import torch

    from core.training import CV_WORKERS_ENV, fold_workers

    negatives = ds.corpus if negatives_all else None
    plain_cfg = TrainConfig(adapter="linear", selection="none")
    cv_cfg = TrainConfig(adapter="linear")
    workers = fold_workers(cv_cfg, torch.device("cpu"), cv_cfg.cv_folds)
    print(f"\n### Cross-validation cost (seed 0, best of {repeats}, {torch.get_num_threads()} torch threads)\n")
    print(
        f"| protocol | one plain run (s) | default run, {workers} folds side by side (s) | ratio | "
        "CPU-time ratio | default run, folds one at a time (s) | ratio | cross-validated epochs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    saved = os.environ.get(CV_WORKERS_ENV)
    try:
        for name in ("a", "e", "b"):
            train_ds, _, test_chunks = protocol(ds, name, 0)
            wall: dict[str, float] = {}
            cpu: dict[str, float] = {}
            curve_len = 0
            for kind, cfg, env in (
                ("plain", plain_cfg, str(workers)),
                ("side", cv_cfg, str(workers)),
                ("one", cv_cfg, "1"),
            ):
                os.environ[CV_WORKERS_ENV] = env
                wall[kind] = cpu[kind] = float("inf")
                for _ in range(repeats):
                    t, c = time.perf_counter(), time.process_time()
                    result = train(train_ds, emb, cfg, negatives=negatives, target_chunks=test_chunks)
                    wall[kind] = min(wall[kind], time.perf_counter() - t)
                    cpu[kind] = min(cpu[kind], time.process_time() - c)
                    if result.cv is not None:
                        curve_len = len(next(iter(result.cv.curves.values()))) - 1
            print(
                f"| {name} ({plain_cfg.epochs} epochs plain) | {wall['plain']:.2f} | {wall['side']:.2f} | "
                f"{wall['side'] / wall['plain']:.1f}x | {cpu['side'] / cpu['plain']:.1f}x | {wall['one']:.2f} | "
                f"{wall['one'] / wall['plain']:.1f}x | {cv_cfg.cv_folds} folds x 1..{curve_len} + refit |"
            )
    finally:
        if saved is None:
            os.environ.pop(CV_WORKERS_ENV, None)
        else:
            os.environ[CV_WORKERS_ENV] = saved


def noise_rate(seeds: int = 20) -> None:
    """How often the default trains (instead of keeping the identity) when there is nothing to learn:
    tests/test_selection.py's no-signal fixture (random question vectors, no ingested chunks), and the
    same with text chunks ingested besides (pseudo-queries on, then off), whose real questions point at
    random vectors."""
    import numpy as np

    from tests.test_selection import WordEmbedder, _cfg, _pseudo_case, no_signal

    class NoiseQuestions(WordEmbedder):
        def embed_queries(self, texts, progress=None):
            out = super().embed_queries(texts)
            for i, t in enumerate(texts):
                if t.startswith("What does section"):  # a real question: a random vector
                    v = np.random.default_rng([self.seed, sum(map(ord, t)), len(t)]).normal(size=out.shape[1])
                    out[i] = v / np.linalg.norm(v)
            return out

    rows = {"no-signal fixture (no ingested chunks)": 0, "ingested chunks, pseudo-queries on": 0}
    rows["ingested chunks, pseudo-queries off"] = 0
    q_auto, q_best = "no-signal fixture, questions design (cv_rule auto)", "no-signal fixture, questions design (best)"
    rows[q_auto] = rows[q_best] = 0
    for s in range(seeds):
        rows["no-signal fixture (no ingested chunks)"] += train(*no_signal(seed=s), _cfg(seed=s)).cv.train
        nds, nemb = no_signal(seed=s)
        same = {docs[0] for docs in nds.relevant_docs.values()}  # evaluated on the training chunks
        rows[q_auto] += train(nds, nemb, _cfg(seed=s), target_chunks=same).cv.train
        rows[q_best] += train(nds, nemb, _cfg(seed=s, cv_rule="best"), target_chunks=same).cv.train
        ds, chunks = _pseudo_case(n_chunks=40, labelled=20)
        for on in (True, False):
            emb = NoiseQuestions()
            emb.seed = s
            res = train(ds, emb, _cfg(seed=s, pseudo_queries=2 if on else 0), negatives=chunks)
            rows[f"ingested chunks, pseudo-queries {'on' if on else 'off'}"] += res.cv.train
    print(f"\n### Trainings on data with no signal ({seeds} seeds)\n")
    print("| fixture | seeds that train |\n|---|---|")
    for name, n in rows.items():
        print(f"| {name} | {n} of {seeds} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(SHARED))
    ap.add_argument("--protocols", nargs="+", default=["a", "b", "c"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--finetune", action="store_true", help="add the full fine-tune reference row (slow on CPU)")
    ap.add_argument(
        "--systems",
        nargs="*",
        default=list(SYSTEMS),
        choices=list(SYSTEMS),
        help="rows to train (base is always there); auto: what the product's default recipe trains for the "
        "protocol (the adapter row, or fine-tune then distil: minutes per seed)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field of the AdapterLab default and two-layer rows (repeatable)",
    )
    ap.add_argument("--embedder", default="default", help="the base embedder spec, e.g. default@onnx-int8")
    ap.add_argument("--cv-cost", action="store_true", help="also time the default run against one plain run")
    ap.add_argument(
        "--noise-rate", action="store_true", help="only count how often the default trains on no-signal fixtures"
    )
    ap.add_argument(
        "--questions-per-chunk",
        type=int,
        default=0,
        help="train on at most N questions per chunk (0 = all): the 'more questions per chunk' proxy",
    )
    ap.add_argument(
        "--negatives",
        choices=["default", "all", "train"],
        default="default",
        help="every chunk of the file is passed to training as the product does, and the config decides "
        "(default); all: forces unlabelled_negatives on; train: passes the training chunks only",
    )
    ap.add_argument(
        "--offline-generator",
        default=None,
        help="protocol (d): the offline method (core.pseudo_queries."
        "OFFLINE_METHODS; default: the app's default); bench/no_key.py compares them all",
    )
    ap.add_argument(
        "--eval-dataset",
        default=None,
        help="protocol (u): a LlamaIndex dataset JSON over another document that tests an adapter trained on "
        "every question of --dataset",
    )
    ap.add_argument(
        "--blind",
        action="store_true",
        help="name no evaluation set, as a user who trains with nothing named: the ingested chunks no training "
        "question asks about stand in for it (core.training.unasked_search_chunks), as in the product",
    )
    ap.add_argument("--json", default=None, help="also write every per-seed Δ (points, unrounded) to this JSON file")
    ap.add_argument(
        "--paired-with",
        default=None,
        help="a --json file of an earlier run: print the mean paired difference against it on the same seeds",
    )
    ap.add_argument(
        "--workspace",
        default=os.environ.get("ADAPTERLAB_WORKSPACE", str(Path(tempfile.gettempdir()) / "adapterlab-bench")),
    )
    args = ap.parse_args()
    if args.noise_rate:
        noise_rate()
        return
    extra = overrides(args.overrides)
    if args.negatives == "all":
        extra["unlabelled_negatives"] = True

    ds = QADataset.load(args.dataset)
    eval_ds = load_eval_dataset(args.eval_dataset, args.protocols)
    ws = Workspace(args.workspace)
    emb = resolve_embedder(args.embedder, workspace=ws)
    print(f"embedder: {emb.identity}")
    print(f"dataset: {args.dataset} ({len(ds.queries)} questions, {len(ds.corpus)} chunks)")
    print(
        f"overrides: {extra or 'none'}; negatives: {args.negatives}; "
        f"questions per chunk: {args.questions_per_chunk or 'all'}\n"
    )
    summary: dict[tuple[str, str], list[tuple[float, float]]] = {}
    per_seed: dict[str, dict[str, float]] = {}  # "protocol|system|seed" -> Δ hit@5, Δ MRR@5 (points)
    for pn in args.protocols:
        print(f"\n### Protocol ({pn})\n")
        print(
            "| seed | system | hit@5 | MRR@5 | Δ hit@5 [95% CI] | Δ MRR@5 [95% CI] | p (hit / MRR) | selection | train s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for seed in args.seeds:
            if pn == "d":
                pdf = Path(args.dataset).parents[1] / "10k" / "lyft_2021.pdf"
                train_ds, test_ds, test_chunks = (
                    offline_protocol(args.workspace, pdf, method=args.offline_generator),
                    ds,
                    set(ds.corpus),
                )
                ingested = None
            else:
                train_ds, test_ds, test_chunks, ingested = split(ds, eval_ds, pn, seed)
                if args.questions_per_chunk and pn != "u":
                    train_ds = at_most_per_chunk(train_ds, args.questions_per_chunk)
            # every chunk of the file (in (u) of both filings) is ingested, so every chunk is a negative (unlabelled)
            negatives = ingested if pn != "d" and args.negatives != "train" else None
            systems = {"base": emb}
            notes = {"base": ("", "")}
            configs = {
                "llamaindex": TrainConfig.llamaindex_defaults("linear", epochs=4),
                "default": TrainConfig(**{"adapter": "linear", "seed": seed, **extra}),
                "two-layer": TrainConfig(**{"adapter": "two-layer", "seed": seed, **extra}),
            }
            keys = [k for k in args.systems if k != "auto"]
            if "auto" in args.systems and "default" not in keys:
                keys.append("default")  # auto's adapter recipe is this row (seconds), and its comparison otherwise
            runs = [(SYSTEMS[key], configs[key]) for key in keys]
            for name, cfg in runs:
                t = time.time()
                res = train(
                    train_ds,
                    emb,
                    cfg,
                    negatives=negatives,
                    target_chunks=None if args.blind else test_chunks,
                    searched_chunks=unasked_search_chunks(train_ds, ingested_by_document(pn, ds, eval_ds, ingested))
                    if args.blind
                    else None,
                )
                secs = time.time() - t
                systems[name] = AdapterEmbedder(emb, res.adapter)
                how = (
                    f"cv {res.cv.design}{' blocks' if res.cv.fold_order == 'blocks' else ''}"
                    f"{' fold-ranked' if res.cv.validation == 'fold' else ''}: "
                    f"{'ep ' + str(res.cv.epochs) if res.cv.train else 'identity'}"
                    f"{f' α {res.cv.alpha:g}' if res.cv.train and res.cv.alpha != 1 else ''}"
                    if res.cv
                    else f"{cfg.epochs} ep"
                )
                notes[name] = (how, f"{secs:.1f}")
            if "auto" in args.systems:
                name = SYSTEMS["auto"]
                documents = protocol_documents(pn, ds, eval_ds, train_ds)
                recipe, why = auto_recipe(args.embedder, train_ds, documents)
                print(f"<!-- ({pn}) seed {seed}: auto chose {recipe} ({why}) -->", flush=True)
                if recipe == "distil":
                    ranked = list(ingested.values()) if pn != "d" else list({**train_ds.corpus, **ds.corpus}.values())
                    student, _, ft_s, di_s = distil_recipe(
                        train_ds, ranked, emb, ws, seed, base=args.embedder, documents=documents
                    )
                    systems[name] = AdapterEmbedder(emb, student)
                    notes[name] = (f"distil: fine-tune {ft_s:.0f} s + distil {di_s:.0f} s", f"{ft_s + di_s:.0f}")
                else:
                    label = SYSTEMS["default"]
                    systems[name] = systems[label]
                    notes[name] = ("adapter: the AdapterLab default row", notes[label][1])
            if args.finetune:
                from core.finetune import finetune

                t = time.time()
                out = Path(tempfile.mkdtemp(prefix="ft-"))
                ft = finetune(train_ds, "default", out, seed=seed)
                systems["full fine-tune"] = resolve_embedder(str(ft.out_dir), workspace=ws)
                notes["full fine-tune"] = (f"re-embeds {len(test_ds.corpus)} chunks", f"{time.time() - t:.0f}")
            cmp = compare(test_ds, systems, baseline="base")
            for row in labelled_rows(cmp):  # rows keyed by display labels (core.reports)
                name = row["system"]
                if name == "base":
                    d1 = d2 = p = ""
                else:
                    lo, hi = row["hit@5 CI"]
                    d1 = f"{100 * row['Δ hit@5']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                    lo, hi = row["mrr@5 CI"]
                    d2 = f"{100 * row['Δ mrr@5']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                    p = f"{row['hit@5 p']:.3f} / {row['mrr@5 p']:.3f}"
                    summary.setdefault((pn, name), []).append((100 * row["Δ hit@5"], 100 * row["Δ mrr@5"]))
                    per_seed[f"{pn}|{name}|{seed}"] = {"hit": 100 * row["Δ hit@5"], "mrr": 100 * row["Δ mrr@5"]}
                print(
                    f"| {seed} | {name} | {row['hit@5']:.3f} | {row['mrr@5']:.3f} | {d1} | {d2} | {p} | {notes[name][0]} | {notes[name][1]} |",
                    flush=True,
                )
    if args.cv_cost:
        cv_cost(ds, emb, args.negatives != "train")
    print("\n### Median over seeds (Δ in points; min in brackets; mean)\n")
    print("| protocol | system | Δ hit@5 median [min] | Δ MRR@5 median [min] | mean Δ hit@5 / MRR@5 |")
    print("|---|---|---|---|---|")
    for (pn, name), vals in summary.items():
        h = [v[0] for v in vals]
        m = [v[1] for v in vals]
        print(
            f"| {pn} | {name} | {statistics.median(h):+.1f} [{min(h):+.1f}] | {statistics.median(m):+.1f} [{min(m):+.1f}] "
            f"| {statistics.mean(h):+.2f} / {statistics.mean(m):+.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": extra, "deltas": per_seed}, indent=1))
    if args.paired_with:
        paired_report(json.loads(Path(args.paired_with).read_text())["deltas"], per_seed)


def paired_report(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> None:
    """Mean paired difference (this run - an earlier one) per protocol and system, over the seeds
    both runs hold, with how many seeds went up / down on hit@5."""
    print("\n### Paired difference against the earlier run (same seeds; points)\n")
    print("| protocol | system | seeds | mean diff hit@5 / MRR@5 | ± standard error | hit@5 up / down |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, now in after.items():
        if key in before:
            pn, name, _ = key.split("|")
            groups.setdefault((pn, name), []).append((now["hit"] - before[key]["hit"], now["mrr"] - before[key]["mrr"]))
    for (pn, name), diffs in groups.items():
        h = [d[0] for d in diffs]
        m = [d[1] for d in diffs]
        up = sum(x > 1e-9 for x in h)
        down = sum(x < -1e-9 for x in h)
        se = [statistics.stdev(x) / len(x) ** 0.5 if len(x) > 1 else 0.0 for x in (h, m)]
        print(
            f"| {pn} | {name} | {len(diffs)} | {statistics.mean(h):+.2f} / {statistics.mean(m):+.2f} "
            f"| {se[0]:.2f} / {se[1]:.2f} | {up} / {down} |"
        )


if __name__ == "__main__":
    main()
