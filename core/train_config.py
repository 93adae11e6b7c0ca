"""The training configuration: every setting of an adapter run, each with its own help line.

Kept free of torch so that the CLI can build its ``train`` options (help included) without
loading torch (about 1 s quiet, 10 s on a loaded machine). :mod:`core.training` re-exports
everything here.

Example::

    cfg = TrainConfig(adapter="linear", epochs=8)
    cfg.validate()
    FIELD_HELP["epochs"]  # the help line the dashboard and the CLI show
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import selection as sel
from .losses import NEEDS_BATCH, Loss

DEFAULT_LR = {"linear": 3e-4, "two-layer": 5e-4, "low-rank": 1e-3}
FALLBACK_LR = 3e-4
SELECTIONS = ("cv", "holdout", "none")
OPTIMIZER_NAMES = ("adamw", "adam", "sgd")


class TrainingError(ValueError):
    """A training request that cannot run; the message says what to change."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


#: the words a run's negatives note (``TrainResult.negatives``) starts its ``separate_sources`` part with: the
#: Train page and ``train`` show the note when they find them
SEPARATE_SOURCES_NOTE = "offline and written questions ask about separate chunks"


@dataclass(slots=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are AdapterLab's recipe.

    Each field's help (one line) is in its ``metadata["help"]``; :data:`FIELD_HELP` collects
    them for the dashboard and the CLI. Learning-rate default: None = the adapter's
    (:data:`DEFAULT_LR`: 3e-4 linear, 5e-4 two-layer, 1e-3 low-rank, measured on the Lyft 10-K
    questions). ``lr_grid`` is empty by default: on ~500 questions a grid made the choice
    noisier than a fixed rate (bench/README.md).
    """

    adapter: str = field(
        default="linear",
        metadata=_help(
            "Which adapter to train on top of the frozen embedder: linear, two-layer, low-rank, a registered name or "
            "pkg.mod:Class."
        ),
    )
    adapter_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Constructor overrides, e.g. hidden_features or bias.")
    )
    loss: str = field(
        default=Loss.CORPUS_SOFTMAX.value,
        metadata=_help(
            "corpus_softmax: softmax over the whole training corpus (AdapterLab); in_batch: LlamaIndex's loss."
        ),
    )
    epochs: int = field(
        default=12,
        metadata=_help(
            "Passes over the training questions (with cross-validation: the most epochs it may choose; twice that "
            "under cv_rule auto on the questions design)."
        ),
    )
    batch_size: int = field(
        default=32, metadata=_help("Questions per optimizer step (siblings of one chunk never share a batch).")
    )
    lr: float | None = field(
        default=None, metadata=_help("Learning rate (default 3e-4 linear, 5e-4 two-layer, 1e-3 low-rank).")
    )
    optimizer: str = field(default="adamw", metadata=_help("adamw, adam or sgd."))
    weight_decay: float = field(default=0.0, metadata=_help("L2 penalty on the adapter weights (AdamW style)."))
    warmup_ratio: float = field(default=0.1, metadata=_help("Share of steps with a linear learning-rate warm-up."))
    temperature: float = field(
        default=0.05, metadata=_help("Softmax temperature on cosine similarities (LlamaIndex's scale 20 = 0.05).")
    )
    seed: int = field(default=0, metadata=_help("Makes the split, the shuffling and the initialisation repeatable."))
    device: str = field(default="auto", metadata=_help("auto (cuda, mps, cpu) or a torch device string."))
    lr_grid: list[float] = field(
        default_factory=list, metadata=_help("Learning rates cross-validation may choose from (empty = just lr).")
    )
    selection: str = field(
        default="cv",
        metadata=_help(
            "cv: k-fold cross-validation picks the epochs, then a refit on all questions; holdout: one validation "
            "split, best epoch kept; none: train all epochs."
        ),
    )
    cv_folds: int = field(
        default=5, metadata=_help("Folds of the cross-validation (each training question is validated once).")
    )
    cv_design: str = field(
        default="auto",
        metadata=_help(
            "auto: from the evaluation set; questions: new questions about the same chunks; chunks: new documents."
        ),
    )
    cv_fold_order: str = field(
        default="blocks",
        metadata=_help(
            "New-documents design: blocks (each fold one contiguous run of chunks in document order, whole documents "
            "when there are several, as a new document would be) or shuffled (folds of randomly drawn chunks)."
        ),
    )
    cv_validation: str = field(
        default="auto",
        metadata=_help(
            "New-documents design: what a held-out question is ranked against. fold: the held-out chunks only (a new "
            "document searched on its own); corpus: every training chunk too (stricter); auto: fold when the evaluation set's chunks (none named: "
            "the ingested chunks no training question asks about) are the same kinds of text as the training chunks (a "
            "neighbour check), else corpus."
        ),
    )
    shrinkage_grid: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        metadata=_help(
            "Cross-validation also picks alpha from these values and 1: final weights = identity + alpha (trained - "
            "identity) (empty = alpha 1, no shrinkage)."
        ),
    )
    shrinkage_gate: bool = field(
        default=False,
        metadata=_help(
            "Decide between training and the identity on the unshrunk adapter (alpha 1) first, then pick alpha for the "
            "chosen epochs (fewer candidates compete for the train-or-not decision)."
        ),
    )
    cv_rule: str = field(
        default="auto",
        metadata=_help(
            "best: the epochs with the largest out-of-fold gain; one_se_fewer / one_se_more: the fewest / most epochs "
            "within one standard error of it; auto: one_se_more when validating on new questions about the training "
            "chunks (that estimate is biased toward too few epochs), best for new documents."
        ),
    )
    cv_min_gain_se: float = field(
        default=0.0,
        metadata=_help(
            "Train only when the chosen out-of-fold gain exceeds this many standard errors (0: above zero). A margin "
            "makes it rarer that the best of many noisy candidates is trained on data with no signal."
        ),
    )
    unlabelled_negatives: bool = field(
        default=False,
        metadata=_help(
            "Also use chunks without training questions (every ingested chunk) as negatives. Off by default: measured "
            "on new-document and chunk-split protocols, it pushes queries away from the chunks later questions ask about."
        ),
    )
    separate_sources: bool = field(
        default=True,
        metadata=_help(
            "When offline pseudo-queries and written questions (LLM, imported, by hand) ask about separate chunks, "
            "each question's negatives are its own kind's chunks and the chunks both kinds ask about, so the adapter "
            "cannot learn to send each kind of phrasing to its own chunks. Measured: mixed without it, an LLM-style "
            "query lost on the offline questions' chunks (bench/README, 'Offline and written questions on separate "
            "chunks'). Needs the questions' sources: the workspace's record (off: every chunk is every question's "
            "negative)."
        ),
    )
    pseudo_queries: int = field(
        default=0,
        metadata=_help(
            "Per ingested chunk with no training question, this many inverse-cloze pseudo-queries (a sentence of the "
            "chunk, its key word removed) join training as extra positives, at most one chunk per this many real "
            "questions; cross-validation gives held-out chunks theirs too and scores real questions only (0 = off). "
            "Measured with 4: better on new questions about chunks among trained ones, worse on a new document."
        ),
    )
    average_refits: int = field(
        default=1,
        metadata=_help(
            "After cross-validation: refit this many times (same start, other batch orders) and average the weights "
            "(1 = one refit)."
        ),
    )
    sample_negatives_above: int = field(
        default=10_000,
        metadata=_help(
            "corpus_softmax on a corpus of more chunks than this: each step scores the batch's chunks, 32 mined hard "
            "negatives per question and 4,096 random chunks instead of every chunk (0 = never sample)."
        ),
    )
    false_negative_threshold: float = field(
        default=0.95,
        metadata=_help("Chunks this similar (cosine) to a question's own chunk are never its negatives (0 = off)."),
    )
    hard_negatives: int = field(
        default=0,
        metadata=_help(
            "Negatives mined from the base model's ranking, this many per question (excluding near-copies of its chunk): "
            "in_batch adds them to the batch's; corpus_softmax ranks each question among them instead of every chunk "
            "(0 = off)."
        ),
    )
    filter_questions: bool = field(
        default=False,
        metadata=_help(
            "Drop questions that cannot work as search queries ('the passage', no question mark, copies of the chunk)."
        ),
    )
    val_fraction: float = field(
        default=0.15,
        metadata=_help("holdout selection: share of training chunks held out when no validation set is chosen."),
    )
    select_metric: str = field(default="mrr", metadata=_help("Validation metric that picks the best epoch."))
    top_k: int = field(default=5, metadata=_help("k of the validation metrics (hit@k, MRR@k)."))
    checkpoint_every: int = field(
        default=0, metadata=_help("Save a checkpoint every N optimizer steps (0 = at each epoch end).")
    )
    keep_best: bool = field(
        default=True,
        metadata=_help("Keep the best validated state (the untrained identity included), never worse than base."),
    )
    patience: int = field(default=0, metadata=_help("Stop after this many epochs without validation gain (0 = never)."))

    @classmethod
    def llamaindex_defaults(cls, adapter: str = "linear", epochs: int = 4) -> TrainConfig:
        """LlamaIndex's engine settings: AdamW lr 2e-5, batch 10, in-batch loss, scale 20, no selection."""
        return cls(
            adapter=adapter,
            loss=Loss.IN_BATCH.value,
            epochs=epochs,
            batch_size=10,
            lr=2e-5,
            optimizer="adamw",
            warmup_ratio=0.1,
            temperature=0.05,
            val_fraction=0.0,
            keep_best=False,
            selection="none",
            false_negative_threshold=0.0,
        )

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.adapter, FALLBACK_LR)

    def validate(self) -> None:
        if self.loss not in set(Loss):
            raise TrainingError(f"loss must be one of {[str(x) for x in Loss]}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise TrainingError(f"optimizer must be one of {list(OPTIMIZER_NAMES)}, got {self.optimizer!r}")
        if self.epochs < 1:
            raise TrainingError("epochs must be >= 1")
        if self.batch_size < 2 and self.loss in NEEDS_BATCH:
            raise TrainingError("in_batch loss needs batch_size >= 2 (the other chunks of the batch are the negatives)")
        if self.batch_size < 1:
            raise TrainingError("batch_size must be >= 1")
        if not (self.lr > 0):
            raise TrainingError("lr must be > 0")
        if not (self.temperature > 0):
            raise TrainingError("temperature must be > 0")
        if not (0 <= self.val_fraction < 0.9):
            raise TrainingError("val_fraction must be in [0, 0.9)")
        if not (0 <= self.warmup_ratio < 1):
            raise TrainingError("warmup_ratio must be in [0, 1)")
        if self.select_metric not in ("mrr", "hit", "ndcg"):
            raise TrainingError("select_metric must be mrr, hit or ndcg")
        from .embedders import pick_device

        try:
            pick_device(self.device)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if self.top_k < 1:
            raise TrainingError("top_k must be >= 1")
        if self.selection not in SELECTIONS:
            raise TrainingError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.cv_design not in sel.DESIGNS:
            raise TrainingError(f"cv_design must be one of {sel.DESIGNS}, got {self.cv_design!r}")
        if self.cv_validation not in sel.VALIDATIONS:
            raise TrainingError(f"cv_validation must be one of {sel.VALIDATIONS}, got {self.cv_validation!r}")
        if self.cv_fold_order not in ("shuffled", "blocks"):
            raise TrainingError(f"cv_fold_order must be 'shuffled' or 'blocks', got {self.cv_fold_order!r}")
        if any(not (0 < x <= 1) for x in self.shrinkage_grid):
            raise TrainingError("every shrinkage_grid value must be in (0, 1]")
        if self.cv_rule not in sel.RULES:
            raise TrainingError(f"cv_rule must be one of {sel.RULES}, got {self.cv_rule!r}")
        if self.selection == "cv" and self.cv_folds < 2:
            raise TrainingError("cv_folds must be >= 2")
        if any(not (x > 0) for x in self.lr_grid):
            raise TrainingError("every lr_grid value must be > 0")
        if not (0 <= self.false_negative_threshold <= 1):
            raise TrainingError("false_negative_threshold must be in [0, 1] (0 = off)")
        if self.sample_negatives_above < 0:
            raise TrainingError("sample_negatives_above must be >= 0 (0 = never sample)")
        if self.average_refits < 1:
            raise TrainingError("average_refits must be >= 1")
        if self.pseudo_queries < 0:
            raise TrainingError("pseudo_queries must be >= 0 (0 = off)")
        if self.hard_negatives < 0:
            raise TrainingError("hard_negatives must be >= 0")
        if not isinstance(self.adapter_kwargs, dict) or "allow_custom_code" in self.adapter_kwargs:
            raise TrainingError(
                "adapter_kwargs must be a JSON object of constructor arguments "
                "(allow_custom_code is not one: it is the user's own choice)"
            )
        for name in ("weight_decay", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        from .adapters import check_adapter_sizes

        try:
            check_adapter_sizes(self.adapter_kwargs)
        except ValueError as exc:
            raise TrainingError(f"adapter_kwargs: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainingError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


#: One line of help per :class:`TrainConfig` field, read from the fields' metadata (the dashboard
#: and the CLI show these next to each input).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(TrainConfig)}
