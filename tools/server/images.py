"""Worker images: which zygote of a worker runs a request.

Each worker has a *full* zygote (every preloaded module, e.g. numpy and sympy) and, by default, a
*lean* one (only the standard-library modules of the preload list). Forking a child costs time and
memory in proportion to the zygote's image, and on the measured VM a 60 MB full image costs about twice
the CPU per request of a 12 MB lean one (docs/sandbox.md). Code that imports only the standard library
runs in the lean image; everything else (third-party imports, dynamic imports, sessions, pytest) in the
full one. The choice only affects speed: the lean image can import anything the full one has, from disk.
"""

from __future__ import annotations

import re
import sys

FULL = "full"
LEAN = "lean"
_IMPORT = re.compile(r"(?:^|[;:\s])(?:from\s+(\.*[\w.]*)\s+import\b|import\s+([^;\n#]+))")
_DYNAMIC = ("__import__", "importlib", "import_module")


def lean_preload(preload: tuple[str, ...] | list[str]) -> list[str]:
    """The standard-library part of a preload list (what the lean image imports)."""
    return [m for m in preload if m.split(".")[0] in sys.stdlib_module_names]


def imported_modules(code: str) -> list[str]:
    """Top-level names of the modules the code's ``import`` statements name (strings and comments too:
    a false positive only sends the code to the full image)."""
    names: list[str] = []
    for match in _IMPORT.finditer(code):
        if match.group(1) is not None:
            names.append(match.group(1))
            continue
        for part in match.group(2).split(","):
            words = part.replace("(", " ").split()
            if words:
                names.append(words[0])
    return [name.split(".")[0] for name in names]


def needs_full_image(code: str) -> bool:
    """True unless the code visibly imports nothing beyond the standard library."""
    if any(marker in code for marker in _DYNAMIC):
        return True
    return any(name not in sys.stdlib_module_names for name in imported_modules(code))


def image_for(language: str, code: str, *, session: bool, lean_available: bool) -> str:
    if not lean_available or session or language == "pytest":
        return FULL
    if language == "bash":
        return LEAN  # bash runs in a spawned process; the Python child only waits for it
    return FULL if needs_full_image(code) else LEAN
