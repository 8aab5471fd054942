"""How much memory one training step of a job takes on each device, before it launches.

:func:`plan_memory` counts, from the model's shapes (a Llama-shaped model's
``dim``, ``n_layers``, ``n_heads``, ``kv_heads``, ``ffn_hidden_dim``,
``vocab_size``) and what titan's code keeps, the bytes alive on one device at
the three moments a step can peak:

* **loss backward** (the start of backward): the training state, every
  activation the blocks keep for backward, the head's inputs, and the loss:
  its float32 softmax (kept by ``log_softmax``) with, while its backward runs,
  the gradient coming in and the gradient going out: 3 x 4 bytes per logit.
  The logits themselves are gone: titan's ``train_step`` drops them before
  ``backward()`` (the loss keeps its own float32 copy).
* **block backward** (the first and the last block's backward): the kept
  activations of the blocks not yet done, the gradients of those done, the
  block's own activations recomputed (activation checkpointing) and its
  gradient temporaries (an estimate: three ``T x F`` tensors of the FFN's
  backward and the incoming and outgoing gradients), FSDP's gathered weights
  and the gradients being reduce-scattered.
* **optimizer step**: weights, gradients and optimizer state.

What is counted, per term (``B`` sequences of ``S`` tokens, ``T = B x S``;
``c`` the compute dtype's bytes, 2 for bf16; ``r`` the residual stream's:
``c`` under FSDP, whose mixed precision casts the embedding table, 4 on one
process, where autocast leaves the embedding's float32 output alone and every
``x + f(x)`` stays float32; ``t`` the tensor-parallel degree):

* **state**: :func:`titan.core.state_memory.state_memory` (float32 weights
  and gradients, the optimizer's float32 moments, sharded over dp_shard x tp).
* **activations of a block** that keeps everything: its input (``T x D x r``,
  kept by the RMSNorm, which keeps only its input), the normed input of q/k/v
  (once under FSDP; under autocast each linear casts the float32 input itself
  and keeps its own bf16 copy: 3 for attention, 2 for the FFN), q, k and v
  after the rotary embedding (``T x (D + 2 x kv_heads x head_dim) x c``), the
  attention output and its log-sum-exp (``B x H x S`` float32), the middle
  residual ``h`` (``T x D x r``), the FFN's input, and four ``T x F x c``
  tensors of the SwiGLU (w1's output, its silu, w3's output, their product).
  The rotary embedding keeps nothing (its only saved tensor, the frequency
  table, is a buffer), and the attention output reshaped for ``wo`` is a view.
* **activation checkpointing** (``ac``): ``full`` keeps the block's input
  only, and recomputes the block during its own backward; ``selective`` with
  a layer frequency N does that to every N-th block; ``selective op`` keeps
  the input and the outputs of every second matmul in the forward's order
  (wq, wv, w1, w2) and, on GPUs, the attention output and log-sum-exp (the
  CPU's flash-attention kernel is not in torchtitan's list, so on a CPU
  attention is recomputed).
* **weights in the compute dtype**: on one process autocast keeps a bf16
  copy of every linear weight from its forward until its backward (a block
  checkpointed keeps none: its copies die with the forward's autocast cache
  and come back in recomputation); under FSDP, the gathered bf16 weights of
  the units FSDP keeps unsharded through the step (by default the last block
  and [norm, output]), and in a block's backward that block's and the next
  one's (FSDP2 prefetches one block in backward), with the block's gradients
  in the reduce dtype while they are reduce-scattered. With fp8-ag the
  float8 linears are gathered in float8 (one byte).
* **tensor parallel** (sequence parallel): the residual stream, the norms and
  the block input are split over ``t`` along the sequence; heads, FFN units
  and the vocabulary (loss parallel) over ``t``; the linears' inputs are
  gathered (``T x D``) on every rank. The norms' inputs are DTensors there, and
  RMSNorm runs autograd's composite ``rms_norm`` in float32, which keeps the
  float32 input and the normalised input (8 bytes per element); loss parallel's
  backward holds four float32 tensors of the local logits at once (16 bytes).

The model's buffers (the rotary table) are counted on every rank. Checked
against torch's MemTracker on CPU runs: ``benchmarks/plan_memory.py``,
``tests/core/test_plan_memory.py``, docs/plan.md.

Torch-free: runs in the launching ``titan`` process (``titan plan``, and
``titan run`` before launch, :func:`check_peak_memory`). The model's shapes and the
per-block counts are in :mod:`titan.core.block_memory`; this module adds the head, the
loss, the weights in flight and the state, and finds the peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from titan.core.block_memory import (
    block_full,
    block_grad_temporaries,
    block_kept,
    describe_ac,
    recomputes,
    step_setup,
    weight_copy_bytes,
)
from titan.core.checks import optimizer_state_bytes
from titan.core.errors import ConfigError, DoesNotFit
from titan.core.layout import GIB, LaunchLayout
from titan.core.state_memory import state_memory

if TYPE_CHECKING:
    from titan.core.launch import PreparedJob

LOSS_BYTES_PER_LOGIT = 12
"""float32 softmax kept for backward + the gradient in + the gradient out, while the loss's
backward runs (:data:`titan.core.trainer.Trainer.loss_fn` computes the loss in float32)."""
LOSS_PARALLEL_BYTES_PER_LOGIT = 16
"""Under tensor parallel's loss parallel: torch's backward of the sharded cross-entropy computes
``(zeros_like(x) - scatter + exp(x)) * grad``: the kept softmax, the zeros, ``exp(x)`` and their
sum are alive at once, 4 x 4 bytes per local logit."""


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one training step, by term, and its peak."""

    parameters: int
    shards: int
    """Ways the training state is split: dp_shard x tp."""
    weights: int
    """float32 weights (sharded)."""
    grads: int
    """float32 gradients (sharded), at the step's end."""
    optimizer: int
    """Optimizer state (sharded)."""
    activations: int
    """What the blocks and the head keep for backward, per micro-batch, at the peak."""
    logits: int
    """The logits and the loss at the peak (float32 softmax and its gradients)."""
    comm: int
    """Weights and gradients in flight at the peak: FSDP's gathered (unsharded) units and
    reduce-scatter buffers; on one process autocast's bf16 copies of the weights."""
    temporaries: int
    buffers: int
    """The model's buffers: the rotary table, ``2 x max_seq_len x head_dim / 2`` complex64."""
    """Recomputed activations (activation checkpointing) and gradient temporaries at the peak."""
    grads_at_peak: int
    """Gradients alive at the peak (none at the start of backward unless accumulating)."""
    peak: int
    peak_phase: str
    phases: dict[str, int] = field(default_factory=dict)
    """Bytes at each moment that can peak."""
    device_memory: int | None = None
    device: str = ""
    tokens_per_micro_batch: int = 0
    ac: str = "none"
    notes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool | None:
        return None if not self.device_memory else self.peak <= self.device_memory

    @property
    def margin(self) -> int | None:
        return None if not self.device_memory else self.device_memory - self.peak

    def terms(self) -> dict[str, int]:
        """The terms of the peak (they add up to ``peak``)."""
        return {
            "parameters": self.weights,
            "gradients": self.grads_at_peak,
            "optimizer state": self.optimizer,
            "activations": self.activations,
            "logits/loss": self.logits,
            "comm buffers": self.comm,
            "temporaries": self.temporaries,
            "buffers": self.buffers,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "state_shards": self.shards,
            "weights_bytes": self.weights,
            "grads_bytes": self.grads,
            "optimizer_bytes": self.optimizer,
            "peak_bytes": self.peak,
            "peak_phase": self.peak_phase,
            "peak_terms_bytes": self.terms(),
            "phases_bytes": dict(self.phases),
            "device": self.device,
            "device_memory_bytes": self.device_memory,
            "fits": self.fits,
            "margin_bytes": self.margin,
            "tokens_per_micro_batch": self.tokens_per_micro_batch,
            "ac": self.ac,
            "notes": list(self.notes),
        }


