"""PyTorch reference for iwtvae: the same model, objective and estimator,
batched (not the seed's one-image-at-a-time loop), fp32.

Used two ways:
  * speed baseline:  python benches/pytorch/iwtvae_torch.py bench --threads 2
    (TPS, z 42, u 18, k = 5, batch 100 training images/s; NLL k = 5000 images/s)
    On a GPU: bench --device cuda --train-steps 600 --nll-images 1000 --nll-batch 20,100 --chunk 1000,5000
    (TF32 on for matmuls, several images per NLL forward, the fastest of the
    sweep's shapes: a strong batched baseline), then --mode compiled and
    --mode graphs at the fastest shape (torch.compile, the second with CUDA
    graphs); ratios.py takes the fastest of the runs for each figure
  * parity check:    python benches/pytorch/iwtvae_torch.py check --checkpoint runs/x/checkpoint.safetensors
    (recon_at_mean is deterministic: it must match `iwtvae eval` to ~1e-3 nats)
benches/compare.sh runs both implementations in one go.
"""
import argparse, gzip, json, math, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            raw = open(p, "rb").read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise FileNotFoundError(path)


def tps_matrix(g, h, w):
    lin = torch.linspace(-1, 1, g, dtype=torch.float64)
    py, px = torch.meshgrid(lin, lin, indexing="ij")
    P = torch.stack([px.reshape(-1), py.reshape(-1)], 1)
    def U(r2):
        return torch.where(r2 == 0, torch.zeros_like(r2), r2 * torch.log(r2.clamp_min(1e-300)))
    m = g * g
    K = U(((P[:, None] - P[None]) ** 2).sum(-1))
    Pm = torch.cat([torch.ones(m, 1, dtype=torch.float64), P], 1)
    L = torch.zeros(m + 3, m + 3, dtype=torch.float64)
    L[:m, :m] = K; L[:m, m:] = Pm; L[m:, :m] = Pm.T
    Li = torch.linalg.inv(L)
    ys = torch.linspace(-1, 1, h, dtype=torch.float64); xs = torch.linspace(-1, 1, w, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    G = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    A = torch.cat([torch.ones(h * w, 1, dtype=torch.float64), G], 1)
    M = A @ Li[m:, :m] + U(((G[:, None] - P[None]) ** 2).sum(-1)) @ Li[:m, :m]
    return M.float(), P.T.reshape(-1).float()  # theta_id = (PX, PY)


class IWTVAE(nn.Module):
    def __init__(self, transform="tps", z=42, u=18, hidden=256, g=3, h=28, w=28):
        super().__init__()
        d = h * w
        self.transform, self.h, self.w = transform, h, w
        # bench --nll-precision bf16: the decoder's three layers under
        # torch.autocast(bfloat16), PyTorch's usual way to ask for bf16
        # matmuls (its layer outputs are bf16 too; the logits go back to fp32).
        self.decoder_bf16 = False
        self.enc = nn.ModuleDict(dict(fc1=nn.Linear(d, hidden), fc2=nn.Linear(hidden, hidden),
                                      z_mu=nn.Linear(hidden, z), z_logsigma=nn.Linear(hidden, z)))
        if transform != "none":
            self.enc["u_mu"] = nn.Linear(hidden, u); self.enc["u_logsigma"] = nn.Linear(hidden, u)
        self.dec = nn.ModuleDict(dict(fc1=nn.Linear(z, hidden), fc2=nn.Linear(hidden, hidden), fc3=nn.Linear(hidden, d)))
        if transform == "affine":
            self.u2theta = nn.Linear(u, 6)
            self.register_buffer("theta_id", torch.tensor([1., 0, 0, 0, 1, 0]))
        elif transform == "tps":
            self.u2theta = nn.Linear(u, 2 * g * g)
            M, tid = tps_matrix(g, h, w)
            self.register_buffer("M", M); self.register_buffer("theta_id", tid)

    def encode(self, x):
        e = self.enc
        h = F.relu(e["fc2"](F.relu(e["fc1"](x))))
        out = [e["z_mu"](h), e["z_logsigma"](h).clamp(-6, 6)]
        if self.transform != "none":
            out += [torch.tanh(e["u_mu"](h)), e["u_logsigma"](h).clamp(-6, 6)]
        return out

    def decode(self, z, u):
        d = self.dec
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=self.decoder_bf16):
            logits = d["fc3"](F.relu(d["fc2"](F.relu(d["fc1"](z)))))
        c = torch.sigmoid(logits.float())
        if self.transform == "none":
            return c
        n = c.shape[0]
        theta = self.u2theta(u) + self.theta_id
        if self.transform == "affine":
            grid = F.affine_grid(theta.view(n, 2, 3), (n, 1, self.h, self.w), align_corners=True)
        else:
            g2 = theta.shape[1] // 2
            q = theta.view(n, 2, g2).transpose(1, 2)            # [n, g², 2]
            grid = torch.matmul(self.M, q).view(n, self.h, self.w, 2)
        p = F.grid_sample(c.view(n, 1, self.h, self.w), grid, mode="bilinear", padding_mode="border", align_corners=True)
        return p.view(n, -1)

    def log_w(self, x, k):
        """log w [B, k] (the -½ ln 2π constants cancel and are left out)."""
        b = x.shape[0]
        stats = self.encode(x)
        mu_z, ls_z = stats[0], stats[1]
        eps = torch.randn(b, k, mu_z.shape[1], device=x.device)
        z = mu_z[:, None] + ls_z.exp()[:, None] * eps
        lw = 0.5 * (eps ** 2 - z ** 2).sum(-1) + ls_z.sum(-1)[:, None]
        u = None
        if self.transform != "none":
            mu_u, ls_u = stats[2], stats[3]
            eta = torch.randn(b, k, mu_u.shape[1], device=x.device)
            u = mu_u[:, None] + ls_u.exp()[:, None] * eta
            lw = lw + 0.5 * (eta ** 2 - u ** 2).sum(-1) + ls_u.sum(-1)[:, None]
            u = u.reshape(b * k, -1)
        p = self.decode(z.reshape(b * k, -1), u)
        xr = x[:, None].expand(b, k, x.shape[1]).reshape(b * k, -1)
        logpx = -F.binary_cross_entropy(p, xr, reduction="none").sum(-1).view(b, k)
        return logpx + lw

    def recon_at_mean(self, x):
        stats = self.encode(x)
        u = stats[2] if self.transform != "none" else None
        p = self.decode(stats[0], u)
        return F.binary_cross_entropy(p, x, reduction="none").sum(-1)


