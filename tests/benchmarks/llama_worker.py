"""llama.cpp's side of bench_engine.py, run in llama-cpp-python's own venv (.venv-llama, made by
`make llama-server`): one JSON request per line on stdin ({"ids": [...], "new": N}), one JSON
line of timings back, with the same three measurements as the other engines (first token,
prompt + N, one more prompt token + N reusing the cache). Greedy, the model's own sampler.

For bench_drafts.py, a request {"ids": [...], "decode": K} times only the decoding of K tokens
after the first (the prompt's prefill is left out), one token per pass, or with `--lookup N`
through llama-cpp-python's own prompt-lookup decoding (LlamaPromptLookupDecoding, N drafted
tokens a pass; it makes the model return the logits of every position)."""
import argparse
import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lookup", type=int, default=0, help="draft N tokens a pass by prompt lookup")
    a = ap.parse_args()
    kw = {"n_threads": a.threads} if a.threads else {}
    if a.lookup:
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        kw["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=a.lookup)
        # Said explicitly: with a draft model llama-cpp-python evaluates every position's
        # logits, but sizes its buffer for them from this argument (0.3.x).
        kw["logits_all"] = True
    llm = Llama(model_path=a.gguf, n_ctx=4096, n_batch=512, verbose=False, **kw)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        greedy = dict(top_k=1, temp=0.0)
        if "decode" in req:
            print(json.dumps(decode(llm, req["ids"], req["decode"], greedy)), flush=True)
            continue
        prompt, new = req["ids"], req["new"]
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


def decode(llm, prompt: list[int], k: int, greedy: dict) -> dict:
    """Seconds to decode k tokens after the first (which comes with the prompt's prefill)."""
    if k <= 0:
        return {"decode_s": 0.0, "tokens": 0}
    llm.reset()
    t0 = None
    n = 0
    for _ in llm.generate(prompt, reset=True, **greedy):
        if t0 is None:
            t0 = time.perf_counter()
        elif (n := n + 1) >= k:
            break
    return {"decode_s": time.perf_counter() - t0, "tokens": n}


if __name__ == "__main__":
    main()
