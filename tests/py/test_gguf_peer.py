#!/usr/bin/env python3
"""GGUF peer check (CTest py.test_gguf_peer): runs the Catch2 cases tagged [peer], which compare llmc's
GGUF decoding and writing with the official `gguf` package through tests/py/gguf_peer_tool.py.

Args: --llmc BIN --fixtures DIR. The test binary is found next to BIN (BUILD/tests/llmc_tests).
"""
import argparse
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmc", required=True)
    ap.add_argument("--fixtures", required=True)
    args = ap.parse_args()
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        print(f"FAIL: the gguf package is missing ({e}); run scripts/setup")
        return 1
    build = os.path.dirname(os.path.abspath(args.llmc))
    tests = os.path.join(build, "tests", "llmc_tests")
    if not os.path.exists(tests):
        print(f"FAIL: {tests} not found (build the llmc_tests target)")
        return 1
    print(f"running {tests} '[gguf][peer]' (block decoders, SmolLM2 tensors, written files vs gguf)")
    proc = subprocess.run([tests, "[gguf][peer]", "-s"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = proc.stdout.splitlines()
    shown = set()
    for line in (raw.strip() for raw in lines):
        if line in shown:
            continue
        shown.add(line)
        if line.startswith(("ok  ", "FAIL", "wrote", "dumped")) or "match gguf" in line or "test cases" in line \
                or "failure(s)" in line:
            print(line)
    if proc.returncode != 0:
        print("\n".join(lines[-80:]))
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
