"""Hyperparameter search with Optuna (``nntrain tune``): a sampler proposes each trial's
values, every evaluation is reported to the study, and a pruner stops hopeless trials.

Each trial is an ordinary ``nntrain fit`` run directory inside the study directory, so
``nntrain compare``, ``plot`` and ``eval`` work on trials as on any run. On disk::

    STUDY/study.db              the Optuna storage (default; --storage chooses another)
    STUDY/tune.json             what is tuned: config hash, --param, --monitor, storage, study id
    STUDY/trial-NNNN/           trial NNNN's run directory (nntrain.rundir's layout); a pruned
                                one has stop_reason "pruned" in its summary.json
    STUDY/best.yaml             the resolved config of the best trial, for nntrain fit
    STUDY/locks/                study.lock (claiming trials), trial-NNNN.lock (held while
                                the trial trains: a free lock on a RUNNING trial = an orphan)
    STUDY/logs/worker-K.log     the output of --jobs worker K

Modules, one job each (Optuna is imported inside functions: ``nntrain --help`` stays fast,
and without Optuna only ``tune`` fails, saying how to install it)::

    space.py     --param (the sweep's grammar) -> Optuna's suggest_*; the up-front check
    study.py     the plan (Tune), the storage URL, sampler, pruner, the study and its identity,
                 the file locks
    pruning.py   OptunaPruning: the training-loop hook that reports and prunes
    worker.py    one process: claim a trial (new, or an orphan to resume), train it, tell
    jobs.py      --jobs J: J worker processes with cores/J threads, Ctrl-C forwarded
    report.py    a line per trial, the study's state, the best trial and best.yaml
"""

from .study import INSTALL, MONITORS, PRUNERS, SAMPLERS, Tune, plan_tune

__all__ = ["INSTALL", "MONITORS", "PRUNERS", "SAMPLERS", "Tune", "plan_tune"]
