#!/usr/bin/env python3
"""valgrind_report.py: reads valgrind memcheck XML files and decides whose errors they are.

usage: valgrind_report.py HUSAI_BINARY SRC_DIR FILE.xml...

An error belongs to husai when the first frame of its stack that is not valgrind's allocator
replacement, libc or the dynamic loader lies in husai's binary or in a source file under SRC_DIR
(for "uninitialised" errors the origin stack, when valgrind recorded one, decides instead: bytes
that a library created uninitialised and husai merely copies belong to that library). Definite
leaks are judged by the allocation stack the same way; possible/indirect leaks and leaks reported
only as "still reachable" are not errors here.

Prints every error, husai's first, with its stack (file:line where known); exits 1 if any error
belongs to husai, 2 if no XML file was complete (valgrind did not finish), 0 otherwise.
"""
import os
import sys
import xml.etree.ElementTree as ET

SKIP_OBJ = ("vgpreload_", "/libc.so", "/libc-", "/ld-linux", "/libm.so")


def frames(stack):
    out = []
    if stack is None:
        return out
    for fr in stack.findall("frame"):
        out.append({k: (fr.findtext(k) or "") for k in ("ip", "obj", "fn", "dir", "file", "line")})
    return out


def fmt(fr):
    where = f"{fr['file']}:{fr['line']}" if fr["file"] else os.path.basename(fr["obj"]) or "?"
    return f"{fr['fn'] or '???'} ({where})"


def owner_frame(fs):
    for fr in fs:
        if any(s in fr["obj"] for s in SKIP_OBJ):
            continue
        return fr
    return fs[0] if fs else None


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.realpath(sys.argv[1])
    src = os.path.realpath(sys.argv[2])

    def is_husai(fr):
        if fr is None:
            return False
        if fr["obj"] and os.path.realpath(fr["obj"]) == binary:
            return True
        path = os.path.realpath(os.path.join(fr["dir"], fr["file"])) if fr["file"] else ""
        return path.startswith(src + os.sep)

    ours, theirs, complete = [], [], 0
    for path in sys.argv[3:]:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            print(f"valgrind_report: {path}: incomplete XML ({e})", file=sys.stderr)
            continue
        complete += 1
        for err in root.findall("error"):
            kind = err.findtext("kind") or "?"
            if kind.startswith("Leak_") and kind != "Leak_DefinitelyLost":
                continue
            what = err.findtext("what") or err.findtext("xwhat/text") or kind
            stacks = err.findall("stack")
            main_stack = frames(stacks[0] if stacks else None)
            origin = frames(stacks[1]) if len(stacks) > 1 else []
            judge = origin if origin and kind.startswith(("UninitCondition", "UninitValue", "SyscallParam")) \
                else main_stack
            entry = (kind, what, main_stack, origin, os.path.basename(path))
            (ours if is_husai(owner_frame(judge)) else theirs).append(entry)

    def show(title, entries):
        print(f"valgrind_report: {title}: {len(entries)}")
        for kind, what, st, origin, src_file in entries:
            print(f"  [{kind}] {what}  ({src_file})")
            for fr in st[:10]:
                print(f"      at {fmt(fr)}")
            if origin:
                print("    origin:")
                for fr in origin[:6]:
                    print(f"      at {fmt(fr)}")

    show("errors in husai's code", ours)
    show("errors in libraries (Open MPI, PMIx, HDF5, OpenBLAS, ...; not failing)", theirs)
    if complete == 0:
        print("valgrind_report: no complete valgrind XML file", file=sys.stderr)
        return 2
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
