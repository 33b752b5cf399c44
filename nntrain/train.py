"""The training loop: mini-batch SGD with evaluation, early stopping, divergence
handling, atomic checkpoints and exact resume.

One *iteration* is one gradient computation on one mini-batch; one *epoch* is one pass
over the training split (each epoch in a new random order unless ``shuffle: false``).
Per iteration::

    lr      = schedule.lr(iteration) * lr_scale        (lr_scale < 1 after a divergence roll-back)
    logits  = network.forward(x, training=True)
    energy  = loss(logits, y) + ½ λ Σ decay_mult ‖W‖²   (the regularised empirical risk)
    network.backward(d loss / d logits); optimizer.step()

Reported per epoch (``metrics.csv``): the energy, data loss, weight-decay term and
training error *averaged over the epoch's mini-batches* (the weights change during the
epoch; this is what Caffe and Keras report), and the loss and error on the validation
split in eval mode (with the averaged weights when ``train.ema`` is on). With
``train.lookahead`` the optimizer's weights are pulled towards slow weights every k steps
(nntrain.optim.Lookahead) and set to them at each epoch end, before evaluation.

Exact resume: every random draw is a pure function of (seed, epoch, batch, iteration):
the data order and augmentation (nntrain.data.loader) and the dropout masks
(``Network.set_rng``); everything else that changes (weights, optimizer, schedule,
averaged weights, counters, the epoch's running sums, early-stopping and divergence
state) is in the checkpoint. So a run interrupted anywhere and resumed ends
bit-for-bit equal to an uninterrupted one.
"""

from __future__ import annotations

import math
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import config_hash, dump_yaml
from .errors import ConfigError, RunError
from .experiment import Experiment, evaluate_split
from .graph import RNG_DROPOUT
from .fileio import atomic_open, save_json
from .rundir import (ITERATION_COLUMNS, METRICS_COLUMNS, Checkpoint, CsvLog, save_checkpoint,
                     truncate_csv)

STOP_FINISHED = "finished"
STOP_EARLY = "early_stopping"
STOP_DIVERGED = "diverged"
STOP_INTERRUPTED = "interrupted"
STOP_MAX_ITERATIONS = "max_iterations"


class _Diverged(Exception):
    pass


