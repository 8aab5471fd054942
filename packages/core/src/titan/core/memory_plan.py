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
``titan run`` before launch, :func:`check_peak_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
LSE_BYTES = 4
"""The attention's log-sum-exp: one float32 per (sequence, head, position)."""


@dataclass(frozen=True)
class Shapes:
    """What the plan needs of a Llama-shaped model."""

    dim: int
    n_layers: int
    n_heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int

    @classmethod
    def of(cls, args: Any, what: str) -> Shapes:
        try:
            return cls(
                dim=int(args.dim),
                n_layers=int(args.n_layers),
                n_heads=int(args.n_heads),
                kv_heads=int(getattr(args, "kv_heads", None) or args.n_heads),
                head_dim=int(getattr(args, "head_dim", 0) or args.dim // args.n_heads),
                ffn=int(args.ffn_hidden_dim),
                vocab=int(args.vocab_size),
            )
        except (AttributeError, TypeError, ValueError):
            raise ConfigError(
                f"titan plan knows Llama-shaped models (dim, n_layers, n_heads, kv_heads, "
                f"ffn_hidden_dim, vocab_size); {what} has other arguments"
            ) from None

    @property
    def q(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def block_linear_params(self) -> int:
        d = self.dim
        return 2 * d * self.q + 2 * d * self.kv + 3 * d * self.ffn

    @property
    def block_params(self) -> int:
        return self.block_linear_params + 2 * self.dim

    @property
    def head_params(self) -> int:
        """Final norm and output projection."""
        return self.vocab * self.dim + self.dim


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


@dataclass(frozen=True)
class _Setup:
    """The job's numbers the plan uses."""

    shapes: Shapes
    batch: int
    seq: int
    tp: int
    dp_shard: int
    fsdp: bool
    c: int
    """Compute dtype bytes."""
    r: int
    """Residual stream bytes."""
    autocast: bool
    reduce_bytes: int
    cuda: bool
    ac_mode: str
    """none, full, op, or every-N as 'N'."""
    reshard: str
    float8_linears: bool
    float8_gather: bool
    accumulating: bool
    loss_parallel: bool

    @property
    def norm_input(self) -> int:
        """Bytes per element a (not checkpointed) RMSNorm keeps of its input.

        titan's RMSNorm keeps only its input (``r`` bytes); under tensor parallel the input is
        a DTensor and the norm runs autograd's composite ``rms_norm`` in float32, which keeps
        the float32 input and the normalised input: 8 bytes.
        """
        return 8 if self.tp > 1 else self.r

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def _ac_mode(job: PreparedJob) -> str:
    if "ac" not in job.plugins.active:
        return "none"
    ac = getattr(job.config, "ac", None)
    if ac is None or ac.mode == "none":
        return "none"
    if ac.mode == "full":
        return "full"
    option = str(ac.selective_ac_option).strip()
    return "op" if option == "op" else option


def _checkpointed(i: int, mode: str) -> bool:
    """Block ``i`` is fully checkpointed (recomputed whole in backward)."""
    if mode == "full":
        return True
    if mode.isdigit():
        return (i + 1) % int(mode) == 0
    return False


def _block_full(s: _Setup) -> int:
    """Bytes a block keeps for backward with no checkpointing (per device)."""
    m, t = s.shapes, s.tp
    tokens, c = s.tokens, s.c
    attn_inputs, ffn_inputs = (3, 2) if s.autocast else (1, 1)
    kept = tokens * m.dim * s.norm_input // t  # input (attention_norm)
    kept += attn_inputs * tokens * m.dim * c  # q/k/v's input (gathered under TP)
    kept += tokens * (m.q + 2 * m.kv) * c // t  # q, k, v after the rotary embedding
    kept += tokens * m.q * c // t  # attention output (wo's input)
    kept += s.batch * m.n_heads * s.seq * LSE_BYTES // t  # log-sum-exp
    kept += tokens * m.dim * s.norm_input // t  # h (ffn_norm's input)
    kept += ffn_inputs * tokens * m.dim * c  # w1/w3's input (gathered under TP)
    kept += 4 * tokens * m.ffn * c // t  # SwiGLU: w1 out, silu, w3 out, product
    return kept


def _block_kept(s: _Setup, i: int) -> int:
    """Bytes block ``i`` keeps for backward under this job's checkpointing."""
    m, t, tokens, c, r = s.shapes, s.tp, s.tokens, s.c, s.r
    if _checkpointed(i, s.ac_mode):
        return tokens * m.dim * r // t
    if s.ac_mode == "op":
        kept = tokens * m.dim * r // t  # the block's input
        # every second matmul's output: wq, wv, w1, w2 (w2's before the TP reduce-scatter)
        kept += tokens * (m.q + m.kv + m.ffn) * c // t + tokens * m.dim * c
        if s.cuda:  # the GPU attention kernels are on the save list; the CPU one is not
            kept += tokens * m.q * c // t + s.batch * m.n_heads * s.seq * LSE_BYTES // t
        return kept
    return _block_full(s)


def _block_grad_temporaries(s: _Setup) -> int:
    """Gradient temporaries of one block's backward (its FFN's, the largest part)."""
    m, t, tokens, c = s.shapes, s.tp, s.tokens, s.c
    return 3 * tokens * m.ffn * c // t + tokens * m.dim * (s.r + c) // t


def _weight_copy_bytes(s: _Setup, linear_params: int) -> int:
    """Bytes of a unit's weights in the compute dtype (float8 linears with fp8-ag: one byte)."""
    per = 1 if s.float8_gather else s.c
    return linear_params * per


def _setup(job: PreparedJob, layout: LaunchLayout, args: Any) -> _Setup:
    from titan.core.checks import degrees, grad_accum_steps

    c = job.config
    dp_rep, dp_shard, tp = degrees(c, layout)
    fsdp = dp_rep * dp_shard > 1 and bool(
        job.plugins.hook.titan_apply_data_parallel.get_hookimpls()
    )
    compute = 2 if c.training.mixed_precision_param == "bfloat16" else 4
    autocast = compute == 2 and not fsdp
    active = job.plugins.active
    kind = layout.device.kind
    return _Setup(
        shapes=Shapes.of(args, f"{c.model.name}/{c.model.flavor}"),
        batch=c.training.local_batch_size,
        seq=c.training.seq_len,
        tp=tp,
        dp_shard=dp_shard,
        fsdp=fsdp,
        c=compute,
        r=compute if fsdp else 4,
        autocast=autocast,
        reduce_bytes=2 if c.training.mixed_precision_reduce == "bfloat16" else 4,
        cuda=kind != "cpu",
        ac_mode=_ac_mode(job),
        reshard=c.parallelism.fsdp_reshard_after_forward,
        float8_linears="fp8" in active,
        float8_gather="fp8-ag" in active and fsdp,
        accumulating=grad_accum_steps(c.training, dp_rep * dp_shard) > 1,
        loss_parallel=tp > 1 and bool(getattr(getattr(c, "tp", None), "loss_parallel", False)),
    )


def plan_memory(job: PreparedJob, layout: LaunchLayout) -> MemoryPlan:
    """The memory plan of ``job`` on ``layout``'s devices (see the module docstring)."""
    from titan.core.checks import model_args
    from titan.core.model_info import count_parameters

    args = model_args(job)
    s = _setup(job, layout, args)
    m, t, L = s.shapes, s.tp, s.shapes.n_layers
    family = job.models.get(job.config.model.name)
    n = count_parameters(family, args)
    shards = s.dp_shard * t
    state = state_memory(n, shards, optimizer_state_bytes(job))
    block_grads = state_memory(m.block_params, shards).grads
    head_grads = state_memory(m.head_params, shards).grads
    grads_start = state.grads if s.accumulating else 0

    kept = [_block_kept(s, i) for i in range(L)]
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
        block_unsharded = _weight_copy_bytes(s, block_linears) + 2 * m.dim * s.c
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
        at_loss = sum(per_block for i in range(L) if not _recomputes(s, i)) + head_linears * s.c
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
    temps = _block_grad_temporaries(s)
    for i, phase in ((L - 1, "backward of the last block"), (0, "backward of the first block")):
        recompute = _block_full(s) - kept[i] if _recomputes(s, i) else 0
        grads_done = grads_start or (head_grads + (L - 1 - i) * block_grads)
        if s.fsdp:
            comm = in_first_block if i == 0 else in_block
        elif s.autocast:
            # the bf16 copies of the blocks not yet done (a recomputing block's come back for
            # its own backward); those of the head and of the blocks done are freed
            comm = sum(per_block for j in range(i + 1) if not _recomputes(s, j))
            comm += per_block if _recomputes(s, i) else 0
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
        ac=_describe_ac(s.ac_mode),
        notes=tuple(notes),
    )


def _recomputes(s: _Setup, i: int) -> bool:
    """Block ``i`` recomputes (part of) its forward in backward."""
    return s.ac_mode == "op" or _checkpointed(i, s.ac_mode)


def _describe_ac(mode: str) -> str:
    if mode == "none":
        return "none"
    if mode == "full":
        return "full"
    if mode == "op":
        return "selective op"
    return f"selective every {mode}"


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
