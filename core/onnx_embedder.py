"""A local sentence-transformers model run by ONNX Runtime, fp32 or with int8 weights.

Spec: ``<model>@onnx-int8`` or ``<model>@onnx-fp32`` (``default@onnx-int8`` is the bundled
all-MiniLM-L6-v2); ``<model>@torch`` or no suffix is the PyTorch backend
(:class:`core.embedders.SentenceTransformerEmbedder`). See :func:`split_backend`.

Built without optimum (its exporter pins transformers < 4.58, below this project's pin): the
transformer is exported once with ``torch.onnx.export`` (the TorchScript exporter, dynamic batch
and sequence axes) into ``<workspace>/models/onnx/<model identity>/model_fp32.onnx``, checked
against the torch model on a sample batch, and quantised with onnxruntime's ``quantize_dynamic``
(int8 weights, activations quantised on the fly) into ``model_int8.onnx``. ``manifest.json``
beside them names the source model (identity, path, fingerprint of its weight files), the
pipeline and a sha256 per file; a file that is missing, fails its checksum or belongs to other
weights is exported again, so a warm start only hashes and loads.

The rest of the sentence-transformers pipeline is read from the model folder, not assumed:
``modules.json`` (Transformer, Pooling, optional Normalize; anything else is refused with a
message pointing to the torch backend), the pooling config (cls / mean / max / mean_sqrt_len)
and ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``). Tokenisation is the
model's own tokenizer through ``transformers.AutoTokenizer`` (local files only).

Dynamic quantisation picks the activations' int8 scale per batch, so a text's int8 vector moves a
little with the batch it is embedded in (cosine > 0.98 between batches; the cache keeps the first).

The identity is the torch backend's plus ``#onnx-int8`` / ``#onnx-fp32``, so these vectors are
cached apart from the fp32 torch ones and never mixed with them. Constructing one loads nothing
(identity and dimension come from the folder's JSON files): a warm run imports neither
transformers nor onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .hashing import file_sha256
from .progress import Progress

log = logging.getLogger(__name__)

#: backend name -> ONNX precision ("" = the torch backend)
BACKENDS = {"torch": "", "onnx-int8": "int8", "onnx-fp32": "fp32"}
BACKEND_LABELS = {
    "torch": "PyTorch (sentence-transformers)",
    "onnx-int8": "ONNX Runtime, int8 weights (exported once into the workspace)",
    "onnx-fp32": "ONNX Runtime, fp32 (exported once into the workspace)",
}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
OPSET = 17
_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len")
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


class OnnxBackendError(RuntimeError):
    """Raised as :class:`core.embedders.EmbedderError` (a subclass) by the embedder; kept separate
    here only so this module does not import core.embedders at import time."""


def split_backend(spec: str) -> tuple[str, str]:
    """``"default@onnx-int8"`` -> ``("default", "onnx-int8")``; no known suffix -> ``(spec, "torch")``."""
    spec = (spec or "").strip()
    head, sep, tail = spec.rpartition("@")
    if sep and tail.strip().lower() in BACKENDS:
        return head.strip(), tail.strip().lower()
    return spec, "torch"


def with_backend(spec: str, backend: str) -> str:
    """The spec for ``spec``'s model on ``backend`` (``torch`` adds no suffix)."""
    base, _ = split_backend(spec)
    base = base or "default"
    return base if backend in ("", "torch") else f"{base}@{backend}"


def default_models_dir() -> Path:
    """Where exports go when no workspace is given: ``$ADAPTERLAB_WORKSPACE/models/onnx``, else
    ``~/.cache/adapterlab/onnx``."""
    ws = os.environ.get("ADAPTERLAB_WORKSPACE")
    return Path(ws) / "models" / "onnx" if ws else Path.home() / ".cache" / "adapterlab" / "onnx"


# ------------------------------------------------------------------------------------------------
# the model folder's pipeline
# ------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OnnxBackendError(f"{path} is not readable JSON ({exc}).") from exc


