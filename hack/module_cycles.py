"""Fails when the modules of a crate import each other in a cycle.

An edge a -> b is a `crate::b` path (or `crate::{b, ...}`) in the code of
module a (its file and its submodules; comments and `mod tests` blocks
excluded). Usage: `python3 hack/module_cycles.py [CRATE_DIR...]` (default:
every crate of the workspace). `make test` runs it.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["schemas", "fixtures", "kernels", "proxy", "selection", "udfs", "pipeline"]


def edges(src: pathlib.Path) -> dict:
    """Module -> the modules its code names, for the crate rooted at `src`."""
    mods = {}
    for f in src.rglob("*.rs"):
        parts = [p for p in f.relative_to(src).with_suffix("").parts if p not in ("lib", "main", "mod")]
        name = parts[0] if parts else "<root>"
        code = "\n".join(line for line in f.read_text().splitlines() if not line.strip().startswith("//"))
        code = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", code, flags=re.S)
        deps = set(re.findall(r"crate::([a-z_0-9]+)", code))
        for group in re.findall(r"crate::\{([^}]*)\}", code):
            deps.update(re.findall(r"(?:^|,)\s*([a-z_0-9]+)", group))
        mods.setdefault(name, set()).update(d for d in deps if d != name)
    return mods


def cycle(mods: dict):
    """One cycle as a list of modules, or None."""
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(mods.get(m, ())):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d in mods and d not in state:
                found = visit(d, path + [d])
                if found:
                    return found
        state[m] = "done"
        return None

    for m in sorted(mods):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def main() -> int:
    failed = False
    for crate in sys.argv[1:] or CRATES:
        found = cycle(edges(ROOT / crate / "src"))
        if found:
            print(f"{crate}: modules import each other in a cycle: {' -> '.join(found)}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
