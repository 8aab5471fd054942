#!/usr/bin/env bash
# Set up torchtitan v0.2.2 for benchmarks/vs_torchtitan.py, in one command:
#
#   bash benchmarks/setup_torchtitan.sh MIRROR DIR
#
# MIRROR: a git clone or bare mirror of github.com/pytorch/torchtitan that has the tag v0.2.2
#         (in a session: the path the `fetch` tool returns for github:pytorch/torchtitan).
# DIR:    where to put it; it gets DIR/torchtitan (the tree, = TT_DIR) and DIR/deps (= TT_DEPS).
#
# The tree is written file by file with `git show` (`git archive` stops at an LFS test asset
# that is not in the mirror); the test assets torchtitan's debug job reads are titan's bundled
# ones (the tinyshakespeare corpus and its BPE tokenizer), so both sides train on the same data
# with the same tokenizer. The packages torchtitan needs beyond titan's environment go to a side
# folder (uv pip install --target) so that titan's .venv is not changed; typing_extensions is
# removed from it so that titan's own copy wins.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: bash benchmarks/setup_torchtitan.sh MIRROR DIR" >&2
    exit 2
fi
MIRROR=$(cd "$1" && pwd)
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
TITAN_DIR=$(cd "$(dirname "$0")/.." && pwd)
TAG=v0.2.2
TT="$DIR/torchtitan"
DEPS="$DIR/deps"
ASSETS="$TITAN_DIR/packages/core/src/titan/core/assets"

rm -rf "$TT"
mkdir -p "$TT"
git -C "$MIRROR" ls-tree -r --name-only "$TAG" | grep -v '^tests/assets' | while IFS= read -r f; do
    mkdir -p "$TT/$(dirname "$f")"
    git -C "$MIRROR" show "$TAG:$f" >"$TT/$f"
done
mkdir -p "$TT/tests/assets/tokenizer" "$TT/tests/assets/c4_test"
cp "$ASSETS/tokenizers/tinyshakespeare_bpe.json" "$TT/tests/assets/tokenizer/tokenizer.json"
echo '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}' \
    >"$TT/tests/assets/tokenizer/tokenizer_config.json"
cp "$ASSETS/tinyshakespeare/train.jsonl" "$TT/tests/assets/c4_test/data.json"

rm -rf "$DEPS"
uv pip install --quiet --python "$TITAN_DIR/.venv/bin/python" --target "$DEPS" tyro einops tomli
rm -rf "$DEPS"/typing_extensions*

echo "torchtitan $TAG: TT_DIR=$TT TT_DEPS=$DEPS"
