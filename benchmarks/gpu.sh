#!/usr/bin/env bash
# The hot-path checks of issue 15 on a GPU machine (one or more NVIDIA GPUs), in one go:
#
#   bash benchmarks/gpu.sh [OUT_DIR]       # about 5-8 minutes on one H100/H200
#
# 1. host synchronisations and collectives per step (tests/core/hot_path_probe.py, with
#    CUDA's sync debug mode): non-logging steps must show none (FSDP's own and the
#    gradient norm's all-reduce only, with 2+ GPUs);
# 2. peak memory of one step before/after each change (benchmarks/memory.py --device cuda;
#    the FSDP case needs 2 GPUs), at seq 2048 and 8192;
# 3. throughput of the debug model at seq 2048: eager, compiled, with per-op ac
#    (benchmarks/throughput.py).
# Everything is written to OUT_DIR (default gpu-results/) and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
mkdir -p "$out"
export PATH="$HOME/.local/bin:$PATH"
command -v uv >/dev/null && uv sync --locked >/dev/null 2>&1 || true
py() { if command -v uv >/dev/null; then uv run python "$@"; else python "$@"; fi; }
gpus=$(py -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $gpus" | tee "$out/summary.txt"

common="model.flavor=debug training.seq_len=2048 training.local_batch_size=4 training.steps=8 metrics.log_freq=4"
# shellcheck disable=SC2086
py tests/core/hot_path_probe.py "$out/probe1.json" "$out/probe1" $common
py - "$out/probe1.json" <<'PY' | tee -a "$out/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
quiet = {s: c for s, c in d["steps"].items() if int(s) not in d["log_steps"]}
bad = {s: c for s, c in quiet.items() if c}
print("1 GPU: logging steps", d["log_steps"], "| non-logging steps with syncs/collectives:", bad or "none")
for s, c in sorted(d["steps"].items(), key=lambda x: int(x[0])):
    print("  step", s, c)
PY
if [ "$gpus" -ge 2 ]; then
  # shellcheck disable=SC2086
  py -m torch.distributed.run --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:0 \
    tests/core/hot_path_probe.py "$out/probe2.json" "$out/probe2" $common
  py - "$out/probe2.json" <<'PY' | tee -a "$out/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
# FSDP's own collectives, the grad norm's all-reduce, and the stop-signal agreement (a 4-byte
# CPU all-reduce on its own gloo group: it never touches the GPU; see docs/reliability.md).
allowed = {"c10d._allgather_base_", "c10d._reduce_scatter_base_", "funcol.all_reduce",
           "c10d.allgather_into_tensor_coalesced", "c10d.reduce_scatter_tensor_coalesced",
           "stop_agreement.poll"}
quiet = {s: c for s, c in d["steps"].items() if int(s) not in d["log_steps"]}
bad = {s: {k: v for k, v in c.items() if k not in allowed} for s, c in quiet.items()}
print("2 GPUs: non-logging steps with more than FSDP's own + grad norm + stop agreement:", {s: c for s, c in bad.items() if c} or "none")
PY
fi

cases="logits ac norm-gqa all"
[ "$gpus" -ge 2 ] && cases="$cases fsdp"
for seq in 2048 8192; do
  # shellcheck disable=SC2086
  py benchmarks/memory.py --device cuda --seq-len "$seq" --batch 1 --cases $cases | tee -a "$out/summary.txt"
done

py benchmarks/throughput.py --sets "" compile "ac" --steps 30 -- \
  --training.seq_len=2048 --training.local_batch_size=8 | tee -a "$out/summary.txt"
echo "results in $out/summary.txt"
