#!/usr/bin/env bash
# Installs everything the tests need and runs every test: Rust (fmt, clippy,
# cargo test) and Python (ruff, pytest). Works on a fresh machine with Rust and
# Python 3.10+; repeat runs reuse the virtualenv, pip's cache and the cargo
# target folder kept outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${LORT_VENV:-$HOME/.cache/lort/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lort/target}"
export PYO3_PYTHON="$venv/bin/python"

step() { printf '\n== %s\n' "$*"; }

step "python environment ($venv)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Editable install: builds the Rust extension (release profile) with maturin.
"$venv/bin/python" -m pip install --quiet -e ".[train,test,timm,onnx,tensorboard]"

step "rust: fmt, clippy, tests"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings
cargo test

step "python: ruff, pytest"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/python" -m pytest
"$venv/bin/python" -m mypy.stubtest lort._core
# The public API (docs/api.md) is typed: every definition annotated, checked against what it calls.
"$venv/bin/python" -m mypy --follow-imports=silent --ignore-missing-imports --disallow-untyped-defs \
    python/lort/__init__.py python/lort/api.py python/lort/estimator.py
