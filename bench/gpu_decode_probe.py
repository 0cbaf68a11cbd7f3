"""Batch-1 decode emulation on a real GPU: how much of peak bandwidth does a chain of
fp16 GEMVs (the weights of an 8B Llama, layer by layer) reach, and what does each
layer cost beyond its bytes? Checks the speed model's efficiency and per-layer
constants (provisioner/plan/data/compute.yaml) on hardware. Needs torch with CUDA.

    python bench/gpu_decode_probe.py [--peak-gbs 4800]
"""

import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peak-gbs", type=float, default=None)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "torch not installed"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 0
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    hid, ffn, kvdim = 4096, 14336, 1024  # Llama 3 8B shapes
    layers = []
    for _ in range(args.layers):
        layers.append([torch.randn(n, k, device=dev, dtype=torch.float16) * 0.01
                       for n, k in ((hid, hid), (kvdim, hid), (kvdim, hid), (hid, hid),
                                    (ffn, hid), (ffn, hid), (hid, ffn))])
    nbytes = sum(w.numel() * 2 for layer in layers for w in layer)
    x = torch.randn(hid, 1, device=dev, dtype=torch.float16)

    def token():
        h = x
        for q, k, v, o, g, u, d in layers:
            a = q @ h
            k @ h
            v @ h
            h = h + o @ a
            h = h + d @ (torch.nn.functional.silu(g @ h) * (u @ h))
        return h

    for _ in range(5):
        token()
    torch.cuda.synchronize()
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        token()
    torch.cuda.synchronize()
    eager = (time.perf_counter() - t0) / n
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        token()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        token()
    for _ in range(5):
        g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        g.replay()
    torch.cuda.synchronize()
    graph = (time.perf_counter() - t0) / n
    # one big GEMV of the same bytes: the kernel-launch-free bandwidth
    big = torch.randn(nbytes // 2 // hid, hid, device=dev, dtype=torch.float16)
    for _ in range(3):
        big @ x
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        big @ x
    torch.cuda.synchronize()
    single = (time.perf_counter() - t0) / n
    out = {"gpu": name, "torch": torch.__version__, "weights_gb": nbytes / 1e9, "layers": args.layers,
           "eager_ms": eager * 1e3, "graph_ms": graph * 1e3, "one_gemv_ms": single * 1e3,
           "eager_tok_s": 1 / eager, "graph_tok_s": 1 / graph,
           "one_gemv_gbs": nbytes / single / 1e9}
    out["per_layer_overhead_us_eager"] = (eager - single) / args.layers * 1e6
    out["per_layer_overhead_us_graph"] = (graph - single) / args.layers * 1e6
    if args.peak_gbs:
        out["one_gemv_efficiency"] = out["one_gemv_gbs"] / args.peak_gbs
        out["graph_efficiency"] = nbytes / graph / 1e9 / args.peak_gbs
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
