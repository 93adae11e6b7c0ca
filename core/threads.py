"""How torch's idle worker threads wait, set once when an AdapterLab process starts.

torch's CPU kernels run on OpenMP threads. By default an idle OpenMP thread spins for a while
before it sleeps, so every small parallel operation (a training step on a 384 x 384 adapter, a
one-text encode) makes the other thread burn a core waiting. On a machine whose cores are also
busy with other work, the spinning thread competes with the one doing the work: a 4-epoch linear
training on cached vectors measured 4.6 s with the default and 0.8-0.9 s with passive waiting on
the project's loaded 2-core box (bench/README.md, "Cold run vs LlamaIndex's engine").

Passive waiting changes only how idle threads wait, never how work is split among them, so
vectors and trained weights stay bit-identical (``tests/test_threads.py``). The entry points
(``python -m core``, ``python -m core.run_process``) call :func:`prefer_passive_waiting` before
anything imports torch: the OpenMP runtime reads the setting when it loads. A value the user set
(``OMP_WAIT_POLICY=ACTIVE`` for a dedicated machine) is kept.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def prefer_passive_waiting(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is already set; True if it was set here.

    Call it before torch is imported (later it changes nothing in this process, only children).
    """
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY"):
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
