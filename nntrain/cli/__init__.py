"""The ``nntrain`` command: thin click commands over the library.

One module per command group, each a click command registered on ``main`` here:

    fit.py        fit                train an experiment / resume a run
    evaluate.py   eval, show         score a saved model; resolved config and layer table
    gradcheck.py  gradcheck          finite-difference check of a network
    data.py       data fetch         download a data set
    export.py     export             a saved model as ONNX
    tune.py       tune               hyperparameter search with Optuna (nntrain.tune)
    sweep.py      sweep, compare,    many runs of one experiment; a table of runs;
                  plot               their curves
    common.py     the error wrapper (one message and an exit code), --debug, --set

A new command goes in its group's module (or a new one) and is added to ``main`` below.
Heavy imports (numpy and the engine) happen inside the commands, so ``--help`` is fast.
Exit codes: see nntrain.cli.common.
"""

from __future__ import annotations

import click

from . import data, evaluate, export, fit, gradcheck, sweep, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nntrain", message="nntrain %(version)s")
def main():
    """Train neural networks written from scratch on numpy, from YAML experiment files.

    \b
    nntrain fit configs/quickstart.yaml            train; writes runs/<name>-<time>/
    nntrain eval runs/RUN/checkpoints/best.npz     score a saved model
    nntrain show configs/cifar10_quick.yaml        resolved config and layer table
    nntrain gradcheck configs/quickstart.yaml      finite-difference check of the network
    nntrain data fetch cifar10                     download an official data set
    nntrain sweep exp.yaml --grid optimizer.lr=0.1,0.01 --jobs 2
    nntrain compare sweeps/exp-*/ --sort val_error
    nntrain plot runs/a runs/b -o curves.png
    nntrain export runs/RUN -o model.onnx          the model as ONNX (raw images in)
    nntrain tune exp.yaml --param "optimizer.lr=loguniform(1e-4,0.3)" --trials 30
    """


for _command in (fit.fit, evaluate.eval_, evaluate.show, gradcheck.gradcheck, data.data,
                 sweep.sweep, sweep.compare, sweep.plot, export.export, tune.tune):
    main.add_command(_command)

__all__ = ["main"]