def iwae_loss(model, x, k):
    lw = model.log_w(x, k)
    return -(torch.logsumexp(lw, 1) - math.log(k)).mean()


@torch.no_grad()
def nll(model, x, k, chunk, batch=1):
    """−log p(x) estimates, `batch` images × `chunk` samples per forward."""
    out = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        parts = [model.log_w(xb, min(chunk, k - s)) for s in range(0, k, chunk)]
        out.append(-(torch.logsumexp(torch.cat(parts, 1), 1) - math.log(k)))
    return torch.cat(out)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, opt, x):
    opt.zero_grad()
    loss = iwae_loss(model, x, 5)
    loss.backward()
    opt.step()
    return loss


def time_training(step, data, steps, dev, b=100):
    """Images/s of `steps` steps of batch 100 (dynamic binarization
    included), after 3 warm-up steps (and, compiled, the compilation)."""
    for it in range(3):
        step(torch.bernoulli(data[it * b:(it + 1) * b]))
    sync(dev)
    t0 = time.perf_counter()
    for it in range(steps):
        step(torch.bernoulli(data[(it * b) % 60000:(it * b) % 60000 + b]))
    sync(dev)
    return steps * b / (time.perf_counter() - t0)


def time_nll(model, xt, nll_batch, chunk, dev):
    """Seconds of NLL k = 5000 over xt, after a warm-up of one batch at the
    same shape (cuBLAS picks kernels by shape, the caching allocator grows,
    a compiled model compiles)."""
    nll(model, xt[:nll_batch], 5000, chunk, nll_batch)
    sync(dev)
    t0 = time.perf_counter()
    nll(model, xt, 5000, chunk, nll_batch)
    sync(dev)
    return time.perf_counter() - t0


# --mode: how PyTorch runs the model. "graphs" is torch.compile's
# reduce-overhead mode, which replays CUDA graphs on a GPU (as iwtvae's
# training does), the strongest answer PyTorch has to launch overhead at
# batch 100; on a CPU it is the compiled mode less nothing.
COMPILE_MODES = {"compiled": "default", "graphs": "reduce-overhead"}


