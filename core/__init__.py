"""AdapterLab core: from PDFs to a proven, exportable embedding adapter, without Streamlit.

Modules, one concept each (see their docstrings):

* ``workspace``   where everything lives: SQLite catalog + files, atomic writes
* ``documents``   PDF -> pages -> chunks with stable ids
* ``datasets``    the LlamaIndex-compatible question/context dataset type
* ``questions``   question generators (LLM, offline), parsing, dedup, splits, dataset registry
* ``pseudo_queries``  offline methods beyond keywords (inverse cloze, headings, mixture) and their registry
* ``llm``         one OpenAI-compatible chat client with retries and bounded concurrency
* ``embedders``   the Embedder protocol, sentence-transformers, OpenAI-compatible API, the cache
* ``adapters``    linear / two-layer / custom adapters, LlamaIndex folder format
* ``training``    training on cached embeddings, validation, best-state selection, checkpoints
* ``finetune``    the full fine-tune reference (sentence-transformers' trainer; re-embeds the corpus)
* ``evaluation``  hit@k, MRR@k, nDCG@10, recall@k, comparisons with significance
* ``runs``        training runs kept in the workspace (kind adapter or finetune)
* ``jobs``/``launch``  background jobs the dashboard launches (training: ``run_process``)
* ``status``      job/run statuses, heartbeat and owner-process checks (defined once)
* ``reports``     saved comparisons, charts, HTML/CSV export
* ``cli``         ``python -m core``
"""

__version__ = "0.1.0"
