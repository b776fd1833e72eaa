#!/usr/bin/env python3
"""Import cycles between the library's source files.

Every file under src/ (but main.rs and unit-test files) is a node. A file depends on
another when it names an item defined there: through `use` (nested braces expanded) or
an inline `crate::…` / `super::…` / `self::…` path, with re-exports followed to the file
that defines the item. `mod x;` and `pub use` lines (a module's table of contents) are
not dependencies by themselves. Prints every cycle (strongly connected component with
more than one node) and exits 1 if there is one.

    scripts/import-cycles.py [--modules] [--graph]

--modules: the same check with one node per top-level module (`crate::proxy` for every
file under src/proxy/), the config leaves (`config::{error,units,de,env}`, which every
section validator uses) counted apart from the orchestrator in `config/mod.rs`.
--graph: also print every edge.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def module_path(f: Path):
    rel = f.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_code_noise(text: str) -> str:
    """Comments out, string literals emptied (their text may look like code)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            out.append('""')
            i = n if j < 0 else j + len(end)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.|[^\\'])'", text[i:])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_comments_and_tests(text: str) -> str:
    text = strip_code_noise(text)
    # Drop inline `#[cfg(test)] mod tests { ... }` blocks (brace matched).
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree: str):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    i = tree.index("{")
    prefix, inner = tree[:i], tree[i + 1 : tree.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it:
            out += expand_use(prefix + it)
    return out


def main():
    files = {}
    for f in sorted(SRC.rglob("*.rs")):
        rel = f.relative_to(SRC)
        if rel.parts == ("main.rs",) or "tests" in rel.parts or f.stem.startswith("tests"):
            continue
        if f.stem.endswith("_tests"):
            continue
        files[module_path(f)] = f
    texts = {m: strip_comments_and_tests(f.read_text()) for m, f in files.items()}

    def resolve(base, path):
        parts = path.split("::")
        mod = list(base)
        if parts[0] == "crate":
            mod, parts = [], parts[1:]
        elif parts[0] == "self":
            parts = parts[1:]
        elif parts[0] == "super":
            while parts and parts[0] == "super":
                mod, parts = mod[:-1], parts[1:]
        elif tuple(mod + parts[:1]) not in files:
            return None  # an external crate or a name in scope
        # else: a path through a child module (`use config::X` in a parent)
        # Longest module prefix.
        for k in range(len(parts), -1, -1):
            cand = tuple(mod + parts[:k])
            if cand in files:
                return cand, parts[k:]
        return None

    def reexport_target(mod, name, seen):
        """Follow `pub use x::name` in `mod` to the module that defines `name`."""
        if (mod, name) in seen:
            return mod
        seen.add((mod, name))
        for m in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", texts[mod]):
            for p in expand_use(m.group(1)):
                last = p.split("::")[-1]
                alias = re.match(r"(.*)as(\w+)$", last)
                target_name = alias.group(2) if alias else last
                if target_name != name:
                    continue
                path = alias.group(1) if alias else p
                r = resolve(mod, path if not alias else "::".join(p.split("::")[:-1] + [alias.group(1)]))
                if r:
                    rmod, rest = r
                    return reexport_target(rmod, rest[0], seen) if rest else rmod
        return mod

    edges = {m: set() for m in files}
    for mod, text in texts.items():
        paths = []
        body = re.sub(r"(?<![\w:])(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", text)
        for m in re.finditer(r"(?<![\w:])(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            for p in expand_use(m.group(2)):
                # A re-export is the module's table of contents, not a dependency,
                # unless the file's own code uses the name too.
                name = re.sub(r".*as(\w+)$", r"\1", p).split("::")[-1]
                if m.group(1) and not re.search(rf"\b{re.escape(name)}\b", body):
                    continue
                paths.append(p)
        paths += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", body)
        for p in paths:
            p = re.sub(r"as\w+$", "", p)
            if p.endswith("::*"):
                p = p[:-3]
            r = resolve(mod, p)
            if not r:
                continue
            target, rest = r
            if rest and rest[0] != "*":
                target = reexport_target(target, rest[0], set())
            if target != mod:
                edges[mod].add(target)

    if "--modules" in sys.argv:
        leaves = {"error", "units", "de", "env"}

        def top(m):
            if len(m) > 1 and m[0] == "config" and m[1] in leaves:
                return ("config", "(leaves)")
            return m[:1]

        grouped = {}
        for v, ws in edges.items():
            grouped.setdefault(top(v), set()).update(top(w) for w in ws if top(w) != top(v))
        edges = grouped
        files = {m: None for m in edges}

    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            strong(v)

    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    if "--graph" in sys.argv:
        for v in sorted(edges):
            for w in sorted(edges[v]):
                print(f"{name(v)} -> {name(w)}")
    cycles = [c for c in sccs if len(c) > 1]
    n_edges = sum(len(e) for e in edges.values())
    if not cycles:
        unit = "modules" if "--modules" in sys.argv else "files"
        print(f"no import cycles: {len(files)} {unit}, {n_edges} dependencies")
        return 0
    for c in cycles:
        print("cycle: " + ", ".join(sorted(name(m) for m in c)))
        for v in sorted(c):
            for w in sorted(edges[v] & set(c)):
                print(f"    {name(v)} -> {name(w)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