def plan_memory(job: PreparedJob, layout: LaunchLayout) -> MemoryPlan:
    """The memory plan of ``job`` on ``layout``'s devices (see the module docstring)."""
    from titan.core.checks import model_args
    from titan.core.model_info import count_parameters

    args = model_args(job)
    s = step_setup(job, layout, args)
    m, t, L = s.shapes, s.tp, s.shapes.n_layers
    family = job.models.get(job.config.model.name)
    n = count_parameters(family, args)
    shards = s.dp_shard * t
    state = state_memory(n, shards, optimizer_state_bytes(job))
    block_grads = state_memory(m.block_params, shards).grads
    head_grads = state_memory(m.head_params, shards).grads
    grads_start = state.grads if s.accumulating else 0

    kept = [block_kept(s, i) for i in range(L)]
    head_kept = s.tokens * m.dim * s.norm_input // t  # final norm's input
    head_kept += s.tokens * m.dim * s.c  # the output projection's input (gathered under TP)
    if s.loss_parallel:  # the cross-entropy on vocabulary shards (torch's loss_parallel)
        loss = LOSS_PARALLEL_BYTES_PER_LOGIT * s.tokens * m.vocab // t
    else:
        loss = LOSS_BYTES_PER_LOGIT * s.tokens * m.vocab

    # Weights in the compute dtype at the start of backward, and in a block's backward.
    block_linears = m.block_linear_params // t
    head_linears = m.vocab * m.dim // t
    if s.fsdp:
        block_unsharded = weight_copy_bytes(s, block_linears) + 2 * m.dim * s.c
        head_unsharded = head_linears * s.c + m.dim * s.c  # output is never float8
        kept_gathered = {"default": 1, "always": 0, "never": L}[s.reshard]
        at_loss = kept_gathered * block_unsharded + (0 if s.reshard == "always" else head_unsharded)
        if s.reshard == "never":
            at_loss += m.vocab * m.dim // t * s.c  # embeddings stay gathered too
        # This block's and the prefetched next one's weights, and its gradients in the reduce
        # dtype (the reduce-scatter input; its output is the sharded gradient, counted there).
        reduce = m.block_params // t * s.reduce_bytes
        in_block = 2 * block_unsharded + reduce
        # In block 0's backward the unit prefetched is the token embeddings.
        embeddings = m.vocab * m.dim // t * s.c
        in_first_block = in_block - block_unsharded + embeddings
    elif s.autocast:
        per_block = 0 if s.float8_linears else block_linears * s.c
        at_loss = sum(per_block for i in range(L) if not recomputes(s, i)) + head_linears * s.c
        in_block = in_first_block = 0  # the copies alive are counted block by block below
    else:
        per_block = at_loss = in_block = in_first_block = 0

    max_seq = int(getattr(args, "max_seq_len", 0) or 0)
    buffers = 2 * max_seq * (m.head_dim // 2) * 8  # freqs_cis, complex64, on every rank
    base = state.weights + state.optimizer + buffers
    phases: dict[str, int] = {}
    parts: dict[str, dict[str, int]] = {}

    def record(phase: str, **terms: int) -> None:
        parts[phase] = terms
        phases[phase] = base + sum(terms.values())

    record(
        "loss backward",
        grads=grads_start,
        activations=sum(kept) + head_kept,
        logits=loss,
        comm=at_loss,
        temporaries=0,
    )
    # The first block's backward (the last block) and the last one's (block 0): memory in
    # between is linear in the block index, so one of the two ends is the largest.
    temps = block_grad_temporaries(s)
    for i, phase in ((L - 1, "backward of the last block"), (0, "backward of the first block")):
        recompute = block_full(s) - kept[i] if recomputes(s, i) else 0
        grads_done = grads_start or (head_grads + (L - 1 - i) * block_grads)
        if s.fsdp:
            comm = in_first_block if i == 0 else in_block
        elif s.autocast:
            # the bf16 copies of the blocks not yet done (a recomputing block's come back for
            # its own backward); those of the head and of the blocks done are freed
            comm = sum(per_block for j in range(i + 1) if not recomputes(s, j))
            comm += per_block if recomputes(s, i) else 0
        else:
            comm = 0
        record(
            phase,
            grads=grads_done,
            activations=sum(kept[: i + 1]),
            logits=0,
            comm=comm,
            temporaries=recompute + temps,
        )
    record("optimizer step", grads=state.grads, activations=0, logits=0, comm=0, temporaries=0)

    phase = max(phases, key=lambda p: phases[p])
    terms = parts[phase]
    d = layout.device
    notes = []
    if "compile" in job.plugins.active:
        notes.append(
            "compile is planned as eager PyTorch: inductor's fused kernels usually keep "
            "less, so the activations are an upper bound"
        )
    return MemoryPlan(
        parameters=n,
        shards=shards,
        weights=state.weights,
        grads=state.grads,
        optimizer=state.optimizer,
        activations=terms["activations"],
        logits=terms["logits"],
        comm=terms["comm"],
        temporaries=terms["temporaries"],
        buffers=buffers,
        grads_at_peak=terms["grads"],
        peak=phases[phase],
        peak_phase=phase,
        phases=phases,
        device_memory=d.memory_bytes,
        device=d.describe() if d.kind != "unknown" or d.model else "unknown device",
        tokens_per_micro_batch=s.tokens,
        ac=describe_ac(s.ac_mode),
        notes=tuple(notes),
    )


def check_peak_memory(
    job: PreparedJob, layout: LaunchLayout, plan: MemoryPlan | None = None
) -> None:
    """Refuse (one-line ConfigError, exit 2) a job whose planned peak does not fit its device.

    For ``titan run``: call after :func:`titan.core.checks.check_job` (which refuses a job whose
    training state alone does not fit). Does nothing when the device's memory is unknown.
    """
    plan = plan or plan_memory(job, layout)
    if plan.fits is not False:
        return
    assert plan.device_memory is not None
    raise DoesNotFit(
        f"the step's peak does not fit: {plan.peak / GIB:.1f} GiB per device at the "
        f"{plan.peak_phase}, but each process has {plan.device_memory / GIB:.1f} GiB "
        f"({plan.device}; {layout.where}); {fix_hint(job, layout, plan)} (`titan plan` shows "
        "the terms)"
    )


def fix_hint(job: PreparedJob, layout: LaunchLayout, plan: MemoryPlan) -> str:
    """The cheapest change that fits, trying in order: AC, a smaller micro-batch, more nodes."""
    import copy

    memory = plan.device_memory or 0
    c = job.config
    tries: list[tuple[str, list[tuple[str, Any]]]] = []
    if "ac" in job.plugins.infos and plan.ac != "full":
        tries.append(
            ("--plugins ac --ac.mode=selective --ac.selective_ac_option=op", [("op", None)])
        )
        tries.append(("--plugins ac --ac.mode=full", [("full", None)]))
    b = c.training.local_batch_size
    while b > 1:
        b //= 2
        tries.append((f"--training.local_batch_size={b}", [("batch", b)]))
    for hint, changes in tries:
        trial = copy.copy(job)
        trial.config = copy.deepcopy(c)
        trial.plugins = job.plugins
        ac_mode = None
        for what, value in changes:
            if what == "batch":
                trial.config.training.local_batch_size = value
                trial.config.training.global_batch_size = -1
            else:
                ac_mode = what
        try:
            if ac_mode is not None:
                p = _plan_with_ac(trial, layout, ac_mode)
            else:
                p = plan_memory(trial, layout)
        except ConfigError:
            continue
        if p.peak <= memory:
            return f"it fits with {hint}"
    if layout.nodes_option:
        for nodes in (2, 4, 8, 16, 32, 64):
            if nodes <= layout.nodes:
                continue
            import dataclasses

            bigger = dataclasses.replace(layout, nodes=nodes)
            try:
                p = plan_memory(job, bigger)
            except ConfigError:
                continue
            if p.peak <= memory:
                return f"it fits on {nodes} nodes ({layout.nodes_option.format(n=nodes)})"
    return "use more or larger devices, or a smaller model, sequence or micro-batch"


def _plan_with_ac(job: PreparedJob, layout: LaunchLayout, mode: str) -> MemoryPlan:
    """The plan with the ``ac`` plugin in ``mode`` ("op" or "full"), for the hint only."""

    class _Active:
        def __init__(self, base: Any) -> None:
            self._base = base
            self.active = frozenset({*base.active, "ac"})
            self.hook = base.hook
            self.infos = base.infos

    job.plugins = _Active(job.plugins)  # type: ignore[assignment]
    ac = getattr(job.config, "ac", None)
    if ac is None:
        from types import SimpleNamespace

        job.config.ac = SimpleNamespace(mode="", selective_ac_option="op")  # type: ignore[attr-defined]
        ac = job.config.ac
    ac.mode = "full" if mode == "full" else "selective"
    ac.selective_ac_option = "op"
    return plan_memory(job, layout)