class Compiled:
    """The model's log_w through torch.compile, for nll()."""
    def __init__(self, model, mode):
        self.compiled = torch.compile(model.log_w, mode=COMPILE_MODES[mode])
        self.graphs = mode == "graphs"

    def log_w(self, x, k):
        if not self.graphs:
            return self.compiled(x, k)
        # A CUDA graph's outputs live in memory that its next replay
        # overwrites; nll() keeps every chunk's log-weights until the
        # logsumexp, so each is copied out (B·chunk floats, next to nothing).
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x, k).clone()


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    imgs = load_idx(os.path.join(args.data, "train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    test = load_idx(os.path.join(args.data, "t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    model = IWTVAE("tps").to(dev)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.9, eps=1e-6)
    data = torch.from_numpy(imgs).to(dev)
    xt = torch.bernoulli(torch.from_numpy(test[:args.nll_images]).to(dev))
    # Every (images per forward, samples per forward) shape of the sweep is
    # timed; the baseline is the fastest, so the ratio is against PyTorch at
    # its best on this machine, not at one guess of its best shape.
    # --mode compiled or graphs times torch.compile instead of eager: a run
    # of its own, so that a slow or failed compilation costs only its own
    # figures (each shape compiles anew, so give it one shape).
    step = lambda x: train_step(model, opt, x)
    evaluator = model
    if args.mode in COMPILE_MODES:
        compiled_step = torch.compile(step, mode=COMPILE_MODES[args.mode])
        evaluator = Compiled(model, args.mode)
        if args.mode == "graphs":
            def step(x):
                # One training step per graph-tree step: the previous step's
                # outputs (the loss, which nobody reads) may be overwritten.
                torch.compiler.cudagraph_mark_step_begin()
                return compiled_step(x)
        else:
            step = compiled_step
    train_ips = time_training(step, data, args.train_steps, dev)
    model.decoder_bf16 = args.nll_precision == "bf16"
    sweep = [dict(nll_batch=nb, chunk=c, nll_seconds=time_nll(evaluator, xt, nb, c, dev))
             for nb in args.nll_batch for c in args.chunk]
    best = min(sweep, key=lambda r: r["nll_seconds"])
    print(json.dumps(dict(impl="pytorch", mode=args.mode, torch=torch.__version__, device=str(dev),
                          gpu=torch.cuda.get_device_name() if dev.type == "cuda" else None, threads=args.threads,
                          train_images_per_sec=train_ips, nll_k5000_images_per_sec=args.nll_images / best["nll_seconds"],
                          # On a GPU fp32 matmuls run as TF32 (allow_tf32, above).
                          nll_precision="tf32" if args.nll_precision == "fp32" and dev.type == "cuda"
                          else args.nll_precision,
                          nll_seconds=best["nll_seconds"], train_steps=args.train_steps, nll_images=args.nll_images,
                          chunk=best["chunk"], nll_batch=best["nll_batch"], nll_sweep=sweep)))


def int_list(text):
    """A comma-separated list of positive integers (for a sweep)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def check(args):
    from safetensors.torch import load_file
    from safetensors import safe_open
    with safe_open(args.checkpoint, "pt") as f:
        meta = f.metadata()
    sd = load_file(args.checkpoint)
    model = IWTVAE(meta["transform"], int(meta["z_dim"]), int(meta["u_dim"]), int(meta["hidden"]), int(meta["tps_grid"]))
    missing = model.load_state_dict(sd, strict=False)
    assert not missing.unexpected_keys and all(k in ("M", "theta_id") for k in missing.missing_keys), missing
    test = load_idx(os.path.join(args.data, "t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    x = torch.from_numpy(test[:args.limit])
    with torch.no_grad():
        r = model.recon_at_mean(x).double().mean().item()
        n = nll(model, torch.bernoulli(x), args.k, args.chunk).double().mean().item() if args.k else None
    print(json.dumps(dict(recon_at_mean_continuous=r, nll_binarized=n, images=args.limit, k=args.k)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--data", default="data/mnist"); b.add_argument("--threads", type=int, default=2)
    b.add_argument("--train-steps", type=int, default=60); b.add_argument("--nll-images", type=int, default=20)
    b.add_argument("--chunk", type=int_list, default=[1000], help="samples per NLL forward (a list is a sweep)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--nll-precision", choices=["fp32", "bf16"], default="fp32",
                   help="the NLL's decoder layers: fp32, or bf16 under torch.autocast")
    b.add_argument("--nll-batch", type=int_list, default=[1], help="test images per NLL forward (a list is a sweep)")
    b.add_argument("--mode", choices=["eager", *COMPILE_MODES], default="eager",
                   help="eager; compiled: torch.compile (default mode); graphs: torch.compile's reduce-overhead "
                        "mode (CUDA graphs on a GPU). ratios.py takes the faster of the runs it is given")
    c = sub.add_parser("check")
    c.add_argument("--checkpoint", required=True); c.add_argument("--data", default="data/mnist")
    c.add_argument("--limit", type=int, default=100); c.add_argument("--k", type=int, default=0)
    c.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    bench(args) if args.cmd == "bench" else check(args)
