"""What minifast_nb's training loop and DataLoader cost next to raw PyTorch and torch's DataLoader.

Run from the repository root:  python bench/loop.py            (about a minute on 2 CPU cores)
                              python bench/loop.py --quick    (fewer repeats, for a smoke run)

Trains the same MLP (784 -> 50 -> 10, SGD, batch size 64) on 8,000 MNIST-shaped rows (digits upsampled to
28x28; nothing is downloaded) in five ways, interleaved A B C D E A B C D E ... in one process, and prints the
median seconds per epoch and each one's ratio to the raw loop:
  1. raw PyTorch, slices of a shuffled index tensor;  2. the same with torch's DataLoader;
  3. minifast_nb's Runner with AvgStatsCallback([accuracy]), Recorder and ParamScheduler (cosine lr);
  4. raw PyTorch gathering batches with `index_select`, as the library's Dataset does (the data path alone);
  5. raw PyTorch doing exactly the work of 3's callbacks, inline: the same `index_select` batches and cosine lr
     set before every batch, each training batch's loss and accuracy added (times its size) to sums kept as
     tensors as AvgStatsCallback does, the lr and the detached loss recorded as the Recorder does, validation in
     batches of 128 summed the same way. It gives the same numbers as 3 (checked before timing), so 3 over 5 is
     what the Runner and its callbacks cost over the same computation.
Every epoch, all of them also compute the validation loss and accuracy on 2,000 rows, since that is what an epoch
of a real training loop does. Then it times the two DataLoaders alone and measures memory growth over a long run
of the library's loop. Torch runs single-threaded.
"""
import argparse, gc, math, platform, statistics, time
from functools import partial
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader, TensorDataset

from minifast_nb.datasets import get_digits, normalize
from minifast_nb.loss import accuracy
from minifast_nb.data import Dataset, DataLoader, Sampler, DataBunch, get_dls
from minifast_nb.callbacks import Learner, Runner, Callback, AvgStatsCallback
from minifast_nb.annealing import Recorder, ParamScheduler, sched_cos

BS, LR, NH = 64, 0.1, 50

def make_data(n_train=8000, n_valid=2000):
    "Digits upsampled to 28x28 and repeated to `n_train`+`n_valid` rows, normalized with the training stats"
    x, y, xv, yv = get_digits()
    x, y = torch.cat([x, xv]), torch.cat([y, yv])
    x = F.interpolate(x.view(-1, 1, 8, 8), size=(28, 28), mode='bilinear', align_corners=False).view(-1, 784)
    idx = torch.arange(n_train + n_valid) % len(x)
    x, y = x[idx], y[idx]
    x = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))  # no two rows identical
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    m, s = xt.mean(), xt.std()
    return normalize(xt, m, s), yt, normalize(xv, m, s), yv

def make_model(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, NH), nn.ReLU(), nn.Linear(NH, 10))
    return model, torch.optim.SGD(model.parameters(), lr=LR)

def raw_validate(model, xv, yv):
    model.eval()
    tot_loss, tot_acc = 0., 0.
    with torch.no_grad():
        for i in range(0, len(xv), BS * 2):
            xb, yb = xv[i:i + BS * 2], yv[i:i + BS * 2]
            pred = model(xb)
            tot_loss += F.cross_entropy(pred, yb, reduction='sum').item()
            tot_acc += (pred.argmax(1) == yb).sum().item()
    return tot_loss / len(xv), tot_acc / len(xv)

def raw_fit(epochs, data, seed, batches):
    "A raw PyTorch loop over the batches `batches(x, y, generator)` gives each epoch; validation after each epoch"
    x, y, xv, yv = data
    model, opt = make_model(seed)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for xb, yb in batches(x, y, g):
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
        res = raw_validate(model, xv, yv)
    return res

def slices(x, y, g):
    "1. a shuffled index tensor, slices of the tensors"
    idx = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), BS):
        b = idx[i:i + BS]
        yield x[b], y[b]

def torch_dl(x, y, g):
    "2. torch.utils.data.DataLoader(TensorDataset(...), shuffle=True)"
    return TorchDataLoader(TensorDataset(x, y), batch_size=BS, shuffle=True, generator=g)

