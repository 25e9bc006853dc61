"""Training-step time in float32, bfloat16 and float16 (mixed precision) on this CPU, for a small and a wide MLP.

Run from the repository root:  python bench/precision.py           (a few minutes on 2 CPU cores)
                              python bench/precision.py --quick   (fewer steps and repeats, for a smoke run)

Trains two MLPs on MNIST-shaped random data (784 inputs, 10 classes, batch size 64, SGD; nothing is
downloaded) through the library's Runner, in float32 and with `MixedPrecision('bf16')` and
`MixedPrecision('fp16')` (autocast, plus a gradient scaler for float16):
  the course MLP   784 -> 50 -> 10
  a wide MLP       784 -> 1000 -> 1000 -> 10
The three precisions are interleaved (fp32, bf16, fp16, fp32, ...) in one process, single-threaded by default
(`--threads`); it prints the median milliseconds per training step (forward, loss, backward, optimizer step, with
the Runner's callbacks) and the ratio to float32, as a markdown table.

Expect 16 bits to pay only where the matrix multiplies dominate and the hardware has fast 16-bit units: GPU
tensor cores, or CPUs with AMX/AVX-512 BF16 and FP16 instructions. For a small model, the casts autocast adds
cost more than they save.
"""
import argparse, os, platform, statistics, time
import torch, torch.nn.functional as F
from torch import nn

from minifast_nb.data import Dataset, get_dls, DataBunch
from minifast_nb.callbacks import Learner, Runner, Callback
from minifast_nb.precision import MixedPrecision, set_threads

BS, LR = 64, 0.1
MODELS = {'course MLP 784-50-10': [784, 50, 10], 'wide MLP 784-1000-1000-10': [784, 1000, 1000, 10]}

def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2: layers.append(nn.ReLU())
    return nn.Sequential(*layers)

def make_data(n_steps, seed=0):
    "`n_steps` training batches of MNIST-shaped random data with learnable labels; one small validation batch"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_steps * BS + BS, 784, generator=g)
    y = (x @ torch.randn(784, 10, generator=g)).argmax(1)
    n = n_steps * BS
    return DataBunch(*get_dls(Dataset(x[:n], y[:n]), Dataset(x[n:], y[n:]), BS, seed=seed), c=10)

class StepTimer(Callback):
    "Seconds spent in training batches (begin_batch to after_batch), so validation and set-up are left out"
    def begin_fit(self): self.secs, self.n = 0., 0
    def begin_batch(self):
        if self.run.in_train: self.t0 = time.perf_counter()
    def after_batch(self):
        if self.run.in_train: self.secs += time.perf_counter() - self.t0; self.n += 1

def step_ms(sizes, precision, data, seed=0):
    "Mean milliseconds per training step over one epoch of `data`"
    torch.manual_seed(seed)
    model = mlp(sizes)
    cbs = [StepTimer()] + ([MixedPrecision(precision)] if precision != 'fp32' else [])
    run = Runner(cbs=cbs)
    run.fit(1, Learner(model, torch.optim.SGD(model.parameters(), lr=LR), F.cross_entropy, data))
    return 1000 * run.step_timer.secs / run.step_timer.n

def cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def cpu_flags():
    "The 16-bit matrix instructions this CPU announces"
    try: flags = next(l.split(':', 1)[1].split() for l in open('/proc/cpuinfo') if l.startswith('flags'))
    except (OSError, StopIteration): return 'unknown'
    return ', '.join(f for f in ('avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_fp16') if f in flags) or 'none'

def main(n_steps=100, repeats=7, threads=1, quick=False):
    set_threads(threads)
    precisions = ['fp32', 'bf16', 'fp16']
    res = {}
    for name, sizes in MODELS.items():
        data = make_data(n_steps)
        for p in precisions: step_ms(sizes, p, make_data(3))  # warm-up
        times = {p: [] for p in precisions}
        for r in range(repeats):
            for p in precisions: times[p].append(step_ms(sizes, p, data, seed=r))
        res[name] = {p: statistics.median(t) for p, t in times.items()}
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {cpu_name()} (16-bit instructions: "
          f"{cpu_flags()}), {threads} thread{'s' if threads > 1 else ''}; batch size {BS}, medians of {repeats} epochs "
          f"of {n_steps} steps{' (quick run)' if quick else ''}\n")
    print("| model | precision | median ms/step | ratio to fp32 |")
    print("|---|---|---:|---:|")
    for name, r in res.items():
        for p in precisions: print(f"| {name} | {p} | {r[p]:.3f} | {r[p] / r['fp32']:.2f}x |")
    print()
    for name, r in res.items():
        for p in ('bf16', 'fp16'):
            k = r[p] / r['fp32']
            print(f"{name}, {p}: {'slower' if k > 1 else 'faster'} than fp32 on this CPU ({k:.2f}x the time)")
    print("16 bits pay where matrix multiplies dominate the step and the hardware has fast 16-bit units (GPU tensor "
          "cores; CPUs with AMX); float16 also pays the scaler's inf/NaN check at every step. Measure before choosing.")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='20 steps and 2 repeats: a smoke run')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    a = p.parse_args()
    if a.quick: main(n_steps=20, repeats=2, threads=a.threads, quick=True)
    else: main(threads=a.threads)
