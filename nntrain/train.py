"""The training loop: mini-batch SGD, evaluation, and the hooks around them.

One *iteration* is one gradient computation on one mini-batch; one *epoch* is one pass
over the training split (each epoch in a new random order unless ``shuffle: false``).
Per iteration::

    lr      = schedule.lr(iteration) * lr_scale        (lr_scale < 1 after a divergence roll-back)
    logits  = network.forward(x, training=True)
    energy  = loss(logits, y) + ½ λ Σ decay_mult ‖W‖²   (the regularised empirical risk)
    network.backward(d loss / d logits); optimizer.step()

Reported per evaluation (``metrics.csv``, at each epoch end and every ``train.eval_every``
iterations): the energy, data loss, weight-decay term and training error *averaged over
the epoch's mini-batches so far* (the weights change during the epoch; this is what
Caffe and Keras report), and the loss and error on the validation split in eval mode
(with the averaged weights when ``train.ema`` is on).

Everything else is a hook (nntrain.hooks, where the call points are listed): weight
averaging, divergence roll-back, best checkpoint and early stopping, CSV logs, the
console and the progress bar, periodic checkpoints. Everything that changes is in the
TrainState (nntrain.state), and every random draw is a pure function of (seed, epoch,
batch, iteration), so a run interrupted anywhere and resumed ends bit for bit equal to
an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import errno
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, distributed
from .config import config_hash, dump_yaml
from .errors import CheckpointError, ConfigError, RunError
from .experiment import Experiment
from .evaluate import evaluate_split, tta_text
from .fileio import atomic_open, save_json
from .graph import RNG_DROPOUT
from .hooks import (BestCheckpoint, Checkpoints, ConsoleLog, CsvLogs, Diverged, DivergenceGuard, EarlyStopping,
                    Hooks, ProgressBar, StepResult, StopAtIteration, TrainUntil, WeightAveraging)
from .machine import machine_info, peak_rss_mib
from .rundir import (STOP_DIVERGED, STOP_EARLY, STOP_FINISHED, STOP_INTERRUPTED, STOP_MAX_ITERATIONS,
                     Checkpoint, remove_stale_temporaries, save_checkpoint)
from .state import new_train_state, zero_sums
from .tensorboard import TensorBoardHook, tensorboard_option


class Trainer:
    """Runs one experiment into one run directory; ``run()`` returns the summary dict.

    ``run_dir`` may be None until ``run()`` for a fresh start (the command line creates the
    directory only once the experiment and the trainer have been built without error).
    ``hooks`` are added after the built-in ones (nntrain.hooks). ``stop_at_iteration``
    (Python API, for tests) behaves like a Ctrl-C arriving just after that iteration.
    ``out`` prints a progress line (default: stdout).
    """

    def __init__(self, exp: Experiment, run_dir, *, quiet: bool = False, resume: bool = False,
                 stop_at_iteration: int | None = None, out=None, command: str = "", hooks=()):
        from .data import BatchLoader

        self.exp, self.config = exp, exp.config
        train = self.config["train"]
        self.dist = distributed.context()
        self.run_dir = None if run_dir is None else Path(run_dir)  # None: set before run()
        self.quiet = quiet
        self.out = out or (lambda text: print(text, flush=True))
        self.command = command
        self.loader = BatchLoader(exp.data.train, train["batch_size"], normalizer=exp.normalizer,
                                  augment=exp.augment, shuffle=train["shuffle"], seed=self.config["seed"],
                                  drop_last=train["drop_last"])
        self.iters_per_epoch = len(self.loader)
        self._check_batch_divides()
        self.planned_iterations = math.ceil(train["epochs"] * self.iters_per_epoch - 1e-9)
        self.total_iterations = min(self.planned_iterations, train["max_iterations"] or self.planned_iterations)
        self.state = new_train_state(self.config, exp.network, self.iters_per_epoch, self.total_iterations)
        self.monitor, mode = self._monitor()
        self.divergence = DivergenceGuard(train["divergence"])
        self.hooks = Hooks([*self._builtin_hooks(mode, stop_at_iteration), *hooks])
        self.stop_request: tuple[str, str] | None = None  # (stop reason, message)
        self.epoch_ending = False
        self.events: list[str] = []
        self._signal = None
        self._start = time.perf_counter()
        if resume:
            ckpt = Checkpoint(self.run_dir / "checkpoints" / "last.npz")
            try:
                self.state.load_state_dict(ckpt.state_dict())
            except ConfigError as exc:  # arrays or counters that do not fit this run
                raise CheckpointError(f"{ckpt.path}: not a valid nntrain checkpoint: {exc}") from None
        else:
            self.dist.broadcast_network(exp.network)

    def _check_batch_divides(self) -> None:
        """Data parallelism: every rank takes batch_size / N samples of each global batch."""
        n, train = self.dist.size, self.config["train"]
        if train["batch_size"] % n:
            raise ConfigError(f"train.batch_size: {train['batch_size']} is the global batch, which the {n} ranks "
                              f"share equally; choose a multiple of {n}")
        last = len(self.exp.data.train) % train["batch_size"]
        if not train["drop_last"] and 0 < last < n:
            raise ConfigError(f"the last batch of each epoch has {last} samples, fewer than the {n} ranks: set "
                              "train.drop_last: true, or another batch_size")

    def _monitor(self) -> tuple[str, str]:
        es, data = self.config["train"]["early_stopping"] or {}, self.exp.data
        has_val = data.val is not None and len(data.val) > 0
        monitor = es.get("monitor") or self.config["train"]["monitor"] or ("val_error" if has_val else "energy")
        if monitor.startswith("val_") and not has_val:
            raise ConfigError(f"train.monitor: '{monitor}' needs a validation split, but data.validation is 0")
        return monitor, es.get("mode") or "min"

    def _builtin_hooks(self, mode: str, stop_at_iteration) -> list:
        train = self.config["train"]
        es = train["early_stopping"]
        hooks = [WeightAveraging(), self.divergence,
                 BestCheckpoint(self.monitor, mode, es["min_delta"] if es else 0.0)]
        until = TrainUntil(self.state.network.parameters(), self.iters_per_epoch)
        if until.limits:
            hooks.insert(1, until)
        if es:
            hooks.append(EarlyStopping(es, self.monitor))
        if self.dist.is_main:  # one rank writes the logs and talks
            hooks.append(CsvLogs(train["log_every"]))
        hooks.append(Checkpoints(train["checkpoint_every"]))
        tensorboard = tensorboard_option(train.get("tensorboard"))
        if tensorboard and self.dist.is_main:  # built now: without tensorboardX, exit 2 before any file
            hooks.append(TensorBoardHook(histograms=tensorboard["histograms"]))
        if not self.quiet and self.dist.is_main:
            hooks.append(ConsoleLog())
            if sys.stderr.isatty():  # no bar in a file or pipe (no flood)
                hooks.append(ProgressBar())
        if stop_at_iteration is not None:
            hooks.append(StopAtIteration(stop_at_iteration))
        return hooks

    # ----- what hooks call ------------------------------------------------------------
    @property
    def epoch_float(self) -> float:
        return self.state.progress.iteration / self.iters_per_epoch

    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop after the current step. The first request wins, except that an interruption
        overrides any other made in the same step: the run stays resumable, and a resumed
        run meets the other condition again at once (e.g. EarlyStopping.on_train_start)."""
        if self.stop_request is None or (reason == STOP_INTERRUPTED and self.stop_request[0] != reason):
            self.stop_request = (reason, message)

    def save(self, name: str) -> None:
        """Write checkpoints/<name> atomically from the current state (collective under MPI:
        the batch-norm running statistics are averaged first; rank 0 writes)."""
        self.dist.average_buffers(self.state.network)
        self.state.progress.elapsed = time.perf_counter() - self._start
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoints" / name, self.state.state_dict(), meta=self._meta(),
                            normalizer_state=self.exp.normalizer.state())

    def restore(self, state: dict, keep=()) -> None:
        """Replace the state (a divergence roll-back) and tell the hooks."""
        self.state.load_state_dict(state, keep=keep)
        self.hooks.call("on_restore", self)

    def event(self, text: str) -> None:
        """One line in events.log (and on the console): roll-backs, interruptions, stops."""
        line = f"[iteration {self.state.progress.iteration}, epoch {self.epoch_float:.2f}] {text}"
        self.events.append(line)
        if not self.dist.is_main:
            return
        with open(self.run_dir / "events.log", "a") as f:
            f.write(line + "\n")
        if not self.quiet:
            self.out(line)

    # ----- the loop --------------------------------------------------------------------
    def run(self) -> dict:
        self._write_run_files()
        self._start = time.perf_counter() - self.state.progress.elapsed
        try:
            with self._signals():
                self.hooks.call("on_train_start", self)
                while self.stop_request is None:
                    if self.state.progress.iteration >= self.total_iterations:
                        capped = self.total_iterations < self.planned_iterations
                        self.request_stop(STOP_MAX_ITERATIONS if capped else STOP_FINISHED)
                        break
                    try:
                        self._train_epoch()
                    except Diverged as exc:
                        if not self.divergence.recover(self, exc):
                            self.request_stop(STOP_DIVERGED)
            summary = self._finish(*self.stop_request)
            self.hooks.call("on_train_end", self, summary)
            return summary
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RunError(self._no_space_message(exc)) from None
            raise
        finally:
            self.hooks.call("on_exit", self)

    def _no_space_message(self, exc: OSError) -> str:
        where = exc.filename or self.run_dir
        last = self.run_dir / "checkpoints" / "last.npz"
        if last.is_file():
            return (f"no space left on device at {where}; the last good checkpoint {last} was kept (iteration "
                    f"{Checkpoint(last).meta['iteration']}): free some space, then resume with: "
                    f"nntrain fit --resume {self.run_dir}")
        return f"no space left on device at {where}; nothing was checkpointed yet: free some space and start again"

    def _train_epoch(self) -> None:
        """Train to the end of the current epoch, or until a hook asks to stop."""
        progress, ipe = self.state.progress, self.iters_per_epoch
        epoch = progress.iteration // ipe
        end = min((epoch + 1) * ipe, self.total_iterations)
        if progress.iteration == epoch * ipe:
            progress.sums = zero_sums()
        self.hooks.call("on_epoch_start", self, epoch)
        every = self.config["train"]["eval_every"]
        batches = self.loader.epoch(epoch, start_batch=progress.iteration - epoch * ipe)
        try:
            for x, y in batches:
                step = self._step(x, y, end)
                if step.epoch_end:
                    self.epoch_ending = True
                    self.hooks.call("on_epoch_end", self, epoch)
                    self.evaluate(step.lr)
                elif every and step.iteration % every == 0:
                    self.evaluate(step.lr)
                self.hooks.call("on_step_end", self, step)
                if self.dist.any(self._signal is not None):  # all ranks stop at the same iteration
                    self.request_stop(STOP_INTERRUPTED, f"signal {signal.Signals(self._signal).name}"
                                      if self._signal is not None else "a signal to another rank")
                if step.epoch_end or self.stop_request is not None:
                    return
        finally:
            self.epoch_ending = False
            batches.close()

    def _step(self, x, y, epoch_end_iteration: int) -> StepResult:
        from .losses import error_rate

        state, progress, loss, dist = self.state, self.state.progress, self.exp.loss, self.dist
        t0 = time.perf_counter()
        n = len(y)  # the global batch
        if dist.size > 1:  # this rank's slice of it
            part = dist.shard(n)
            x, y = x[part], y[part]
        lr = state.schedule.lr(progress.iteration) * progress.lr_scale
        state.optimizer.lr = lr
        state.network.set_rng(np.random.default_rng([self.config["seed"], RNG_DROPOUT, progress.iteration]))
        logits = state.network.forward(x, training=True)
        data_loss = loss.forward(logits, y)
        batch_error = error_rate(logits, y)
        if dist.size > 1:  # global means, from the ranks' sums
            loss_sum, error_sum, _ = dist.sum([data_loss * len(y), batch_error * len(y), len(y)])
            data_loss, batch_error = loss_sum / n, error_sum / n
        wd = state.optimizer.weight_decay_energy()
        energy = data_loss + wd
        self.hooks.call("on_loss", self, energy)
        grad = loss.backward()
        if dist.size > 1:  # this rank's share of the global mean's gradient; summed over ranks below
            grad *= np.float32(len(y) / n)
        state.network.backward(grad)
        dist.sum_gradients(state.network.named_parameters())
        state.optimizer.step()
        self.hooks.call("on_update", self, progress.iteration + 1)
        state.network.clear()
        progress.train_seconds += time.perf_counter() - t0
        progress.iteration += 1
        progress.images_seen += n
        for key, value in (("energy", energy), ("loss", data_loss), ("weight_decay", wd), ("errors", batch_error)):
            progress.sums[key] += value * n
        progress.sums["n"] += n
        return StepResult(progress.iteration, self.epoch_float, lr, energy, data_loss, wd, batch_error, n,
                          progress.iteration == epoch_end_iteration)

    def evaluate(self, lr: float) -> dict:
        """One metrics row: the epoch's running training averages and the validation split."""
        progress, exp = self.state.progress, self.exp
        sums, n = progress.sums, max(progress.sums["n"], 1)
        row = {"epoch": round(self.epoch_float, 6), "iteration": progress.iteration, "lr": lr,
               "energy": sums["energy"] / n, "loss": sums["loss"] / n, "weight_decay": sums["weight_decay"] / n,
               "train_error": sums["errors"] / n, "val_loss": None, "val_error": None}
        if exp.data.val is not None and len(exp.data.val):
            result = self._score(exp.data.val, batch_size=self.config["eval"]["batch_size"])
            row["val_loss"], row["val_error"] = result["loss"], result["error"]
        row["seconds"] = time.perf_counter() - self._start
        progress.last_metrics = row
        self.state.schedule.observe(row[self.monitor])
        self.hooks.call("on_evaluate", self, row)
        return row

    def _score(self, split, **options) -> dict:
        """Loss, error and count on ``split`` with the evaluation weights; under MPI each rank
        scores its slice and the sums are all-reduced."""
        self.dist.average_buffers(self.state.network)
        if self.dist.size > 1:
            split = split.take(self.dist.shard(len(split)))
        with self.state.eval_weights():
            result = evaluate_split(self.exp, split, **options)
        if self.dist.size == 1:
            return result
        n_here = result["n"]
        sums = [result["loss"] * n_here, result["error"] * n_here, n_here] if n_here else [0.0, 0.0, 0]
        loss_sum, error_sum, n = self.dist.sum(sums)
        return {"loss": loss_sum / n, "error": error_sum / n, "n": int(n)}

    def finalize(self, stop_reason: str) -> dict:
        """Write the summary (and test at the end) of a run whose last checkpoint already ended it."""
        self._start = time.perf_counter() - self.state.progress.elapsed
        return self._finish(stop_reason)

    # ----- the end ---------------------------------------------------------------------
    def _finish(self, stop_reason: str, message: str = "") -> dict:
        progress = self.state.progress
        progress.stop_reason = stop_reason
        self.save("last.npz")
        if stop_reason == STOP_INTERRUPTED:
            self.event(f"interrupted ({message}); checkpoint saved, resume with: nntrain fit --resume {self.run_dir}")
        elif message:
            self.event(message)
        test = None
        if stop_reason in (STOP_FINISHED, STOP_EARLY, STOP_MAX_ITERATIONS) and self.config["train"]["test_at_end"]:
            test = self._test(self._restore_best_for_testing())
        summary = self._summary(test)
        if self.dist.is_main:
            save_json(self.run_dir / "summary.json", summary)
        return summary

    def _restore_best_for_testing(self) -> str:
        """With early_stopping.restore_best, load best.npz's weights; the checkpoint tested."""
        es = self.config["train"]["early_stopping"]
        if not (es and es["restore_best"] and self.state.progress.best["iteration"] is not None):
            return "last.npz"
        self.dist.barrier()  # rank 0 has written it
        best = Checkpoint(self.run_dir / "checkpoints" / "best.npz")
        self.state.network.load_state_dict(best.network_state())
        if self.state.ema is not None:
            self.state.ema.load_state_dict(best.group("ema"))
        return "best.npz"

    def _test(self, checkpoint_name: str) -> dict | None:
        if self.exp.data.test is None:
            return None
        ev = self.config["eval"]
        average = ev.get("tta_average", "probabilities")
        result = self._score(self.exp.data.test, batch_size=ev["batch_size"], tta=ev["tta"], padding=ev["padding"],
                             average=average)
        test = {"error": result["error"], "accuracy": 1.0 - result["error"], "loss": result["loss"],
                "n": result["n"], "tta": ev["tta"], "checkpoint": checkpoint_name}
        if average != "probabilities" and ev["tta"] != "none":  # a default summary keeps its earlier keys
            test["tta_average"] = average
        if not self.quiet and self.dist.is_main:
            self.out(f"test: error {test['error']:.4f}  accuracy {test['accuracy']:.4f}  "
                     f"({test['n']} images, {tta_text(ev['tta'], average)}, "
                     f"weights of {checkpoint_name})")
        return test

    def _meta(self) -> dict:
        """The checkpoint's JSON metadata: the state's, plus what a checkpoint is read with."""
        exp = self.exp
        return {"nntrain_version": __version__, "config": self.config, "config_hash": config_hash(self.config),
                "classes": list(exp.data.classes), "input_shape": list(exp.network.input_shape),
                "data_shape": list(exp.data.input_shape), "data_dtype": str(exp.data.train.x.dtype),
                "epoch": self.epoch_float, "monitor": self.monitor,
                "eval_weights": "ema" if self.state.ema is not None else "raw"}

    def _summary(self, test) -> dict:
        progress = self.state.progress
        best = progress.best
        return {
            "name": self.config["name"], "run_dir": str(self.run_dir), "config_hash": config_hash(self.config),
            "stop_reason": progress.stop_reason, "epochs": self.epoch_float, "iterations": progress.iteration,
            "iterations_per_epoch": self.iters_per_epoch, "ranks": self.dist.size,
            "best": {"monitor": self.monitor, "value": best["value"], "epoch": best["epoch"],
                     "iteration": best["iteration"], "val_error": (best["metrics"] or {}).get("val_error")},
            "final": progress.last_metrics, "test": test,
            "divergence_retries": progress.retries, "lr_scale": progress.lr_scale, "events": self.events,
            # the whole run so far, the final test (with its TTA) included; resumes add up
            "wall_time_s": time.perf_counter() - self._start, "train_time_s": progress.train_seconds,
            "train_images_per_s": progress.images_seen / progress.train_seconds if progress.train_seconds else None,
            "peak_rss_mib": peak_rss_mib(),
            "parameters": sum(p.size for p in self.state.network.parameters()),
            "data": self.exp.data.describe(),
            "machine": machine_info(), "command": self.command,
        }

    # ----- the run directory and signals ------------------------------------------------
    def _write_run_files(self) -> None:
        if not self.dist.is_main:
            return
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.run_dir)
        with atomic_open(self.run_dir / "config.yaml", "w") as f:
            f.write(dump_yaml(self.config))
        with atomic_open(self.run_dir / "model.txt", "w") as f:
            f.write(self.state.network.format_summary() + "\n")
        (self.run_dir / "events.log").touch()

    @contextlib.contextmanager
    def _signals(self):
        """Ctrl-C / SIGTERM: finish the step, save a checkpoint, stop; a second one aborts at once."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signum
            if not self.quiet:
                print(f"\n{signal.Signals(signum).name}: finishing this iteration and saving a checkpoint "
                      "(again to abort at once)", file=sys.stderr, flush=True)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


__all__ = ["Trainer", "RunError"]
