"""Work queues: the task broker service (``zmicro.queue:TaskQueue``) and its storage.

Serve it with ``zmicro run zmicro.queue:TaskQueue --bind tcp://127.0.0.1:5570``; mark
handlers with ``@zmicro.task``; hand work over with ``client.submit``. See
``docs/tasks.md`` for what is guaranteed and what is not.
"""

from __future__ import annotations

from ._broker import TaskQueue as TaskQueue
from ._broker import default_path as default_path
from ._store import Lease as Lease
from ._store import QueueFullError as QueueFullError
from ._store import TaskStore as TaskStore

__all__ = ("Lease", "QueueFullError", "TaskQueue", "TaskStore", "default_path")