def tokenizer_max_length(folder: str | os.PathLike) -> int | None:
    """The input length a folder's tokenizer config declares (``model_max_length``, capped at the model's
    ``max_position_embeddings``), or ``None``. sentence-transformers 6 saves a model's ``max_seq_length``
    there only (its ``sentence_bert_config.json`` no longer carries it; AdapterLab's own fine-tunes are
    such folders), and reads it back from there: a reader that missed it ran a 256-token model at 512
    tokens, twice the cost and other vectors. transformers writes about 1e30 for "no limit": ignored."""
    folder = Path(folder)
    n = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if not isinstance(n, int | float) or not 0 < n < 1_000_000:
        return None
    cap = _read_json(folder / "config.json").get("max_position_embeddings")
    return int(min(n, cap)) if isinstance(cap, int) and cap > 0 else int(n)


def position_limit(folder: str | os.PathLike) -> int | None:
    """The most tokens a folder's model reads at all: its ``max_position_embeddings`` (at most 512, the
    limit of BERT-family position tables; RoBERTa's 514 count 2 reserved slots), or ``None``."""
    return positions_cap(_read_json(Path(folder) / "config.json").get("max_position_embeddings"))


def positions_cap(max_position_embeddings: object) -> int | None:
    """:func:`position_limit`'s rule for a config's ``max_position_embeddings`` value (a loaded model's too)."""
    cap = max_position_embeddings
    return min(int(cap), 512) if isinstance(cap, int) and cap > 0 else None


def tokenizer_only_length(folder: str | os.PathLike) -> int | None:
    """:func:`tokenizer_max_length` for a folder whose ``sentence_bert_config.json`` has no ``max_seq_length``
    (sentence-transformers 6 folders, AdapterLab's fine-tunes), else ``None``."""
    if _read_json(Path(folder) / "sentence_bert_config.json").get("max_seq_length"):
        return None
    return tokenizer_max_length(folder)


