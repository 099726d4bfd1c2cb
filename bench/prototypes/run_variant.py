"""`certpull ARGS` with prototype variants applied: the benches' --variant runs the daemon through this.

    python run_variant.py [--tree LIBDIR] [--variants a,b] -- ARGS...

--tree: an unpacked RPM's /usr/lib/certpull, put first on sys.path as the shipped launcher does
(run it with that tree's CPython 3.9 and -I); without it, the checkout's agent/ is used.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    argv = sys.argv[1:]
    tree, variants = None, []
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--tree":
            tree = value
        elif flag == "--variants":
            variants = [v for v in value.split(",") if v]
        else:
            raise SystemExit(f"run_variant: unknown flag {flag}")
    argv = argv[1:]
    sys.dont_write_bytecode = True
    if tree:
        sys.path[0:0] = [os.path.join(tree, "agent"), os.path.join(tree, "site-packages")]
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "agent"))
    sys.path.append(os.path.dirname(HERE))  # `prototypes` as a package, after the tree
    from prototypes import variants as prototypes

    prototypes.apply(variants)
    from certpull.cli import main as certpull_main

    return certpull_main(argv)


if __name__ == "__main__":
    sys.exit(main())
