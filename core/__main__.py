import sys

from .threads import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: idle threads sleep instead of spinning (core/threads.py)

from .cli import main  # noqa: E402

sys.exit(main())