def read_pipeline(folder: str | os.PathLike) -> dict:
    """The sentence-transformers pipeline of a model folder, as the ONNX backend runs it.

    Returns ``{"pooling": [modes], "normalize": bool, "max_seq_length": int | None,
    "do_lower_case": bool, "dimension": int}``. Raises :class:`OnnxBackendError` for a pipeline it
    cannot reproduce exactly (a Dense layer, a router, a prompt applied by default, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OnnxBackendError(
            f"The ONNX backend needs a local model folder; {str(folder)!r} is not one. Use 'default' (the "
            "bundled model) or the path of a sentence-transformers folder, or drop '@onnx-...' for the torch backend."
        )
    modules = _read_json(folder / "modules.json")
    if not modules:
        raise OnnxBackendError(
            f"{folder} has no modules.json: not a sentence-transformers folder the ONNX backend reads."
        )
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or (modules[0].get("path") or "") not in ("", "."):
        raise OnnxBackendError(f"{folder}: the ONNX backend needs a Transformer module first, found {kinds}.")
    rest = kinds[1:]
    if rest[:1] != ["Pooling"] or any(k != "Normalize" for k in rest[1:]):
        raise OnnxBackendError(
            f"{folder}: modules {kinds} are not Transformer -> Pooling [-> Normalize]; the ONNX backend reproduces "
            "only that pipeline. Use the torch backend (no '@onnx-...' suffix) for this model."
        )
    pool_cfg = _read_json(folder / (modules[1].get("path") or "1_Pooling") / "config.json")
    if "pooling_mode" in pool_cfg:
        raw = pool_cfg["pooling_mode"]
        modes = [raw] if isinstance(raw, str) else list(raw)
    else:
        modes = [mode for key, mode in _LEGACY_POOLING.items() if pool_cfg.get(key)]
        for key in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"):
            if pool_cfg.get(key):
                modes.append(key)
    bad = [m for m in modes if m not in _POOLING_MODES]
    if not modes or bad:
        raise OnnxBackendError(
            f"{folder}: pooling {modes or 'none'} is not one the ONNX backend reproduces ({', '.join(_POOLING_MODES)}). "
            "Use the torch backend for this model."
        )
    if pool_cfg.get("include_prompt") is False:
        raise OnnxBackendError(f"{folder}: pooling that excludes the prompt is not reproduced by the ONNX backend.")
    st_cfg = _read_json(folder / "config_sentence_transformers.json")
    if st_cfg.get("default_prompt_name"):
        raise OnnxBackendError(
            f"{folder}: the model applies the prompt {st_cfg['default_prompt_name']!r} by default; the ONNX backend "
            "does not. Use the torch backend, or give the prompt as a query/passage prefix."
        )
    sbert = _read_json(folder / "sentence_bert_config.json")
    dim = pool_cfg.get("word_embedding_dimension") or pool_cfg.get("embedding_dimension")
    if not dim:
        hf = _read_json(folder / "config.json")
        dim = hf.get("hidden_size") or hf.get("d_model") or hf.get("dim")
    if not dim:
        raise OnnxBackendError(f"{folder}: no embedding dimension in the pooling config nor in config.json.")
    max_len = sbert.get("max_seq_length") or tokenizer_max_length(folder)
    return {
        "pooling": modes,
        "normalize": "Normalize" in rest,
        "max_seq_length": int(max_len) if max_len else None,
        "do_lower_case": bool(sbert.get("do_lower_case", False)),
        "dimension": int(dim) * len(modes),
    }


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, modes: Sequence[str], normalize: bool) -> np.ndarray:
    """Sentence vectors from token vectors, as sentence-transformers' Pooling (+ Normalize) makes them."""
    x = token_embeddings.astype(np.float32, copy=False)
    mask = attention_mask.astype(np.float32)[:, :, None]
    out = []
    for mode in modes:
        if mode == "cls":
            first = np.argmax(attention_mask, axis=1)  # the first real token (right or left padding)
            out.append(x[np.arange(x.shape[0]), first])
        elif mode == "max":
            out.append(np.where(mask > 0, x, -1e9).max(axis=1))
        else:
            summed = (x * mask).sum(axis=1)
            n = np.clip(mask.sum(axis=1), 1e-9, None)
            out.append(summed / (n if mode == "mean" else np.sqrt(n)))
    vec = np.concatenate(out, axis=1) if len(out) > 1 else out[0]
    if normalize:
        vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
    return np.ascontiguousarray(vec, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# export (once per model and workspace)
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _folder_lock(folder: Path):
    """One exporter per folder at a time (a page and a training job may ask together)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, writes stay atomic
        yield
        return
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_tokenizer(path: str):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # long chunks are counted on purpose
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def export_fp32(model_path: str, out: Path, tokenizer) -> list[str]:
    """Export the transformer of ``model_path`` to ``out`` (token embeddings, dynamic batch and
    sequence), check it against torch on a sample batch, and return its input names."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path, local_files_only=True, attn_implementation="eager")
    sample = ["A short text.", "A somewhat longer text, so that the batch has padding in it to mask."]
    enc = tokenizer(sample, padding=True, return_tensors="pt")
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc and n in accepted]

    class _TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    wrapper = _TokenEmbeddings(model).eval()  # eval on the wrapper: export restores the wrapper's mode
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    dyn = {n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(enc[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_axes=dyn,
                opset_version=OPSET,
                dynamo=False,
            )
        import onnxruntime as ort

        check = tokenizer(sample + ["x"], padding=True, return_tensors="pt")  # another shape than the export's
        with torch.no_grad():
            ref = wrapper(*(check[n] for n in names)).numpy()
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(
            None, {n: check[n].numpy() for n in names}
        )[0]
        mask = check["attention_mask"].numpy().astype(bool)
        err = float(np.abs(got - ref)[mask].max())
        if not err < 1e-3:
            raise OnnxBackendError(
                f"The ONNX export of {model_path} does not reproduce the torch model (max token error {err:.2e}); "
                "use the torch backend for this model."
            )
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return names


#: How model_int8.onnx is made (recorded per file: a file made another way is quantised again).
#: Per-channel weights: per-tensor int8 moved MiniLM's vectors to cosine 0.88 (min) / 0.95 (mean)
#: of the torch ones on 300 Lyft texts; per-channel keeps 0.987 / 0.994 at the same speed.
QUANT_RECIPE = "quantize_dynamic: MatMul weights QInt8 per channel, activations QUInt8 at run time"


def quantize_int8(src: Path, out: Path) -> None:
    """Dynamic quantisation (:data:`QUANT_RECIPE`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    qlog = logging.getLogger()  # quantize_dynamic advises pre-processing on the root logger
    level = qlog.level
    qlog.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
        os.replace(tmp, out)
    finally:
        qlog.setLevel(level)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ------------------------------------------------------------------------------------------------
# the embedder
# ------------------------------------------------------------------------------------------------
class OnnxEmbedder:
    """A local sentence-transformers model on ONNX Runtime (CPU).

    Args:
        model: ``"default"`` (bundled all-MiniLM-L6-v2) or a local sentence-transformers folder.
        precision: ``"int8"`` (dynamically quantised weights) or ``"fp32"``.
        models_dir: where exports live (``<workspace>/models/onnx``); one sub-folder per model.
        query_prefix / passage_prefix: as for the torch backend; part of the identity.
        batch_size: texts per ONNX run.
        threads: intra-op threads for ONNX Runtime (0 = its default, one per physical core).
    """

    def __init__(
        self,
        model: str = "default",
        precision: str = "int8",
        models_dir: str | os.PathLike | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
        threads: int = 0,
    ):
        from .embedders import EmbedderError, SentenceTransformerEmbedder

        if precision not in ("int8", "fp32"):
            raise EmbedderError(f"ONNX precision {precision!r}: choose int8 or fp32.")
        torch_twin = SentenceTransformerEmbedder(model, query_prefix, passage_prefix, device="cpu")  # loads nothing
        self.name = model
        self.path = torch_twin.path
        self.precision = precision
        self.backend = f"onnx-{precision}"
        self.label = f"{torch_twin.label} · ONNX {precision}"
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self.threads = threads
        self.source_identity = torch_twin.model_identity
        self.cache_identity = torch_twin.model_identity + f"#{self.backend}"  # less the prefixes (see CachedEmbedder)
        self.identity = self.cache_identity + torch_twin.prefix_identity
        try:
            self.pipeline = read_pipeline(self.path)
        except OnnxBackendError as exc:
            raise EmbedderError(str(exc)) from exc
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.source_identity).strip("._") or "model"
        self.folder = Path(models_dir or default_models_dir()) / slug
        self._session = None
        self._tokenizer = None
        self._input_names: list[str] = []
        self.export_seconds = 0.0  # > 0 when this instance exported (or re-exported) the model

    # -- cheap facts ---------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def dimension(self) -> int:
        return int(self.pipeline["dimension"])

    @property
    def max_seq_length(self) -> int | None:
        return self.pipeline["max_seq_length"]

    @property
    def model_file(self) -> Path:
        return self.folder / f"model_{self.precision}.onnx"

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _load_tokenizer(self.path)
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    def token_counter(self) -> Callable[[str], int]:
        fn = self.count_tokens
        counter = lambda text: fn(text)  # noqa: E731
        counter.batch = self.count_tokens_batch  # type: ignore[attr-defined]
        return counter

    # -- export and load -----------------------------------------------------------------------
    def _manifest_ok(self, manifest: dict, fingerprint: str, name: str) -> bool:
        entry = (manifest.get("files") or {}).get(name) or {}
        path = self.folder / name
        if (
            manifest.get("format") != MANIFEST_FORMAT
            or (manifest.get("source") or {}).get("fingerprint") != fingerprint
        ):
            return False
        if not entry or not path.is_file() or entry.get("recipe", "") != (QUANT_RECIPE if "int8" in name else ""):
            return False
        if path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
            log.warning("%s does not match its checksum in %s: exporting it again", path, MANIFEST)
            return False
        return True

    def ensure_exported(self) -> Path:
        """The ONNX file for this precision, exported (and quantised) now if the workspace lacks a
        valid one; returns its path. Re-exports a file that is missing, corrupt or stale."""
        from .embedders import EmbedderError
        from .finetune import weights_fingerprint
        from .workspace import atomic_write_json

        fingerprint = weights_fingerprint(self.path)
        with _folder_lock(self.folder):
            manifest = _read_json(self.folder / MANIFEST) if (self.folder / MANIFEST).is_file() else {}
            target = self.model_file.name
            if self._manifest_ok(manifest, fingerprint, target):
                self._input_names = list(manifest.get("inputs") or [])
                return self.model_file
            started = time.monotonic()
            log.info("exporting %s to ONNX (%s) in %s", self.source_identity, self.precision, self.folder)
            try:
                import onnxruntime
                import torch
                import transformers
            except ImportError as exc:
                raise EmbedderError(
                    f"The ONNX backend needs onnxruntime and onnx ({exc}): pip install -r requirements.txt"
                ) from exc
            ok_fp32 = self._manifest_ok(manifest, fingerprint, "model_fp32.onnx")
            if not ok_fp32:
                manifest = {"files": {}}
            try:
                if not ok_fp32:
                    manifest["inputs"] = export_fp32(self.path, self.folder / "model_fp32.onnx", self.tokenizer)
                if self.precision == "int8":
                    quantize_int8(self.folder / "model_fp32.onnx", self.model_file)
            except OnnxBackendError as exc:
                raise EmbedderError(str(exc)) from exc
            except Exception as exc:
                raise EmbedderError(
                    f"Exporting {self.source_identity} to ONNX failed: {type(exc).__name__}: {exc}. "
                    "Use the torch backend (no '@onnx-...' suffix) for this model."
                ) from exc
            files = dict(manifest.get("files") or {})
            for name in {"model_fp32.onnx", target}:
                p = self.folder / name
                files[name] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
                if "int8" in name:
                    files[name]["recipe"] = QUANT_RECIPE
            manifest.update(
                {
                    "format": MANIFEST_FORMAT,
                    "source": {"identity": self.source_identity, "path": self.path, "fingerprint": fingerprint},
                    "pipeline": self.pipeline,
                    "opset": OPSET,
                    "versions": {
                        "torch": torch.__version__,
                        "transformers": transformers.__version__,
                        "onnxruntime": onnxruntime.__version__,
                    },
                    "files": files,
                }
            )
            atomic_write_json(self.folder / MANIFEST, manifest)
            self._input_names = list(manifest["inputs"])
            self.export_seconds = time.monotonic() - started
            return self.model_file

    @property
    def session(self):
        if self._session is None:
            from .embedders import EmbedderError

            path = self.ensure_exported()
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = int(self.threads)
            try:
                self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise EmbedderError(
                    f"ONNX Runtime could not load {path} ({exc}). Delete {self.folder} to export it again, "
                    "or use the torch backend (no '@onnx-...' suffix)."
                ) from exc
            self._input_names = [i.name for i in self._session.get_inputs()]
        return self._session

    # -- embedding -----------------------------------------------------------------------------
    def _run(self, texts: list[str]) -> np.ndarray:
        if self.pipeline["do_lower_case"]:
            texts = [t.lower() for t in texts]
        enc = self.tokenizer(
            texts, padding=True, truncation="longest_first", max_length=self.max_seq_length, return_tensors="np"
        )
        session = self.session
        feed = {}
        for name in self._input_names:
            arr = enc[name] if name in enc else np.zeros_like(enc["input_ids"])
            feed[name] = np.asarray(arr, dtype=np.int64)
        tokens = session.run(None, feed)[0]
        return pool(tokens, enc["attention_mask"], self.pipeline["pooling"], self.pipeline["normalize"])

    def _encode(self, texts: Sequence[str], prefix: str, progress: Progress | None) -> np.ndarray:
        from .embedders import format_eta, format_rate

        texts = [prefix + t for t in texts]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths per batch
        started = time.monotonic()
        step = max(self.batch_size, 1)
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            out[idx] = self._run([texts[i] for i in idx])
            if progress:
                done = min(start + step, len(texts))
                per_s = done / max(time.monotonic() - started, 1e-6)
                left = f" · {format_eta((len(texts) - done) / per_s)} left" if done < len(texts) else ""
                progress(done, len(texts), f"embedding · {format_rate(per_s)} texts/s{left}")
        return out

    def embed_queries(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.query_prefix, progress)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self._encode(texts, self.passage_prefix, progress)
