"""Running one ``symgen generate`` over several processes, on an existing engine: Accelerate.

``accelerate launch --num_processes N -m symgen_datasets.cli generate ...`` (or ``torchrun``)
starts N copies of the command. The main process (rank 0) reads or generates the questions and
writes them to the work folder; every process then answers and verifies its shard, taken with
:func:`datasets.distributed.split_dataset_by_node` (contiguous, so the shards in rank order are
the questions in order); the main process merges the verified shards and writes the dataset. A
candidate's seed derives from its question's number in the whole run, so the merged dataset
equals the one a single process writes.

The processes share the run's work folder (one machine, or a shared file system): the question
file, the shards and the response cache (SQLite in WAL mode; writers wait for each other).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Node:
    """This process's place in the run.

    Attributes:
        rank: the process index, 0 to ``world_size - 1`` (0 is the main process).
        world_size: processes in the run (1 when not launched by Accelerate or torchrun).
    """

    rank: int = 0
    world_size: int = 1
    _state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        """A barrier across the processes (no-op for one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every process, in rank order (picklable values; ``[value]`` for one
        process)."""
        if self._state is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def leave(self) -> None:
        """Leave the process group (no-op for one process). A process that exits without
        leaving may abort at exit (gloo's threads are torn down while still running)."""
        if self._state is not None:
            self._state.destroy_process_group()
            self._state = None


def current_node() -> Node:
    """The :class:`Node` of this process: from the environment that ``accelerate launch`` and
    ``torchrun`` set (``WORLD_SIZE``, ``RANK``), joining their process group (gloo, CPU: the
    processes exchange only small objects); a single process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Node()
    from accelerate import PartialState

    state = PartialState(cpu=True)
    return Node(state.process_index, state.num_processes, state)
