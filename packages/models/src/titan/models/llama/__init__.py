"""One Llama implementation for Llama 2 and Llama 3: the families differ in data (args), not code."""

from titan.models.llama.args import LLAMA2_FLAVORS, LLAMA3_FLAVORS, LlamaArgs, RopeScaling

__all__ = ["LLAMA2_FLAVORS", "LLAMA3_FLAVORS", "LlamaArgs", "RopeScaling"]
