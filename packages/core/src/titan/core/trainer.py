"""The trainer: builds the model through the plugin phases, then runs the loop.

It names no optimization. What plugins do is decided by the hooks they
implement; the order of the phases is fixed here (see ``hookspecs``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from titan.core import faults
from titan.core.checkpoint import CheckpointManager
from titan.core.checkpoint_states import ModelState, OptimizerState, RankLocalState
from titan.core.checks import check_tokenizer, grad_accum_steps, model_args, no_data_parallel_error
from titan.core.data.loader import build_dataloader, skip_consumed
from titan.core.errors import PluginError
from titan.core.gc_schedule import GarbageCollection
from titan.core.grad_norm import clip_grad_norm_
from titan.core.host_malloc import keep_freed_host_memory
from titan.core.launch import PreparedJob, promote_config
from titan.core.loss_function import LossFunction
from titan.core.lr_schedule import build_lr_scheduler
from titan.core.metrics import StepTimer, all_reduce_sum
from titan.core.nonfinite import NonFiniteGuard
from titan.core.parallel import ParallelDims, init_parallel
from titan.core.plugin_states import collect_plugin_states
from titan.core.step_metrics import LogStepMetrics
from titan.core.train_state import TrainState
from titan.core.weight_init import init_weights

if TYPE_CHECKING:
    from titan.core.config.job import JobConfig

CORE_METRICS = frozenset(
    {"step", "loss", "grad_norm", "lr", "tokens_per_second", "step_time", "memory_gib"}
)


def _plain(value: torch.Tensor) -> torch.Tensor:
    """A DTensor loss (TP loss parallel) as a plain tensor; backward still flows through."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _number(value: Any) -> Any:
    """Tensors become Python numbers for the metric sinks (a device sync: logged steps only)."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


class Trainer:
    """One rank's training run: the model built through the plugin phases, then the loop.

    Every attribute is declared here, set in ``__init__`` or ``train``; what plugins may
    use of them is ``hookspecs.TRAINER_API`` (tests/plugin_api/test_trainer_api_use.py).
    """

    # the plugin API (hookspecs.TRAINER_API)
    config: JobConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    parallel: ParallelDims
    device: torch.device
    dump_folder: Path
    grad_accum_steps: int
    tokenizer: Any
    model_args: Any
    first_step: int  # the first step this process trained
    first_loss: float | None  # its loss, once read
    last_loss: float | None  # the last logged step's loss
    # internal
    job: PreparedJob
    hook: Any  # the active plugins' hook callers
    loss: LossFunction  # the cross-entropy, as the build hooks wrapped it
    loss_terms: dict[str, torch.Tensor]  # this step's titan_loss_terms, detached
    stop_agreement: faults.StopAgreement
    nonfinite: NonFiniteGuard
    dataloader: Any
    train_state: TrainState
    checkpointer: CheckpointManager
    fsdp_applied: bool
    _gc: GarbageCollection
    _step_values: tuple[torch.Tensor, torch.Tensor]  # this step's loss and grad norm
    _values_read: bool
    _first_loss_pending: torch.Tensor | None

    def __init__(self, job: PreparedJob) -> None:
        self.job = job
        self.config = c = job.config
        self.hook = job.plugins.hook
        self.parallel: ParallelDims = init_parallel(
            c.parallelism.data_parallel_replicate_degree,
            c.parallelism.data_parallel_shard_degree,
            c.parallelism.tensor_parallel_degree,
        )
        self.device = self.parallel.device
        if self.device.type == "cpu":
            keep_freed_host_memory()  # no page faults for each step's buffers (host_malloc.py)
        faults.set_collective_timeouts(c.comm.init_timeout_seconds)
        faults.install_stop_handlers()  # before the (long) build: a signal then stops at step 1
        self.stop_agreement = faults.StopAgreement(self.parallel.world_size)
        torch.manual_seed(c.training.seed)
        if c.training.deterministic:
            torch.use_deterministic_algorithms(True)
        self.dump_folder = Path(c.job.dump_folder)
        self.first_loss: float | None = None  # of this process's run (after any resume)
        self.first_step = 1  # the step of first_loss
        self.last_loss: float | None = None
        self.loss_terms: dict[str, torch.Tensor] = {}  # this step's loss terms (titan_loss_terms)

        # The cross-entropy; the build hooks wrap it (loss parallel, compile) in phase order.
        self.loss = LossFunction()
        self.model_args = model_args(job)  # the checks' own code: same lines as before launch
        self.tokenizer = check_tokenizer(job, self.model_args)
        self.model = self.build_model()
        self.optimizer = self._build_optimizer()
        self.nonfinite = NonFiniteGuard(c.training.nonfinite, self.optimizer, self.device)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, c.lr_scheduler, c.training.steps)
        self.grad_accum_steps = grad_accum_steps(c.training, self.parallel.dp_degree)
        self.dataloader = build_dataloader(
            c,
            self.tokenizer,
            dp_rank=self.parallel.dp_rank,
            dp_world_size=self.parallel.dp_degree,
            split="train",
        )
        self.train_state = TrainState()
        states: dict[str, Any] = {
            "model": ModelState(self.model),
            "optimizer": OptimizerState(self.model, self.optimizer),
            "lr_scheduler": self.lr_scheduler,
            # Each data-parallel rank reads its own shard: its position is per-rank state.
            "dataloader": RankLocalState(
                self.dataloader, self.parallel.dp_rank, self.parallel.dp_degree
            ),
            "train_state": self.train_state,
        }
        # Plugins' states are added in train(), after the resume (plugin_states.py).
        self.checkpointer = CheckpointManager(
            self.dump_folder / c.checkpoint.folder,
            states,
            enabled=c.checkpoint.enable_checkpoint,
            interval=c.checkpoint.interval,
            keep_latest_k=c.checkpoint.keep_latest_k,
            async_mode=c.checkpoint.async_mode,
            initial_load_path=c.checkpoint.initial_load_path,
            on_saved=self._checkpoint_saved,
        )

    def _checkpoint_saved(self, step: int, path: Path) -> None:
        self.hook.titan_checkpoint_saved(trainer=self, step=step, path=path)

    # -- build ---------------------------------------------------------------

    def build_model(self) -> torch.nn.Module:
        """Meta-device model -> plugin phases in fixed order -> materialised, initialised."""
        c, p = self.config, self.parallel
        family = self.job.models.get(c.model.name)
        with torch.device("meta"):
            model = family.build(self.model_args)
        kwargs = {"model": model, "config": c, "parallel": p, "loss": self.loss}
        self.hook.titan_convert_model(**kwargs)
        self.hook.titan_apply_tensor_parallel(**kwargs)
        self.hook.titan_apply_activation_checkpointing(**kwargs)
        self.hook.titan_apply_compile(**kwargs)
        self.hook.titan_apply_data_parallel(**kwargs)
        self.loss.refuse_logit_readers(self.hook)
        self._check_data_parallel(model)
        self._init_weights(model)
        model.train()
        return model

    def _check_data_parallel(self, model: torch.nn.Module) -> None:
        """Several data-parallel ranks without FSDP would train diverging copies silently."""
        from torch.distributed.fsdp import FSDPModule

        self.fsdp_applied = isinstance(model, FSDPModule)
        if self.parallel.dp_degree > 1 and not self.fsdp_applied:
            raise no_data_parallel_error(self.parallel.dp_degree)

    def _init_weights(self, model: torch.nn.Module) -> None:
        """Materialise and initialise the weights (see :mod:`titan.core.weight_init`)."""
        init_weights(
            model,
            self.config,
            self.device,
            rank=self.parallel.rank,
            build_full=lambda: self.job.models.get(self.config.model.name).build(self.model_args),
            tell=self._tell,
        )

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """The active plugins' optimizer for ``optimizer.name`` (AdamW/Adam: the built-in one)."""
        optimizer = self.hook.titan_build_optimizer(
            model=self.model, config=self.config, parallel=self.parallel
        )
        if optimizer is None:  # the checks found a plugin for the name: it answered None here
            raise PluginError(
                f"no active plugin built optimizer '{self.config.optimizer.name}', though one "
                "answered titan_optimizer_state_bytes for it; fix that plugin"
            )
        return optimizer

    # -- loop ----------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """The compute-dtype context of a forward pass (plugins evaluating the model use it too)."""
        t = self.config.training
        # Under FSDP2 the MixedPrecisionPolicy casts the weights; autocast is for one process.
        if t.mixed_precision_param == "bfloat16" and not self.fsdp_applied:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_context(self) -> contextlib.ExitStack:
        """The plugins' contexts (``titan_train_context``) around a forward+backward, entered."""
        stack = contextlib.ExitStack()
        for managers in self.hook.titan_train_context(trainer=self):
            for cm in managers or ():
                stack.enter_context(cm)
        return stack

    @property
    def step(self) -> int:
        """The current step: 1-based inside a step, the last finished one between steps."""
        return self.train_state.step

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """titan's default loss: mean cross-entropy over the tokens, a plain tensor even under TP."""
        return _plain(self.loss(logits, labels))

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One micro-batch's loss: ``titan_loss`` (or the cross-entropy) + ``titan_loss_terms``.

        Returns the total to backpropagate and the terms by name (for the metrics).
        """
        base = self.hook.titan_loss(trainer=self, logits=logits, labels=labels)
        loss = self.cross_entropy(logits, labels) if base is None else _plain(base)
        terms: dict[str, torch.Tensor] = {}
        for contributed in self.hook.titan_loss_terms(
            trainer=self, logits=logits, labels=labels, loss=loss
        ):
            for name, term in (contributed or {}).items():
                if name in terms or name in CORE_METRICS:
                    raise PluginError(
                        f"loss term '{name}' is returned twice or clashes with a core metric "
                        f"({', '.join(sorted(CORE_METRICS))}); rename it in titan_loss_terms"
                    )
                terms[name] = _plain(term)
        total = loss + sum(terms.values()) if terms else loss
        return total, terms

    def train_step(
        self, batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over ``len(batches)`` micro-batches.

        Returns this rank's mean loss and the global grad norm as device tensors (the
        loss terms' step means are left in ``self.loss_terms``): nothing here waits
        for the device, so the host can queue the next step's kernels (and FSDP's
        all-gathers) while this one runs. The loop reduces and reads them on
        logging steps only.
        """
        step = self.train_state.step
        total = torch.zeros((), device=self.device)
        self.loss_terms = {}
        for inputs, labels in batches:
            # non_blocking: no stream synchronisation for the copy (a pageable source
            # is staged before the call returns, so reusing it afterwards is safe).
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with self.train_context():
                with self.autocast():
                    logits = self.model(inputs)
                loss, terms = self.compute_loss(logits, labels)
                loss = loss / len(batches)
                # The loss keeps what its backward needs (its own fp32 softmax); the
                # logits themselves would stay alive through the whole backward.
                del logits
                loss.backward()
            total += loss.detach()
            for name, term in terms.items():
                self.loss_terms[name] = self.loss_terms.get(name, 0) + term.detach() / len(batches)
        self.hook.titan_after_backward(trainer=self, step=step)
        grad_norm = clip_grad_norm_(self.model.parameters(), self.config.training.max_norm)
        self.hook.titan_before_optimizer_step(trainer=self, step=step)
        if self.nonfinite.allow_step(step, grad_norm):  # NaN/inf gradients are never applied
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.hook.titan_after_optimizer_step(trainer=self, step=step)
        return total, grad_norm

    def _read_step_values(self) -> dict[str, float]:
        """Loss (mean over data-parallel ranks) and grad norm of the newest step, as floats.

        The one all-reduce and the one host synchronisation of a logging step;
        every rank must call it on the same steps. The first step's loss of
        this run is reduced here too, with the same all-reduce, if still pending.
        """
        loss, grad_norm = self._step_values
        losses = [loss]
        if self._first_loss_pending is not None:
            losses.append(self._first_loss_pending)
        sums = all_reduce_sum(torch.stack(losses), self.parallel)
        # One copy to the host for everything (one wait for the device).
        host = torch.cat([sums.float(), grad_norm.float().reshape(1)]).cpu()
        *loss_sums, norm = (v.item() for v in host)
        values = [x / self.parallel.dp_degree for x in loss_sums] + [norm]
        if self._first_loss_pending is not None:
            self.first_loss = values[1]
            self._first_loss_pending = None
        self.last_loss = values[0]
        self._values_read = True
        return {"loss": values[0], "grad_norm": norm}

    @property
    def samples_per_step(self) -> int:
        """Sequences one optimizer step consumes over all data-parallel ranks."""
        return (
            self.config.training.local_batch_size * self.parallel.dp_degree * self.grad_accum_steps
        )

    def _tell(self, message: str) -> None:
        """A one-line notice on stderr, from rank 0 only (nothing for an empty one)."""
        if message and self.parallel.is_main:
            print(message, file=sys.stderr, flush=True)

    def _stop_on_request(self, step: int, signum: int) -> None:
        """All ranks agreed to stop after ``step``: write a complete checkpoint, then raise.

        The checkpoint is synchronous (an async one of this very step is
        waited for), so it is published before any rank exits.
        """
        agreed = time.monotonic()
        self.stop_agreement.close()
        self._tell(self.nonfinite.check(step, "on the stop request"))
        path = self.checkpointer.save_for_stop(step) if self.checkpointer.enabled else None
        # From this rank's own signal; a rank that got none counts from the agreement.
        seconds = faults.seconds_since_signal() or time.monotonic() - agreed
        raise faults.stopped_message(step, signum, path, seconds)

    def train(self) -> dict[str, Any]:
        """Run to ``training.steps``, resuming from a checkpoint if there is one.

        Python's automatic garbage collection is off meanwhile: it runs every
        50 steps instead, on every rank at the same step (``gc_schedule``).
        """
        with GarbageCollection() as self._gc:
            return self._train()

    def _train(self) -> dict[str, Any]:
        c = self.config
        faults.set_collective_timeouts(c.comm.init_timeout_seconds)  # groups made since __init__
        self.train_state.step = self.checkpointer.load(c.checkpoint.load_step)
        if self.checkpointer.loaded_from is not None:
            self._tell(
                f"resumed from checkpoint {self.checkpointer.loaded_from} (step "
                f"{self.train_state.step})"
            )
        fresh = collect_plugin_states(self.job.plugins, self, self.checkpointer)
        if fresh:
            self._tell(f"the checkpoint has no state for {', '.join(fresh)}: starting it fresh")
        if self.parallel.is_main:  # the config is valid and fits the checkpoint: it is the folder's
            promote_config(self.job)
        self.hook.titan_train_start(trainer=self)
        data = iter(self.dataloader)
        if "dataloader" in self.checkpointer.skipped_states:  # another data-parallel layout
            skipped = skip_consumed(
                data, self.train_state.samples, self.parallel.dp_degree, c.training.local_batch_size
            )
            self._tell(
                f"data-parallel layout changed since the checkpoint: each rank skips {skipped} "
                "batches of its shard to continue where the data left off"
            )
        tokens_per_step = c.training.local_batch_size * c.training.seq_len * self.grad_accum_steps
        timer = StepTimer()
        log_metrics = LogStepMetrics.for_trainer(self)
        self._first_loss_pending: torch.Tensor | None = None
        self._values_read = True
        while self.train_state.step < c.training.steps:
            self.train_state.step += 1
            step = self.train_state.step
            self._gc.step(step)
            self.hook.titan_step_start(trainer=self, step=step)
            timer.start_step()
            data_start = time.perf_counter()
            batches = [next(data) for _ in range(self.grad_accum_steps)]
            log_metrics.add_data_time(time.perf_counter() - data_start)
            local_loss, grad_norm = self.train_step(batches)
            self.train_state.samples += self.samples_per_step
            self._step_values = (local_loss.detach(), grad_norm.detach())
            self._values_read = False
            if self.first_loss is None and self._first_loss_pending is None:
                self._first_loss_pending = self._step_values[0]
                self.first_step = step  # 1, or the step after the checkpoint resumed from
            is_last = step == c.training.steps
            scheduled = step == 1 or step % c.metrics.log_freq == 0 or is_last
            values = self._read_step_values() if scheduled else None
            # After the read: on a logging step the interval's device work is done.
            timer.end_step(tokens_per_step)
            metrics: dict[str, Any] = {
                "loss": local_loss,
                "grad_norm": grad_norm,
                "lr": self.lr_scheduler.lr_of_last_step(),
                **self.loss_terms,
            }
            filled = set(metrics)
            self.hook.titan_step_end(trainer=self, step=step, metrics=metrics)
            saving = self.checkpointer.should_save(step, is_last)
            # Also log off-schedule when a plugin reported something (e.g. validation loss).
            logging = scheduled or bool(set(metrics) - filled)
            if logging or saving:  # no checkpoint after non-finite gradients (docs/reliability.md)
                self._tell(self.nonfinite.check(step, "before logging or saving"))
            if step == 1:
                faults.set_collective_timeouts(c.comm.train_timeout_seconds)
            if logging:
                values = values or self._read_step_values()
                timing = timer.read()
                metrics = {
                    "step": step,
                    # loss and grad_norm come from the one reduction of this logging step
                    **{k: _number(v) for k, v in metrics.items() if k not in values},
                    **values,
                    **timing,
                    **log_metrics.collect(timing["step_time"]),
                }
                if self.parallel.is_main:
                    self.hook.titan_log_metrics(step=step, metrics=metrics, config=c)
            if saving:
                self.checkpointer.save(step, last=is_last)
            if not is_last and (signum := self.stop_agreement.poll()):
                self._stop_on_request(step, signum)
        self.stop_agreement.close()
        if not self._values_read:  # stopped between logging steps: first/last loss still count
            self._read_step_values()
        self.checkpointer.close()
        self.hook.titan_train_end(trainer=self)
        return {
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "steps": self.train_state.step,
        }
