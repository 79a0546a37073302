"""Data parallelism: the processes, and the shared memory they exchange arrays through.

Read in this order: ``data_parallel.py`` (``DataParallel``: one batch shared by worker
processes, the whole protocol), ``worker.py`` (the messages and the loop a worker runs),
``shared_arrays.py`` (NumPy arrays in shared memory), ``memory.py`` (keeping freed memory
in the process).
"""

from nn.parallel.data_parallel import BOX_BYTES, DataParallel, WorkerError, split
from nn.parallel.memory import retain_freed_memory

__all__ = ["BOX_BYTES", "DataParallel", "WorkerError", "retain_freed_memory", "split"]
