"""The task registry: every task installed, found through Python entry points.

A task is registered under the entry-point group ``symgen_datasets.tasks``: the entry's name is
the task's name and its object a :class:`Task` instance (or a function returning one). The
built-in tasks are registered this way too (``setup.cfg``), so a task in another installed
package is found exactly like them::

    # pyproject.toml of a package of your own
    [project.entry-points."symgen_datasets.tasks"]
    my_task = "my_package.task:MY_TASK"

``get_task(name)`` loads one task (importing only its module); ``registered_tasks()`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ..errors import InputError
from .base import SamplingDefaults, Task, TaskKnowledge, TaskOption, check_aligned, fenced_code, question_key

#: The entry-point group tasks are registered under.
ENTRY_POINT_GROUP = "symgen_datasets.tasks"


@dataclass(frozen=True)
class RegisteredTask:
    """A registry entry: the task's name, where it comes from, and how to load it.

    Attributes:
        name: the task's name.
        source: the distribution that registers it, ``name version``.
        target: the entry point's object reference, ``module:attribute``.
    """

    name: str
    source: str
    target: str
    entry_point: EntryPoint

    def load(self) -> Task:
        """The :class:`Task` (the entry's object, or what it returns when it is a function).

        Raises:
            InputError: the entry cannot be imported or is not a task of this name.
        """
        try:
            loaded = self.entry_point.load()
            task = loaded() if callable(loaded) and not isinstance(loaded, Task) else loaded
        except (Exception, SystemExit) as error:  # noqa: BLE001 - a broken plugin (even one calling sys.exit on
            # import) must not hide the others, nor end the command
            raise InputError(f"task {self.name!r} from {self.source} ({self.target}) cannot be loaded: "
                             f"{type(error).__name__}: {error}") from None
        if not isinstance(task, Task):
            raise InputError(f"task {self.name!r} from {self.source} ({self.target}) is a {type(task).__name__}, "
                             "not a symgen_datasets.tasks.Task")
        if task.name != self.name:
            raise InputError(f"task {self.name!r} from {self.source} ({self.target}) calls itself {task.name!r}; "
                             "the entry-point name and Task.name must be the same")
        return task


def registered_tasks() -> dict[str, RegisteredTask]:
    """Every task registered under :data:`ENTRY_POINT_GROUP`, by name (nothing is imported).

    Raises:
        InputError: two installed packages register the same name.
    """
    found: dict[str, RegisteredTask] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else "?"
        if entry.name in found and found[entry.name].target != entry.value:
            raise InputError(f"task {entry.name!r} is registered twice: by {found[entry.name].source} "
                             f"({found[entry.name].target}) and by {source} ({entry.value}); uninstall one")
        found[entry.name] = RegisteredTask(entry.name, source, entry.value, entry)
    return dict(sorted(found.items()))


def get_task(name: str) -> Task:
    """The registered task called ``name``.

    Raises:
        InputError: unknown task (the message lists the known ones), or a task that cannot be
            loaded.
    """
    tasks = registered_tasks()
    if name not in tasks:
        known = ", ".join(tasks) or "none (is symgen-datasets installed? pip install -e .)"
        raise InputError(f"unknown task {name!r}; known tasks: {known}")
    return tasks[name].load()


__all__ = [
    "ENTRY_POINT_GROUP",
    "InputError",
    "check_aligned",
    "fenced_code",
    "RegisteredTask",
    "SamplingDefaults",
    "Task",
    "TaskKnowledge",
    "TaskOption",
    "get_task",
    "question_key",
    "registered_tasks",
]
