"""How many CPU threads PyTorch should use for minifast_nb's small models, on an idle machine and under load.

Run from the repository root:  python bench/threads.py           (a few minutes on 2 CPU cores)
                              python bench/threads.py --quick   (fewer rows and repeats, for a smoke run)

PyTorch splits each operation (a matrix multiply, a ReLU) over `torch.get_num_threads()` threads, by default
one per physical core. A batch of 64 rows through a 784-50-10 MLP is a few microseconds of work per operation,
and every operation ends with its threads waiting for each other: when other processes hold the cores, one
thread that is not scheduled stalls them all.

This script trains the console script's model (MLP nh=50, SGD, one-cycle lr 0.5, batch size 64) through the
library's Runner on (a) the digits (1,437 training rows of 64 pixels) and (b) MNIST-sized random data (784
inputs, 10,000 rows by default; nothing is downloaded), with torch's default thread count, 1 thread and N
threads (`--n`, default `os.cpu_count()`), first as the machine is, then while `--load` busy-looping Python
processes (started and stopped by this script, each ending by itself after a deadline) compete for the cores.
The settings are interleaved (default, 1, N, default, 1, N, ...) in one process; it prints the median seconds
per epoch and the ratio of each setting to 1 thread as a markdown table, and a recommended `--threads` default.
"""
import argparse, os, platform, statistics, subprocess, sys, time
from functools import partial
import torch, torch.nn.functional as F

from minifast_nb.datasets import get_digits, normalize
from minifast_nb.loss import accuracy
from minifast_nb.data import Dataset, get_dls, DataBunch
from minifast_nb.callbacks import Learner, Runner, AvgStatsCallback, get_model
from minifast_nb.annealing import Recorder, ParamScheduler, combine_scheds, cos_1cycle_anneal

BS, LR, NH = 64, 0.5, 50

def digits_data():
    "The console script's digits: normalized with the training statistics"
    x, y, xv, yv = get_digits()
    m, s = x.mean(), x.std()
    return normalize(x, m, s), y, normalize(xv, m, s), yv

def mnist_sized(n_train, n_valid=2000, seed=0):
    "Random MNIST-shaped data: `n_train` + `n_valid` rows of 784 standard-normal inputs, labels from a fixed linear map"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, 784, generator=g)
    y = (x @ torch.randn(784, 10, generator=g)).argmax(1)  # learnable, so training does real work
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]

def fit_epochs(data, epochs, seed=0):
    "Seconds per epoch of the console script's training loop (no progress bars, no printing)"
    x, y, xv, yv = data
    db = DataBunch(*get_dls(Dataset(x, y), Dataset(xv, yv), BS, seed=seed), c=10)
    torch.manual_seed(seed)
    learn = Learner(*get_model(db, lr=LR, nh=NH), F.cross_entropy, db)
    sched = combine_scheds([0.3, 0.7], cos_1cycle_anneal(LR / 10, LR, LR / 100))
    run = Runner(cb_funcs=[partial(AvgStatsCallback, [accuracy]), Recorder, partial(ParamScheduler, 'lr', sched)])
    run.logger = lambda *args: None
    t0 = time.perf_counter()
    run.fit(epochs, learn)
    return (time.perf_counter() - t0) / epochs

BUSY = "import time\nend = time.time() + {secs}\nwhile time.time() < end: pass\n"

def start_load(n, secs):
    "`n` busy-looping Python processes, each stopping by itself after `secs` seconds"
    return [subprocess.Popen([sys.executable, '-c', BUSY.format(secs=secs)]) for _ in range(n)]

def stop_load(procs):
    for p in procs: p.terminate()
    for p in procs: p.wait()

def measure(datasets, settings, repeats, epochs):
    "Median seconds per epoch of each (dataset, setting), settings interleaved within each repeat"
    times = {(d, s): [] for d in datasets for s in settings}
    for name, data in datasets.items():
        for n in set(settings.values()): torch.set_num_threads(n); fit_epochs(data, 1)  # warm-up
        for r in range(repeats):
            for label, n in settings.items():
                torch.set_num_threads(n)
                times[name, label].append(fit_epochs(data, epochs[name], seed=r))
    return {k: statistics.median(v) for k, v in times.items()}

def cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def settings_for(default, n):
    "Row label -> thread count, for torch's default, 1 and `n` threads; equal counts share one row"
    out = {}
    for label, k in [('default', default), ('1', 1), ('N', n)]: out.setdefault(k, []).append(label)
    return {' = '.join(ls) + ('' if ls == ['1'] else f' ({k})'): k for k, ls in out.items()}

def table(datasets, settings, idle, load, n_load):
    print(f"| data | threads | no added load: s/epoch | ratio to 1 thread | {n_load} busy processes: s/epoch | ratio to 1 thread |")
    print("|---|---|---:|---:|---:|---:|")
    for d in datasets:
        one = next(l for l, k in settings.items() if k == 1)
        for l in settings:
            print(f"| {d} | {l} | {idle[d, l]:.4f} | {idle[d, l] / idle[d, one]:.2f}x "
                  f"| {load[d, l]:.4f} | {load[d, l] / load[d, one]:.2f}x |")

def recommend(datasets, settings, idle, load):
    "The thread count with the best worst-case ratio to the fastest setting over every dataset, idle and loaded"
    def worst(l): return max(t[d, l] / min(t[d, o] for o in settings) for t in (idle, load) for d in datasets)
    best = min(settings, key=worst)
    return settings[best], worst(best)

def main(n_rows=10000, repeats=5, n=None, n_load=2, quick=False):
    n = n or os.cpu_count()
    default = torch.get_num_threads()
    datasets = {'digits (1,437 rows x 64)': digits_data(), f'MNIST-sized ({n_rows:,} rows x 784)': mnist_sized(n_rows)}
    epochs = dict(zip(datasets, [1 if quick else 3, 1]))
    settings = settings_for(default, n)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {cpu_name()}, {os.cpu_count()} logical CPUs; "
          f"torch's default: {default} threads; MLP nh={NH}, bs {BS}; medians of {repeats}{' (quick run)' if quick else ''}\n")
    idle = measure(datasets, settings, repeats, epochs)
    procs = start_load(n_load, secs=1800)  # a bound in case this script is killed; stopped below
    try:
        time.sleep(0.5)  # let them start
        load = measure(datasets, settings, repeats, epochs)
    finally: stop_load(procs)
    table(datasets, settings, idle, load, n_load)
    k, w = recommend(datasets, settings, idle, load)
    print(f"\nrecommended default for --threads: {k} (at most {w:.2f}x the fastest setting in every case above)")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='2,000 MNIST-sized rows and 2 repeats: a smoke run')
    p.add_argument('--n', type=int, default=None, help='the "N threads" setting (default: os.cpu_count())')
    p.add_argument('--load', type=int, default=2, help='busy-looping processes for the "under load" runs')
    a = p.parse_args()
    if a.quick: main(n_rows=2000, repeats=2, n=a.n, n_load=a.load, quick=True)
    else: main(n=a.n, n_load=a.load)
