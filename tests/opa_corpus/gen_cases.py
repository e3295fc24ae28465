#!/usr/bin/env python3
"""Generate the corpus case directories (policies, inputs) and probes.json.

This is the authoring tool; `record.py` is the oracle.  Run from the repo root:

    python3 tests/opa_corpus/gen_cases.py      # (re)writes cases/*/policy*, cases.json, probes.json
    python3 tests/opa_corpus/record.py         # (re)writes expected.json files

The committed cases.json files hold the full literal input documents (the
Rust test reads them as they are); this script only saves typing them.

Test keys and certificates live in keys/ (generated once, committed; they
protect nothing).  Tokens are cached in keys/tokens.json so that re-running
this script does not re-sign ECDSA / RSA-PSS tokens (their signatures are
randomised) and the corpus stays byte-for-byte stable.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import shutil
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the corpus
sys.path.insert(0, HERE)
from corpus_lib.keys import KEYS, token  # noqa: E402
from corpus_lib.inputs import request  # noqa: E402
from corpus_lib import policies_a, policies_b, policies_c, probes  # noqa: E402

CASES_DIR = os.path.join(HERE, "cases")


def dump_json(value):
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_case(case):
    """case: dict(name, about, query, files={relpath: text or json value},
    v0_files={...} optional, inputs={name: doc})."""
    d = os.path.join(CASES_DIR, case["name"])
    for sub in ("policy", "policy_v0"):
        if os.path.isdir(os.path.join(d, sub)):
            shutil.rmtree(os.path.join(d, sub))
    for rel, content in case["files"].items():
        text = content if isinstance(content, str) else dump_json(content)
        write(os.path.join(d, "policy", rel), text)
    spec = {"about": case["about"], "query": case["query"], "inputs": case["inputs"]}
    if case.get("v0_files"):
        spec["v0_twin"] = True
        for rel, content in case["v0_files"].items():
            text = content if isinstance(content, str) else dump_json(content)
            write(os.path.join(d, "policy_v0", rel), text)
        # Data documents are shared: copy them into the twin unchanged.
        for rel, content in case["files"].items():
            if not rel.endswith(".rego") and rel not in case["v0_files"]:
                text = content if isinstance(content, str) else dump_json(content)
                write(os.path.join(d, "policy_v0", rel), text)
    write(os.path.join(d, "cases.json"), dump_json(spec))


def main():
    cases = policies_a.cases() + policies_b.cases() + policies_c.cases()
    names = [c["name"] for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        sys.exit(f"duplicate case names: {sorted(dupes)}")
    for c in cases:
        write_case(c)
    write(os.path.join(HERE, "probes.json"), dump_json(probes.probes()))
    print(f"{len(cases)} cases, {sum(len(c['inputs']) for c in cases)} inputs, "
          f"{len(probes.probes())} probes")


if __name__ == "__main__":
    main()
