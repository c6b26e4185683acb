#!/usr/bin/env python3
"""Fails when the modules of a Rust crate import each other in a cycle.

One node per source file; an edge A -> B when A names an item of B through `crate::...`,
`super::...` or `self::...` (in `use` or inline paths; comments, strings and a trailing
`#[cfg(test)] mod tests` ignored). Prints every cycle with the names that tie it and exits 1.
Crates depend on each other one way by construction (Cargo refuses a cycle); this keeps the
modules inside each crate layered the same way (sensor-core at the bottom, see README "Layout").

Usage: scripts/check-import-cycles.py CRATE_SRC_DIR...
"""
import collections
import os
import re
import sys


def strip(src):
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    return re.sub(r'//[^\n]*', '', src)


def modules(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith('.rs'):
                path = os.path.join(dirpath, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == 'mod':
                    parts = parts[:-1]
                if parts in (['lib'], ['main']):
                    parts = []
                files[tuple(parts)] = path
    return files


def expand(tree):
    tree = tree.strip()
    m = re.match(r'^((?:\w+::)*)\{(.*)\}$', tree, re.S)
    if m:
        prefix = [p for p in m.group(1).split('::') if p]
        items, depth, cur = [], 0, ''
        for ch in m.group(2):
            depth += ch == '{'
            depth -= ch == '}'
            if ch == ',' and depth == 0:
                items.append(cur)
                cur = ''
            else:
                cur += ch
        items.append(cur)
        return [prefix + sub for item in items if item.strip() for sub in expand(item)]
    tree = tree.split(' as ')[0].strip()
    return [[p for p in tree.split('::') if p and p != 'self']]


def edges_of(files):
    edges = collections.defaultdict(dict)
    for mod, path in files.items():
        src = strip(open(path, encoding='utf-8').read())
        # `#[cfg(test)] mod tests { ... }` at the end of a file: test code, not the module's imports.
        cut = re.search(r'#\[cfg\(test\)\]\s*mod \w+\s*\{', src)
        if cut:
            src = src[:cut.start()]
        paths = []
        for m in re.finditer(r'\buse\s+((?:crate|super|self)::[^;]*);', src, re.S):
            paths += expand(m.group(1))
        for m in re.finditer(r'(?<![\w:])((?:crate|super|self)(?:::\w+)+)', src):
            paths.append(m.group(1).split('::'))
        for p in paths:
            if not p:
                continue
            if p[0] == 'crate':
                target = p[1:]
            elif p[0] == 'self':
                target = list(mod) + p[1:]
            else:
                ups = 0
                while ups < len(p) and p[ups] == 'super':
                    ups += 1
                # `super` is the parent module, whether the file is `a/b.rs` or `a/b/mod.rs`.
                parent = list(mod)[: max(len(mod) - ups, 0)]
                target = parent + p[ups:]
            for n in range(len(target), -1, -1):
                key = tuple(target[:n])
                if key in files:
                    if key != mod and mod[: len(key)] != key:
                        edges[mod].setdefault(key, set()).add(target[n] if n < len(target) else key[-1] if key else 'crate')
                    break
    return edges


def cycles(files, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in files:
        if v not in index:
            visit(v)
    return out


def main(roots):
    found = 0
    for root in roots:
        files = modules(root)
        edges = edges_of(files)
        for comp in cycles(files, edges):
            found += 1
            members = set(comp)
            print(f'{root}: import cycle of {len(comp)} modules')
            for a in comp:
                for b, names in sorted(edges[a].items()):
                    if b in members:
                        print(f"  {files[a]} -> {files[b]}: {', '.join(sorted(names))}")
    if found:
        return 1
    print(f'no import cycles in {", ".join(roots)}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
