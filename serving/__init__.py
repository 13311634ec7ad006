"""BentoML prediction service of shopml (see :mod:`serving.service`).

Importing this package sets ``OPENBLAS_NUM_THREADS=1`` and ``OMP_WAIT_POLICY=PASSIVE`` unless they
are set already: implicit's per-request work is far faster single-threaded (STACK_NOTES.md), and
the variables only take effect if set before numpy is first imported.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
