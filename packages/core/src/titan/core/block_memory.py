"""What each block of a Llama-shaped model keeps for backward, per device, under a job's
settings: the activation terms of :func:`titan.core.memory_plan.plan_memory`.

The model's shapes (:class:`Shapes`, also the speed plan's), the job's numbers that change
the counts (:class:`StepSetup`: micro-batch, dtypes, tensor parallel, FSDP, activation
checkpointing, float8) and the per-block byte counts. What is counted, and why, is in
:mod:`titan.core.memory_plan`'s docstring. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from titan.core.errors import ConfigError
from titan.core.layout import LaunchLayout

if TYPE_CHECKING:
    from titan.core.launch import PreparedJob

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
class StepSetup:
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


def job_ac_mode(job: PreparedJob) -> str:
    if "ac" not in job.plugins.active:
        return "none"
    ac = getattr(job.config, "ac", None)
    if ac is None or ac.mode == "none":
        return "none"
    if ac.mode == "full":
        return "full"
    option = str(ac.selective_ac_option).strip()
    return "op" if option == "op" else option


def checkpointed(i: int, mode: str) -> bool:
    """Block ``i`` is fully checkpointed (recomputed whole in backward)."""
    if mode == "full":
        return True
    if mode.isdigit():
        return (i + 1) % int(mode) == 0
    return False


def block_full(s: StepSetup) -> int:
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


def block_kept(s: StepSetup, i: int) -> int:
    """Bytes block ``i`` keeps for backward under this job's checkpointing."""
    m, t, tokens, c, r = s.shapes, s.tp, s.tokens, s.c, s.r
    if checkpointed(i, s.ac_mode):
        return tokens * m.dim * r // t
    if s.ac_mode == "op":
        kept = tokens * m.dim * r // t  # the block's input
        # every second matmul's output: wq, wv, w1, w2 (w2's before the TP reduce-scatter)
        kept += tokens * (m.q + m.kv + m.ffn) * c // t + tokens * m.dim * c
        if s.cuda:  # the GPU attention kernels are on the save list; the CPU one is not
            kept += tokens * m.q * c // t + s.batch * m.n_heads * s.seq * LSE_BYTES // t
        return kept
    return block_full(s)


def block_grad_temporaries(s: StepSetup) -> int:
    """Gradient temporaries of one block's backward (its FFN's, the largest part)."""
    m, t, tokens, c = s.shapes, s.tp, s.tokens, s.c
    return 3 * tokens * m.ffn * c // t + tokens * m.dim * (s.r + c) // t


def weight_copy_bytes(s: StepSetup, linear_params: int) -> int:
    """Bytes of a unit's weights in the compute dtype (float8 linears with fp8-ag: one byte)."""
    per = 1 if s.float8_gather else s.c
    return linear_params * per


def step_setup(job: PreparedJob, layout: LaunchLayout, args: Any) -> StepSetup:
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
    return StepSetup(
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
        ac_mode=job_ac_mode(job),
        reshard=c.parallelism.fsdp_reshard_after_forward,
        float8_linears="fp8" in active,
        float8_gather="fp8-ag" in active and fsdp,
        accumulating=grad_accum_steps(c.training, dp_rep * dp_shard) > 1,
        loss_parallel=tp > 1 and bool(getattr(getattr(c, "tp", None), "loss_parallel", False)),
    )


def recomputes(s: StepSetup, i: int) -> bool:
    """Block ``i`` recomputes (part of) its forward in backward."""
    return s.ac_mode == "op" or checkpointed(i, s.ac_mode)


def describe_ac(mode: str) -> str:
    if mode == "none":
        return "none"
    if mode == "full":
        return "full"
    if mode == "op":
        return "selective op"
    return f"selective every {mode}"
