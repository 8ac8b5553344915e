"""Hyperparameter studies on Optuna over registry jobs (``ctxsim tune``; issue 16).

``space`` parses ``--space key=kind(args)`` into Optuna distributions; ``study`` keeps the study in
Optuna's RDB storage on the registry database and runs its trials as registry jobs (workers or this
process); ``summary`` words a study for ``ctxsim tune show``. Layer: above ctxsim.runner (may import
runner, registry, train and the core packages; nothing imports it but the CLI).
"""

from ctxsim.tuning.space import Param, parse_param, parse_space
from ctxsim.tuning.study import Tuner, TuneResult, TuneSpec, build_spec, load_existing, storage, study_tag, val_key
from ctxsim.tuning.summary import StudyReader, list_studies, study_summary

__all__ = ["Param", "parse_param", "parse_space", "TuneSpec", "TuneResult", "Tuner", "build_spec", "load_existing",
           "storage", "study_tag", "val_key", "study_summary", "list_studies", "StudyReader"]
