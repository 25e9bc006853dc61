"""Samples per second of data-parallel training on CPU, minifast_nb next to plain PyTorch: 1 process x 1 thread,
2 processes x 1 thread (DDP over gloo), 1 process x 2 threads.

Run from the repository root, on a quiet machine:  python bench/ddp.py           (a few minutes on 2 cores)
                                                   python bench/ddp.py --quick   (tiny settings, a smoke run)

Trains an MLP 784 -> 1000 -> 1000 -> 10 (SGD, lr 0.01) at a global batch size of 256 on random MNIST-shaped rows,
so that compute dominates, in two ways:
  plain PyTorch   a hand-written loop: each epoch a shuffled order of the rows (`torch.randperm` with a seeded
                  generator) cut into global batches of 256, of which rank r of n gathers rows `batch[r::n]` with
                  `index_select` (the layout of minifast_nb's `ShardSampler`), cross-entropy, backward, step,
                  zero_grad; with 2 processes the model is wrapped in `DistributedDataParallel` (gloo). It imports
                  nothing from minifast_nb, and its processes are started by this script.
  minifast_nb     the `Runner` over the library's `DataLoader`; with 2 processes `DistributedCallback` (the same
                  DDP, plus everything the callback adds: the weighting of uneven shares, two small all-reduces
                  per batch for the decisions, the sharded sampler), started by `minifast_nb.distributed.launch`.
  plain + agreement  (2 processes only) plain PyTorch DDP plus what the library's guarantee of agreed stops needs
                  at the least: per training batch, two all-reduces of six integers on a second gloo group, sent
                  without waiting as the library sends its decisions (the first when the forward pass starts, read
                  before backward; the second before backward, read after it). It prices that guarantee apart from
                  the rest of the callback.
Every run is a fresh set of processes with one torch thread each (two in "1 process x 2 threads"); it trains
`--epochs` epochs without validation and times every training epoch after the first (a warm-up) on rank 0. The
six (way, configuration) pairs are interleaved `--repeats` times. Prints the median samples per second of each,
its ratio to the same way's 1 process x 1 thread, the scaling efficiency (samples/s over workers x that way's
1x1 samples/s; 1.0 is perfect scaling), and minifast_nb's samples per second as a ratio of plain PyTorch's.
"""
import argparse, os, platform, socket, statistics, sys, time
from pathlib import Path
import torch, torch.nn.functional as F, torch.distributed as dist, torch.multiprocessing as mp
from torch import nn
sys.path.insert(0, str(Path(__file__).parent))  # the processes import this file as `ddp` to find the run functions

def make_data(rows):
    g = torch.Generator().manual_seed(0)
    return torch.randn(rows, 784, generator=g), torch.randint(0, 10, (rows,), generator=g)

def make_model(nh):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, nh), nn.ReLU(), nn.Linear(nh, nh), nn.ReLU(), nn.Linear(nh, 10))

def weight_sum(model):
    "A fingerprint of the trained weights, to check that both ways train the same model"
    return sum(p.detach().double().sum().item() for p in model.parameters())