def index_select(x, y, g):
    "4. as 1, but gathered with `index_select`, as the library's Dataset does"
    for b in torch.randperm(len(x), generator=g).split(BS): yield x.index_select(0, b), y.index_select(0, b)

def lr_at(pos):
    "The library row's schedule, sched_cos(LR, LR/10), at `pos` in [0, 1]"
    return LR + (1 + math.cos(math.pi * (1 - pos))) * (LR / 10 - LR) / 2

def same_work_fit(epochs, data, seed):
    "5. raw PyTorch computing what the Runner's callbacks compute; the last epoch's stats, the lrs and the losses"
    x, y, xv, yv = data
    model, opt = make_model(seed)
    g = torch.Generator().manual_seed(seed)
    n_batches, lrs, losses = (len(x) - 1) // BS + 1, [], []
    for epoch in range(epochs):
        model.train()
        count, sums, buf = 0, [torch.zeros(()), torch.zeros(())], []
        for i, b in enumerate(torch.randperm(len(x), generator=g).split(BS)):
            for pg in opt.param_groups: pg['lr'] = lr_at((epoch + i / n_batches) / epochs)  # ParamScheduler
            xb, yb = x.index_select(0, b), y.index_select(0, b)
            pred = model(xb)
            loss = F.cross_entropy(pred, yb)
            bn, p = yb.shape[0], pred.detach()  # AvgStatsCallback: loss and accuracy summed per sample
            count += bn
            sums[0].add_(loss.detach(), alpha=bn)
            sums[1].add_((p.argmax(1) == yb).float().mean(), alpha=bn)
            loss.backward()
            opt.step()
            opt.zero_grad()
            lrs.append(opt.param_groups[0]['lr']); buf.append(loss.detach())  # Recorder
        losses += torch.stack(buf).float().tolist()
        train_stats = [o / count for o in torch.stack(sums).tolist()]  # AvgStatsCallback's line for the epoch
        model.eval()
        count, sums = 0, [torch.zeros(()), torch.zeros(())]
        with torch.no_grad():
            for b in torch.arange(len(xv)).split(BS * 2):
                xb, yb = xv.index_select(0, b), yv.index_select(0, b)
                pred = model(xb)
                bn = yb.shape[0]
                count += bn
                sums[0].add_(F.cross_entropy(pred, yb), alpha=bn)
                sums[1].add_((pred.argmax(1) == yb).float().mean(), alpha=bn)
        valid_stats = [o / count for o in torch.stack(sums).tolist()]
    return train_stats + valid_stats, lrs, losses

def check_same_work(data):
    "Rows 3 and 5 must compute the same thing: the same stats, learning rates and losses over 2 epochs"
    learn, run = library_runner(data, 0)
    run.fit(2, learn)
    st = run.avg_stats
    ours = st.train_stats.avg_stats + st.valid_stats.avg_stats, run.recorder.lrs[0], run.recorder.losses
    raw = same_work_fit(2, data, 0)
    if [len(o) for o in ours] != [len(o) for o in raw]: diff = float('inf')
    else: diff = max(abs(a - b) for o, r in zip(ours, raw) for a, b in zip(o, r))
    if diff > 1e-5:
        raise SystemExit(f"the like-for-like raw loop does not compute what the Runner does: largest difference {diff}")
    return diff

def library_runner(data, seed):
    x, y, xv, yv = data
    train_dl, valid_dl = get_dls(Dataset(x, y), Dataset(xv, yv), BS, seed=seed)
    learn = Learner(*make_model(seed), F.cross_entropy, DataBunch(train_dl, valid_dl, c=10))
    cbfs = [partial(AvgStatsCallback, [accuracy]), Recorder, partial(ParamScheduler, 'lr', sched_cos(LR, LR / 10))]
    run = Runner(cb_funcs=cbfs)  # Runner brings its TrainEvalCallback
    run.logger = lambda *args: None  # AvgStatsCallback's per-epoch lines: the raw loops print nothing either
    return learn, run

