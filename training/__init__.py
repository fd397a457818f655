"""Training small task models on symgen datasets: :mod:`.finetune` (the Accelerate script behind
``symgen train``) and :mod:`.task_model` (how a model reads a task's input and writes its
program, for training and for ``symgen evaluate``). Installed as ``symgen_datasets.training``."""
