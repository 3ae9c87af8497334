"""Serves a GGUF model with llama.cpp's own OpenAI-compatible HTTP server (PyPI xllamacpp) on
127.0.0.1, one thread, no network: `python serve.py MODEL.gguf PORT`. Runs until killed."""
import sys
import time

import xllamacpp as x

params = x.CommonParams()
params.model.path = sys.argv[1]
params.hostnames = ["127.0.0.1"]
params.port = int(sys.argv[2])
params.offline = True
params.cpuparams.n_threads = 1
params.cpuparams_batch.n_threads = 1
params.n_parallel = 1
params.n_ctx = 8192
params.use_jinja = True
# A fixed sampling seed (llama.cpp's default draws one per request): the same prompts get the
# same replies, so the test is repeatable on one machine.
params.sampling.seed = 1
server = x.Server(params)
print("ready", flush=True)
while True:
    time.sleep(3600)
