"""Training and evaluation of the built-in toy VideoLLM ``tl-video/toy-temporal``.

``python -m tl_video.training.train_toy --out tl_video/builtin/toy_temporal --seed 0`` rebuilds the
shipped checkpoint; :func:`evaluate_toy` measures clean / frozen / reversed accuracy per task of
any loaded model on the synthetic temporal benchmark.
"""

from tl_video.training.evaluate_toy import CONDITIONS, REVERSIBLE_TASKS, TaskAccuracy, ToyEvaluation, evaluate_toy

__all__ = ["CONDITIONS", "REVERSIBLE_TASKS", "TaskAccuracy", "ToyEvaluation", "evaluate_toy"]
