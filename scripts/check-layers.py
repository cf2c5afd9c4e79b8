#!/usr/bin/env python3
"""The layering rule of docs/ARCHITECTURE.md, checked.

1. Dependencies between meshfed crates point down: bin -> service -> adapter -> core
   (a crate may use crates of its own layer or below, never above).
2. Core crates are sans-IO: no async runtime or IO library in their normal dependency tree.
"""
import json
import subprocess
import sys

LAYERS = {
    "meshfed": 3,
    "meshfed-node": 2,
    "meshfed-transport": 1,
    "meshfed-store": 1,
    "meshfed-trust": 1,
    "meshfed-proto": 0,
    "meshfed-policy": 0,
    "meshfed-audit": 0,
    "meshfed-queue": 0,
}
TEST_ONLY = {"meshfed-testkit"}
FORBIDDEN_IN_CORE = {
    "tokio", "async-std", "smol", "mio", "async-io", "glommio", "monoio",
    "rusqlite", "hyper", "axum", "reqwest", "async-nats", "rumqttc", "tokio-rustls",
}

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"]))
errors = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name in TEST_ONLY:
        continue
    if name not in LAYERS:
        errors.append(f"{name}: not assigned a layer in scripts/check-layers.py")
        continue
    for dep in pkg["dependencies"]:
        d = dep["name"]
        if dep.get("kind") == "dev" or not d.startswith("meshfed"):
            continue
        if d in TEST_ONLY:
            errors.append(f"{name} depends on test-only crate {d} outside dev-dependencies")
        elif LAYERS.get(d, 99) > LAYERS[name]:
            errors.append(f"{name} (layer {LAYERS[name]}) depends upward on {d} (layer {LAYERS[d]})")

for name, layer in LAYERS.items():
    if layer != 0 or not any(p["name"] == name for p in meta["packages"]):
        continue
    tree = subprocess.check_output(
        ["cargo", "tree", "-p", name, "-e", "normal", "--prefix", "none", "--format", "{p}", "--locked"],
        text=True)
    found = sorted({line.split()[0] for line in tree.splitlines() if line.split()
                    and line.split()[0] in FORBIDDEN_IN_CORE})
    if found:
        errors.append(f"core crate {name} pulls in IO crates: {', '.join(found)}")

if errors:
    print("layering rule broken:", *errors, sep="\n  ")
    sys.exit(1)
print(f"layering ok: {len(meta['packages'])} crates, core crates free of IO runtimes")
