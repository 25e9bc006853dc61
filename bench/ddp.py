"""Samples per second of DDP training with minifast_nb on CPU: 1 process x 1 thread, 2 processes x 1 thread
(`DistributedCallback`, gloo), 1 process x 2 threads.

Run from the repository root, on a quiet machine:  python bench/ddp.py           (a few minutes on 2 cores)
                                                   python bench/ddp.py --quick   (tiny settings, a smoke run)

Trains an MLP 784 -> 1000 -> 1000 -> 10 (SGD) at a global batch size of 256 on random MNIST-shaped rows, so that
compute dominates. Every configuration runs in fresh processes started by `minifast_nb.distributed.launch`; each
run trains `--epochs` epochs without validation and times every training epoch after the first (a warm-up) on rank 0.
The configurations are interleaved (A B C A B C ...) `--repeats` times. Prints the median samples per second of
each, its ratio to 1 process x 1 thread, and the scaling efficiency: samples/s over (workers x the 1x1 samples/s),
1.0 being perfect scaling. The 2-process number includes everything DistributedCallback adds: the gradient
all-reduce, and one small all-reduce per batch for the decisions.
"""
import argparse, os, platform, statistics, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from torch import nn
sys.path.insert(0, str(Path(__file__).parent))  # the processes import this file as `ddp` to find `run`

from minifast_nb.data import Dataset, DataBunch, get_dls
from minifast_nb.callbacks import Learner, Runner, Callback
from minifast_nb.distributed import DistributedCallback, launch, is_main_process

class EpochTimer(Callback):
    "Seconds of every training epoch; no validation"
    def begin_fit(self): self.times = []
    def begin_epoch(self): self.t0 = time.perf_counter()
    def begin_validate(self):
        self.times.append(time.perf_counter() - self.t0)
        return True

def run(rows, nh, bs, epochs, distributed):
    "Train on `rows` random rows; samples per second of each training epoch after the first (rank 0's; None elsewhere)"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(rows, 784, generator=g), torch.randint(0, 10, (rows,), generator=g)
    data = DataBunch(*get_dls(Dataset(x, y), Dataset(x[:bs], y[:bs]), bs, seed=0), c=10)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, nh), nn.ReLU(), nn.Linear(nh, nh), nn.ReLU(), nn.Linear(nh, 10))
    cbs = [EpochTimer()] + ([DistributedCallback()] if distributed else [])
    r = Runner(cbs=cbs)
    r.fit(epochs, Learner(model, torch.optim.SGD(model.parameters(), lr=0.01), F.cross_entropy, data))
    return [rows / t for t in r.epoch_timer.times[1:]] if is_main_process() else None

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rows', type=int, default=256 * 40, help="training rows (256*40: 40 batches per epoch)")
    p.add_argument('--nh', type=int, default=1000, help="hidden units of both hidden layers")
    p.add_argument('--bs', type=int, default=256, help="global batch size")
    p.add_argument('--epochs', type=int, default=4, help="epochs per run, the first one a warm-up")
    p.add_argument('--repeats', type=int, default=5, help="runs of each configuration, interleaved")
    p.add_argument('--quick', action='store_true', help="tiny settings, to check that it runs")
    a = p.parse_args()
    if a.quick: a.rows, a.nh, a.epochs, a.repeats = 512, 64, 2, 1
    configs = {'1 process x 1 thread': (1, 1, False), '2 processes x 1 thread': (2, 1, True),
               '1 process x 2 threads': (1, 2, False)}
    import ddp  # this file as a module, so that the new processes can import `run`
    speeds = {k: [] for k in configs}
    for _ in range(a.repeats):
        for name, (nproc, threads, distributed) in configs.items():
            speeds[name] += launch(ddp.run, nproc, a.rows, a.nh, a.bs, a.epochs, distributed, threads=threads)[0]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"MLP 784-{a.nh}-{a.nh}-10, global batch {a.bs}, {a.rows} rows, {a.repeats} runs x {a.epochs - 1} timed epochs")
    base = statistics.median(speeds['1 process x 1 thread'])
    print(f"{'configuration':<24} {'samples/s':>10} {'vs 1x1':>7} {'efficiency':>10}")
    for name, (nproc, threads, _) in configs.items():
        med = statistics.median(speeds[name])
        print(f"{name:<24} {med:10.0f} {med / base:7.2f} {med / base / (nproc * threads):10.2f}")

if __name__ == '__main__': main()
