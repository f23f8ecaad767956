"""llama.cpp's side of bench_engine.py, run in llama-cpp-python's own venv (.venv-llama, made by
`make llama-server`): one JSON request per line on stdin ({"ids": [...], "new": N}), one JSON
line of timings back, with the same three measurements as the other engines (first token,
prompt + N, one more prompt token + N reusing the cache). Greedy, the model's own sampler."""
import argparse
import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    kw = {"n_threads": a.threads} if a.threads else {}
    llm = Llama(model_path=a.gguf, n_ctx=4096, n_batch=512, verbose=False, **kw)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        prompt, new = req["ids"], req["new"]
        greedy = dict(top_k=1, temp=0.0)
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = llm.sample(**greedy)
        ttft = time.perf_counter() - t0
        for _ in range(new - 1):
            llm.eval([tok])
            tok = llm.sample(**greedy)
        total = time.perf_counter() - t0
        llm.n_tokens = len(prompt)  # keep the prompt's cache, drop the answer, as typing does
        t1 = time.perf_counter()
        llm.eval([prompt[-1]])
        for _ in range(new):
            tok = llm.sample(**greedy)
            llm.eval([tok])
        more = time.perf_counter() - t1
        print(json.dumps({"ttft": ttft, "total": total, "decode_per_token": (total - ttft) / (new - 1),
                          "one_more": more}), flush=True)


if __name__ == "__main__":
    main()
