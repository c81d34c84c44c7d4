"""Function lengths and command widths of the library, by an AST count (no import of the code).

    python benchmarks/function_sizes.py [--limit 60] [--params 20] [--json]

Counts every function and method in trajectories/, shortcut_zoo/, cli/, cards/ and the package's
__init__.py: its length in lines (decorators to last line), and for CLI commands (functions under a
`@….command(…)` decorator) their own parameters (a parameter typed as a shared option group counts once,
as any other parameter). Prints the longest functions, every function over --limit lines and every command
over --params parameters, then a JSON summary; exits 1 when any is over.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("trajectories", "shortcut_zoo", "cli", "cards")


def library_files() -> list[Path]:
    files = [ROOT / "__init__.py"]
    for room in ROOMS:
        files += sorted((ROOT / room).rglob("*.py"))
    return files


def is_command(node: ast.AST) -> bool:
    for dec in getattr(node, "decorator_list", []):
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr == "command":
            return True
    return False


def functions(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            args = node.args
            params = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
            params += bool(args.vararg) + bool(args.kwarg)
            out.append(
                {
                    "where": f"{path.relative_to(ROOT)}:{node.name}",
                    "lines": node.end_lineno - first + 1,
                    "params": params,
                    "command": is_command(node),
                }
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="most lines a function may have")
    parser.add_argument("--params", type=int, default=20, help="most parameters a command may have")
    parser.add_argument("--top", type=int, default=10, help="longest functions to list")
    args = parser.parse_args()
    found = [f for path in library_files() for f in functions(path)]
    found.sort(key=lambda f: -f["lines"])
    commands = sorted((f for f in found if f["command"]), key=lambda f: -f["params"])
    long = [f for f in found if f["lines"] > args.limit]
    wide = [f for f in commands if f["params"] > args.params]

    print(f"{'function':<60} {'lines':>5} {'params':>6}")
    for f in found[: args.top]:
        print(f"{f['where']:<60} {f['lines']:>5} {f['params']:>6}")
    print(f"\n{'command':<60} {'lines':>5} {'params':>6}")
    for f in commands:
        print(f"{f['where']:<60} {f['lines']:>5} {f['params']:>6}")
    lines = [f["lines"] for f in found]
    summary = {
        "functions": len(found),
        "median_lines": statistics.median(lines),
        "max_lines": max(lines),
        "over_limit": [f["where"] for f in long],
        "commands": len(commands),
        "max_command_params": max((f["params"] for f in commands), default=0),
        "commands_over_params": [f["where"] for f in wide],
    }
    print("\n" + json.dumps(summary, indent=1))
    return 1 if long or wide else 0


if __name__ == "__main__":
    sys.exit(main())