def plain_run(rows, nh, bs, epochs, agree=False):
    "Plain PyTorch (DDP if WORLD_SIZE > 1; `agree`: two small all-reduces a batch more): samples/s of epochs 2, 3..."
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    x, y = make_data(rows)
    model = make_model(nh)
    if world > 1:
        dist.init_process_group('gloo', rank=rank, world_size=world)  # MASTER_ADDR/PORT from the environment
        model = nn.parallel.DistributedDataParallel(model)
        if agree: ctrl = dist.new_group(backend='gloo')
    agree = agree and world > 1
    post = lambda: dist.all_reduce(torch.tensor([0, 1, -1, 0, 0, 0]), dist.ReduceOp.MAX, ctrl, async_op=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g, speeds = torch.Generator().manual_seed(0), []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for b in torch.randperm(rows, generator=g).split(bs):
            share = b[rank::world]
            if agree: sent = post()  # the decision, sent as the forward pass starts
            loss = F.cross_entropy(model(x.index_select(0, share)), y.index_select(0, share))
            if agree: sent.wait(); sent = post()  # read before backward; the second one, read after it
            loss.backward()
            if agree: sent.wait()
            opt.step()
            opt.zero_grad()
        speeds.append(rows / (time.perf_counter() - t0))
    if world > 1: dist.destroy_process_group()
    return speeds[1:], weight_sum(model)

def library_run(rows, nh, bs, epochs, distributed):
    "minifast_nb's Runner (DistributedCallback if `distributed`): samples/s of each epoch after the first; weight_sum"
    from minifast_nb.data import Dataset, DataBunch, get_dls
    from minifast_nb.callbacks import Learner, Runner, Callback
    from minifast_nb.distributed import DistributedCallback
    class EpochTimer(Callback):
        "Samples per second of every training epoch; no validation"
        def begin_fit(self): self.speeds = []
        def begin_epoch(self): self.t0 = time.perf_counter()
        def begin_validate(self):
            self.speeds.append(rows / (time.perf_counter() - self.t0))
            return True
    x, y = make_data(rows)
    data = DataBunch(*get_dls(Dataset(x, y), Dataset(x[:bs], y[:bs]), bs, seed=0), c=10)
    model = make_model(nh)
    r = Runner(cbs=[EpochTimer()] + ([DistributedCallback()] if distributed else []))
    r.fit(epochs, Learner(model, torch.optim.SGD(model.parameters(), lr=0.01), F.cross_entropy, data))
    return r.epoch_timer.speeds[1:], weight_sum(model)

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _plain_worker(rank, nproc, port, threads, args, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    results.put((rank, plain_run(*args)))

def plain_launch(nproc, threads, *args):
    "`plain_run(*args)` on `nproc` fresh processes of `threads` threads each; rank 0's result"
    results = mp.get_context('spawn').SimpleQueue()
    mp.spawn(_plain_worker, args=(nproc, _free_port(), threads, args, results), nprocs=nproc, join=True)
    return dict(results.get() for _ in range(nproc))[0]

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rows', type=int, default=256 * 40, help="training rows (256*40: 40 batches per epoch)")
    p.add_argument('--nh', type=int, default=1000, help="hidden units of both hidden layers")
    p.add_argument('--bs', type=int, default=256, help="global batch size")
    p.add_argument('--epochs', type=int, default=4, help="epochs per run, the first one a warm-up")
    p.add_argument('--repeats', type=int, default=5, help="runs of each configuration and way, interleaved")
    p.add_argument('--quick', action='store_true', help="tiny settings, to check that it runs")
    a = p.parse_args()
    if a.quick: a.rows, a.nh, a.epochs, a.repeats = 512, 64, 2, 1
    from minifast_nb.distributed import launch
    import ddp  # this file as a module, so that the new processes can import the run functions
    configs = {'1 process x 1 thread': (1, 1), '2 processes x 1 thread': (2, 1), '1 process x 2 threads': (1, 2)}
    ways = {'plain PyTorch': lambda n, t, *args: plain_launch(n, t, *args),
            'plain + agreement': lambda n, t, *args: plain_launch(n, t, *args, True),
            'minifast_nb': lambda n, t, *args: launch(ddp.library_run, n, *args, n > 1, threads=t)[0]}
    ways_of = lambda c: [w for w in ways if w != 'plain + agreement' or configs[c][0] > 1]
    speeds, weights = {(w, c): [] for c in configs for w in ways_of(c)}, {}
    for _ in range(a.repeats):
        for c, (nproc, threads) in configs.items():
            for w in ways_of(c):
                sp, weights[w, c] = ways[w](nproc, threads, a.rows, a.nh, a.bs, a.epochs)
                speeds[w, c] += sp
    for (w, c), m in weights.items():  # the same model, data, batches and shares: the same weights at the end
        p = weights['plain PyTorch', c]
        if abs(p - m) > 1e-6 * max(1., abs(p)):
            raise SystemExit(f"{c}: plain PyTorch and {w} trained different weights (sums {p!r} and {m!r})")
    med = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; MLP 784-{a.nh}-{a.nh}-10, global batch {a.bs}, {a.rows} rows, "
          f"{a.repeats} runs x {a.epochs - 1} timed epochs of each\n")
    print(f"{'configuration':<24} {'way':<18} {'samples/s':>10} {'vs 1x1':>7} {'efficiency':>10} {'vs plain':>9}")
    for c, (nproc, threads) in configs.items():
        for w in ways_of(c):
            one = w if w in ways_of('1 process x 1 thread') else 'plain PyTorch'  # "plain + agreement" is plain on 1
            m, base = med[w, c], med[one, '1 process x 1 thread']
            vs_plain = f"{m / med['plain PyTorch', c]:8.2f}x" if w != 'plain PyTorch' else ''
            print(f"{c:<24} {w:<18} {m:10.0f} {m / base:7.2f} {m / base / (nproc * threads):10.2f} {vs_plain:>9}")
    c = '2 processes x 1 thread'
    plain, agreed, ours = (med[w, c] for w in ('plain PyTorch', 'plain + agreement', 'minifast_nb'))
    print(f"\nminifast_nb's DistributedCallback, 2 processes: {ours / plain:.3f}x plain DDP's samples/s "
          f"(goal: at least 0.95x); the per-batch agreement alone: {agreed / plain:.3f}x; the rest of the callback: "
          f"{ours / agreed:.3f}x plain + agreement. Every way trained the same weights in every configuration")

if __name__ == '__main__': main()