class Trainer:
    """Runs one experiment into one run directory; ``run()`` returns the summary dict.

    ``stop_at_iteration`` (Python API, for tests) behaves like a Ctrl-C arriving just
    after that iteration: a checkpoint is written and the run stops as interrupted.
    """

    def __init__(self, exp: Experiment, run_dir, *, quiet: bool = False, resume: bool = False,
                 stop_at_iteration: int | None = None, out=None, command: str = ""):
        from .data import BatchLoader
        from .optim import make_lookahead, make_optimizer, make_weight_average
        from .schedules import make_schedule

        self.exp = exp
        self.cfg = exp.config
        self.tcfg = self.cfg["train"]
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.out = out or (lambda text: print(text, flush=True))
        self.command = command
        self.stop_at_iteration = stop_at_iteration
        net, data = exp.network, exp.data
        seed = self.cfg["seed"]

        self.loader = BatchLoader(data.train, self.tcfg["batch_size"], normalizer=exp.normalizer,
                                  augment=exp.augment, shuffle=self.tcfg["shuffle"], seed=seed,
                                  drop_last=self.tcfg["drop_last"])
        self.iters_per_epoch = len(self.loader)
        planned = math.ceil(self.tcfg["epochs"] * self.iters_per_epoch - 1e-9)
        self.total_iterations = min(planned, self.tcfg["max_iterations"] or planned)
        self.optimizer = make_optimizer(self.cfg["optimizer"], net.named_parameters())
        self.base_lr = self.optimizer.lr
        self.schedule = make_schedule(self.cfg["schedule"], self.base_lr, self.iters_per_epoch,
                                      total_epochs=self.total_iterations / self.iters_per_epoch)
        self.ema = (make_weight_average(self.tcfg["ema"], net.parameters()) if self.tcfg["ema"] else None)
        self.lookahead = None
        if self.tcfg.get("lookahead"):
            la = dict(self.tcfg["lookahead"])
            la["start_step"] = round(la.pop("start_epoch") * self.iters_per_epoch)
            self.lookahead = make_lookahead(la, net.parameters(), total_steps=self.total_iterations)
        es = self.tcfg["early_stopping"]
        has_val = data.val is not None and len(data.val) > 0
        self.monitor = (es or {}).get("monitor") or self.tcfg["monitor"] or ("val_error" if has_val else "energy")
        if self.monitor.startswith("val_") and not has_val:
            raise ConfigError(f"train.monitor: '{self.monitor}' needs a validation split, but data.validation is 0")
        self.monitor_mode = (es or {}).get("mode") or "min"

        # everything below is saved in checkpoints
        self.iteration = 0
        self.lr_scale = 1.0
        self.retries = 0
        self.elapsed = 0.0
        self.train_seconds = 0.0
        self.images_seen = 0
        self.sums = self._zero_sums()
        self.best = {"value": None, "epoch": None, "iteration": None, "metrics": None}
        self.bad_evals = 0
        self.reference_energy = None
        self.last_metrics = None
        self.stop_reason = None
        self.events = []

        self._signal = None
        if resume:
            self._restore(Checkpoint(self.run_dir / "checkpoints" / "last.npz"))

    # ----- bookkeeping ---------------------------------------------------------------
    @staticmethod
    def _zero_sums() -> dict:
        return {"energy": 0.0, "loss": 0.0, "weight_decay": 0.0, "errors": 0.0, "n": 0}

    @property
    def epoch_float(self) -> float:
        return self.iteration / self.iters_per_epoch

    def _meta(self) -> dict:
        return {
            "nntrain_version": __version__, "config": self.cfg, "config_hash": config_hash(self.cfg),
            "classes": list(self.exp.data.classes), "input_shape": list(self.exp.network.input_shape),
            "data_shape": list(self.exp.data.input_shape),
            "iteration": self.iteration, "epoch": self.epoch_float, "lr_scale": self.lr_scale,
            "retries": self.retries, "elapsed": self.elapsed, "train_seconds": self.train_seconds,
            "images_seen": self.images_seen, "sums": self.sums, "best": self.best, "bad_evals": self.bad_evals,
            "reference_energy": self.reference_energy, "last_metrics": self.last_metrics,
            "stop_reason": self.stop_reason, "monitor": self.monitor,
            "eval_weights": "ema" if self.ema else "raw",
            "schedule": {k: np.asarray(val).tolist() for k, val in self.schedule.state_dict().items()},
        }

    def _save(self, name: str) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / name, network_state=self.exp.network.state_dict(),
            optimizer_state=self.optimizer.state_dict(), meta=self._meta(),
            ema_state=self.ema.state_dict() if self.ema else None,
            lookahead_state=self.lookahead.state_dict() if self.lookahead else None,
            normalizer_state=self.exp.normalizer.state())

    def _restore(self, ckpt: Checkpoint) -> None:
        m = ckpt.meta
        self.exp.network.load_state_dict(ckpt.network_state())
        self.optimizer.load_state_dict(ckpt.group("optim"))
        if self.ema:
            self.ema.load_state_dict(ckpt.group("ema"))
        if self.lookahead:
            self.lookahead.load_state_dict({f"lookahead/{k}": val for k, val in ckpt.group("lookahead").items()})
        self.schedule.load_state_dict({k: np.asarray(val) for k, val in m["schedule"].items()})
        for key in ("iteration", "lr_scale", "retries", "elapsed", "train_seconds", "images_seen", "sums",
                    "best", "bad_evals", "reference_energy", "last_metrics"):
            setattr(self, key, m[key])

    def _snapshot(self) -> dict:
        """An in-memory copy of the state at an epoch start, for divergence roll-back."""
        return {
            "network": {k: val.copy() for k, val in self.exp.network.state_dict().items()},
            "optim": {k: val.copy() for k, val in self.optimizer.state_dict().items()},
            "ema": {k: val.copy() for k, val in self.ema.state_dict().items()} if self.ema else None,
            "lookahead": ({k: val.copy() for k, val in self.lookahead.state_dict().items()}
                          if self.lookahead else None),
            "iteration": self.iteration, "sums": dict(self.sums), "images_seen": self.images_seen,
        }

    def _rollback(self, snap: dict) -> None:
        self._reopen_logs(snap["iteration"])
        self.exp.network.load_state_dict(snap["network"])
        self.optimizer.load_state_dict(snap["optim"])
        if self.ema:
            self.ema.load_state_dict(snap["ema"])
        if self.lookahead:
            self.lookahead.load_state_dict(snap["lookahead"])
        self.iteration, self.sums, self.images_seen = snap["iteration"], dict(snap["sums"]), snap["images_seen"]

    def _reopen_logs(self, iteration: int) -> None:
        """Open the CSV logs, first dropping rows logged after ``iteration`` (resume, roll-back)."""
        for log in (getattr(self, "metrics_log", None), getattr(self, "iter_log", None)):
            if log is not None:
                log.close()
        for name in ("metrics.csv", "iterations.csv"):
            truncate_csv(self.run_dir / name, iteration)
        self.metrics_log = CsvLog(self.run_dir / "metrics.csv", METRICS_COLUMNS)
        self.iter_log = CsvLog(self.run_dir / "iterations.csv", ITERATION_COLUMNS)

    def _event(self, text: str) -> None:
        line = f"[iteration {self.iteration}, epoch {self.epoch_float:.2f}] {text}"
        self.events.append(line)
        with open(self.run_dir / "events.log", "a") as f:
            f.write(line + "\n")
        if not self.quiet:
            self.out(line)

    # ----- the loop --------------------------------------------------------------------
    def run(self) -> dict:
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        with atomic_open(self.run_dir / "config.yaml", "w") as f:
            f.write(dump_yaml(self.cfg))
        with atomic_open(self.run_dir / "model.txt", "w") as f:
            f.write(self.exp.network.format_summary() + "\n")
        self._reopen_logs(self.iteration)
        previous = self._install_signal_handlers()
        self._start = time.perf_counter() - self.elapsed
        try:
            self._loop()
        except _Diverged as exc:
            self.stop_reason = STOP_DIVERGED
            self._event(str(exc))
        finally:
            self._restore_signal_handlers(previous)
            self.metrics_log.close()
            self.iter_log.close()
        return self._finish()

    def _loop(self) -> None:
        ipe = self.iters_per_epoch
        es = self.tcfg["early_stopping"]
        while self.iteration < self.total_iterations:
            # checked before each epoch (not after), so a run interrupted right at an epoch
            # end and resumed stops exactly where the uninterrupted run would have
            if es and self.bad_evals >= es["patience"]:
                self.stop_reason = STOP_EARLY
                self._event(f"early stopping: {self.monitor} did not improve by more than {es['min_delta']} "
                            f"for {es['patience']} evaluations (best {self.best['value']:.6g} at epoch "
                            f"{self.best['epoch']:g})")
                return
            epoch = self.iteration // ipe
            snapshot = self._snapshot()
            try:
                stop = self._run_epoch(epoch, start_batch=self.iteration % ipe)
            except _Diverged as exc:
                if self.tcfg["divergence"]["action"] == "stop" \
                        or self.retries >= self.tcfg["divergence"]["max_retries"]:
                    raise
                self.retries += 1
                self.lr_scale *= self.tcfg["divergence"]["lr_factor"]
                self._rollback(snapshot)
                self._event(f"{exc}; rolled back to iteration {self.iteration} and multiplied the "
                            f"learning rate by {self.tcfg['divergence']['lr_factor']} "
                            f"(retry {self.retries} of {self.tcfg['divergence']['max_retries']})")
                continue
            if stop:
                return
        capped = self.tcfg["max_iterations"] and self.total_iterations < math.ceil(
            self.tcfg["epochs"] * ipe - 1e-9)
        self.stop_reason = STOP_MAX_ITERATIONS if capped else STOP_FINISHED

    def _run_epoch(self, epoch: int, start_batch: int) -> bool:
        """Train until the end of ``epoch`` (or the last iteration); True if the run must stop."""
        net, loss, opt = self.exp.network, self.exp.loss, self.optimizer
        seed = self.cfg["seed"]
        from .losses import error_rate

        end = min((epoch + 1) * self.iters_per_epoch, self.total_iterations)
        bar = self._progress_bar(epoch, start_batch, end - epoch * self.iters_per_epoch)
        batches = self.loader.epoch(epoch, start_batch=start_batch)
        try:
            for x, y in batches:
                t0 = time.perf_counter()
                lr = self.schedule.lr(self.iteration) * self.lr_scale
                opt.lr = lr
                net.set_rng(np.random.default_rng([seed, RNG_DROPOUT, self.iteration]))
                logits = net.forward(x, training=True)
                data_loss = loss.forward(logits, y)
                wd = opt.weight_decay_energy()
                energy = data_loss + wd
                self._check_divergence(energy)
                net.backward(loss.backward())
                opt.step()
                if self.lookahead:
                    self.lookahead.update(self.iteration + 1)
                if self.ema:
                    self.ema.update(self.iteration + 1)
                batch_error = error_rate(logits, y)
                net.clear()
                self.train_seconds += time.perf_counter() - t0
                self.iteration += 1
                n = len(y)
                self.images_seen += n
                s = self.sums
                s["energy"] += energy * n
                s["loss"] += data_loss * n
                s["weight_decay"] += wd * n
                s["errors"] += batch_error * n
                s["n"] += n
                if self.iteration % self.tcfg["log_every"] == 0:
                    self.iter_log.write({"iteration": self.iteration, "epoch": self.epoch_float, "lr": lr,
                                         "energy": energy, "loss": data_loss, "batch_error": batch_error})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(energy=f"{energy:.4f}", err=f"{batch_error:.3f}", refresh=False)
                at_end = self.iteration == end
                every = self.tcfg["eval_every"]
                if every and self.iteration % every == 0 and not at_end:
                    self._evaluate(lr)
                if self.tcfg["checkpoint_every"] and self.iteration % self.tcfg["checkpoint_every"] == 0:
                    self.elapsed = time.perf_counter() - self._start
                    self._save("last.npz")
                if self._signal is not None or self.iteration == self.stop_at_iteration:
                    if at_end:
                        self._end_of_epoch(lr, bar)
                        bar = None
                    why = f"signal {signal.Signals(self._signal).name}" if self._signal else "stop requested"
                    self.stop_reason = STOP_INTERRUPTED
                    self.elapsed = time.perf_counter() - self._start
                    self._save("last.npz")
                    self._event(f"interrupted ({why}); checkpoint saved, resume with: "
                                f"nntrain fit --resume {self.run_dir}")
                    return True
                if at_end:
                    break
        finally:
            batches.close()
            if bar is not None:
                bar.close()
        self._end_of_epoch(lr, None)
        return False

    def _check_divergence(self, energy: float) -> None:
        if not math.isfinite(energy):
            raise _Diverged(f"diverged: the energy is {energy}")
        if self.reference_energy is None:
            self.reference_energy = max(abs(energy), 1e-3)
        elif energy > self.tcfg["divergence"]["explode_factor"] * self.reference_energy:
            raise _Diverged(f"diverged: the energy {energy:.4g} exceeds {self.tcfg['divergence']['explode_factor']:g}"
                            f" x the first batch's {self.reference_energy:.4g}")

    def _end_of_epoch(self, lr: float, bar) -> None:
        if bar is not None:
            bar.close()
        if self.lookahead:  # evaluate (and end with) the slow weights
            self.lookahead.sync()
        row = self._evaluate(lr)
        self.sums = self._zero_sums()
        self.elapsed = time.perf_counter() - self._start
        self._save("last.npz")
        if not self.quiet:
            val = "" if row["val_error"] is None else \
                f"  val_loss {row['val_loss']:.4f}  val_error {row['val_error']:.4f}"
            self.out(f"epoch {row['epoch']:g}/{self.total_iterations / self.iters_per_epoch:g}  "
                     f"energy {row['energy']:.4f}  train_error {row['train_error']:.4f}{val}  "
                     f"lr {row['lr']:.3g}  {row['seconds']:.1f}s")

    def _evaluate(self, lr: float) -> dict:
        """Write one metrics row (running training averages + validation); track the best."""
        s, exp = self.sums, self.exp
        n = max(s["n"], 1)
        row = {"epoch": round(self.epoch_float, 6), "iteration": self.iteration, "lr": lr,
               "energy": s["energy"] / n, "loss": s["loss"] / n, "weight_decay": s["weight_decay"] / n,
               "train_error": s["errors"] / n, "val_loss": None, "val_error": None}
        if exp.data.val is not None and len(exp.data.val):
            with self._eval_weights():
                result = evaluate_split(exp, exp.data.val, batch_size=self.cfg["eval"]["batch_size"])
            row["val_loss"], row["val_error"] = result["loss"], result["error"]
        row["seconds"] = time.perf_counter() - self._start
        self.metrics_log.write(row)
        self.last_metrics = row
        value = row[self.monitor]
        self.schedule.observe(value)
        es = self.tcfg["early_stopping"]
        min_delta = es["min_delta"] if es else 0.0
        better = self.best["value"] is None or (
            value < self.best["value"] - min_delta if self.monitor_mode == "min" else value > self.best["value"] + min_delta)
        if better:
            self.best = {"value": value, "epoch": row["epoch"], "iteration": self.iteration, "metrics": row}
            self.bad_evals = 0
            self._save("best.npz")
        else:
            self.bad_evals += 1
        return row

    def _eval_weights(self):
        import contextlib

        return self.ema.averaged() if self.ema else contextlib.nullcontext()

    def finalize(self, stop_reason: str) -> dict:
        """Write the summary (and test at the end) of a run whose last checkpoint already ended it."""
        self.stop_reason = stop_reason
        self._start = time.perf_counter() - self.elapsed
        return self._finish()

    # ----- the end ---------------------------------------------------------------------
    def _finish(self) -> dict:
        self.elapsed = time.perf_counter() - self._start
        es = self.tcfg["early_stopping"]
        if self.stop_reason not in (STOP_INTERRUPTED,):
            self._save("last.npz")
        tested_checkpoint = "last.npz"
        if self.stop_reason != STOP_INTERRUPTED and es and es["restore_best"] and self.best["iteration"] is not None:
            best = Checkpoint(self.run_dir / "checkpoints" / "best.npz")
            self.exp.network.load_state_dict(best.network_state())
            if self.ema:
                self.ema.load_state_dict(best.group("ema"))
            tested_checkpoint = "best.npz"
        test = None
        if self.tcfg["test_at_end"] and self.stop_reason in (STOP_FINISHED, STOP_EARLY, STOP_MAX_ITERATIONS) \
                and self.exp.data.test is not None:
            ev = self.cfg["eval"]
            with self._eval_weights():
                result = evaluate_split(self.exp, self.exp.data.test, batch_size=ev["batch_size"], tta=ev["tta"],
                                        padding=ev["padding"])
            test = {"error": result["error"], "accuracy": 1.0 - result["error"], "loss": result["loss"],
                    "n": result["n"], "tta": ev["tta"], "checkpoint": tested_checkpoint}
            if not self.quiet:
                self.out(f"test: error {test['error']:.4f}  accuracy {test['accuracy']:.4f}  "
                         f"({test['n']} images, tta {ev['tta']}, weights of {tested_checkpoint})")
        summary = self._summary(test)
        save_json(self.run_dir / "summary.json", summary)
        return summary

    def _summary(self, test) -> dict:
        return {
            "name": self.cfg["name"], "run_dir": str(self.run_dir), "config_hash": config_hash(self.cfg),
            "stop_reason": self.stop_reason, "epochs": self.epoch_float, "iterations": self.iteration,
            "iterations_per_epoch": self.iters_per_epoch,
            "best": {"monitor": self.monitor, "value": self.best["value"], "epoch": self.best["epoch"],
                     "iteration": self.best["iteration"],
                     "val_error": (self.best["metrics"] or {}).get("val_error")},
            "final": self.last_metrics, "test": test,
            "divergence_retries": self.retries, "lr_scale": self.lr_scale, "events": self.events,
            "wall_time_s": self.elapsed, "train_time_s": self.train_seconds,
            "train_images_per_s": self.images_seen / self.train_seconds if self.train_seconds else None,
            "parameters": sum(p.size for p in self.exp.network.parameters()),
            "data": self.exp.data.describe(),
            "machine": machine_info(), "command": self.command,
        }

    # ----- signals and progress --------------------------------------------------------
    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._signal is not None:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._signal = signum
            if not self.quiet:
                print(f"\n{signal.Signals(signum).name}: finishing this iteration and saving a checkpoint "
                      "(again to abort at once)", file=sys.stderr, flush=True)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)

    def _progress_bar(self, epoch: int, start: int, total: int):
        """A tqdm bar on a terminal; None when quiet or when stderr is a file or pipe (no flood)."""
        if self.quiet or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}", leave=False, unit="it",
                    dynamic_ncols=True, mininterval=0.5)


def machine_info() -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpu": _cpu_model(), "cores": _cores()}
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_resumable(run_dir) -> Checkpoint:
    """The run's last checkpoint, or a clear error if the run cannot be resumed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory")
    path = run_dir / "checkpoints" / "last.npz"
    if not path.exists():
        raise ConfigError(f"--resume {run_dir}: no checkpoint to resume from ({path} is missing)")
    return Checkpoint(path)


__all__ = ["Trainer", "check_resumable", "machine_info", "RunError"]