def fit_library(epochs, data, seed, quiet=True):
    "3. minifast_nb: Runner + TrainEvalCallback, AvgStatsCallback([accuracy]), Recorder, ParamScheduler"
    learn, run = library_runner(data, seed)
    run.fit(epochs, learn)
    return run.avg_stats.valid_stats.avg_stats

def timed(f, *args):
    gc.collect()
    t0 = time.perf_counter(); f(*args); return time.perf_counter() - t0

def cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def rss_mb():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * 4096 / 2**20

def main(repeats=7, epochs=3, long_epochs=50, dl_repeats=7):
    torch.set_num_threads(1)
    data = make_data()
    ways = {'raw PyTorch (slices)': partial(raw_fit, batches=slices),
            'raw PyTorch + torch DataLoader': partial(raw_fit, batches=torch_dl),
            'minifast_nb Runner': fit_library,
            'raw PyTorch (index_select)': partial(raw_fit, batches=index_select),
            "raw PyTorch, the Runner's work": same_work_fit}
    diff = check_same_work(data)
    for f in ways.values(): f(1, data, 0)  # warm-up
    times = {k: [] for k in ways}
    for r in range(repeats):
        for k, f in ways.items(): times[k].append(timed(f, epochs, data, r) / epochs)
    base = statistics.median(times['raw PyTorch (slices)'])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, Python {platform.python_version()}, "
          f"{cpu_name()}; {repeats} repeats x {epochs} epochs, 8,000 rows, bs {BS}\n")
    print(f"{'loop':34} {'median s/epoch':>15} {'ratio to raw':>13}")
    for k, ts in times.items():
        med = statistics.median(ts); print(f"{k:34} {med:15.4f} {med / base:12.2f}x")
    ours = statistics.median(times['minifast_nb Runner'])
    same = statistics.median(times["raw PyTorch, the Runner's work"])
    print(f"\nthe Runner over raw PyTorch doing the same work: {ours / same:.3f}x (goal: at most 1.03x); "
          f"the two give the same stats, learning rates and losses (largest difference {diff:.1e})")

    x, y = data[0], data[1]
    ours = DataLoader(Dataset(x, y), Sampler(Dataset(x, y), BS, shuffle=True, seed=0))
    theirs = TorchDataLoader(TensorDataset(x, y), batch_size=BS, shuffle=True)
    def iterate(dl):
        for xb, yb in dl: pass
    dl_times = {'minifast_nb DataLoader': [], 'torch DataLoader': []}
    for r in range(dl_repeats):
        dl_times['minifast_nb DataLoader'].append(timed(iterate, ours))
        dl_times['torch DataLoader'].append(timed(iterate, theirs))
    print(f"\n{'DataLoader alone (no training)':34} {'batches/s':>15} {'speed-up':>13}")
    torch_bps = len(theirs) / statistics.median(dl_times['torch DataLoader'])
    for k, ts in dl_times.items():
        bps = len(ours) / statistics.median(ts); print(f"{k:34} {bps:15.0f} {bps / torch_bps:12.2f}x")

    class RSSPerEpoch(Callback):
        "Resident memory (MiB) after each epoch"
        def begin_fit(self): self.rss = []
        def after_epoch(self): gc.collect(); self.rss.append(rss_mb())
    learn, run = library_runner(data, 0)
    run.add_cbs(RSSPerEpoch())
    run.fit(long_epochs, learn)
    rss, losses = run.rss_per_epoch.rss, run.recorder.losses
    print(f"\nmemory over one {long_epochs}-epoch run of the library's loop: RSS {rss[4]:.1f} MiB after epoch 5, "
          f"{rss[-1]:.1f} MiB after epoch {long_epochs} ({rss[-1] - rss[4]:+.1f} MiB; peak {max(rss):.1f}); "
          f"the Recorder holds {len(losses)} losses of type {type(losses[-1]).__name__}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='3 repeats and a 10-epoch memory run: a smoke run')
    a = p.parse_args()
    main(repeats=3, long_epochs=10, dl_repeats=3) if a.quick else main()
