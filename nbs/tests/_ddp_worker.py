"""Training cases for test_distributed: run on one process there (the reference) and here on several.

Under torchrun: `python -m torch.distributed.run ... _ddp_worker.py MODE [OUT]`, MODE one of
`cases` (every case of `cases()` and the others below, results saved to OUT/rank<r>.pt), `fit` (one case, saved likewise),
`boom` (rank 1 raises, uncaught: the whole job must end with its error), `faults` (rank 1 fails in `begin_fit`, saved
likewise), `ckpt_first` and `ckpt_resume` (the checkpoint job stopped in several ways, then resumed in new processes;
checkpoints in OUT, results saved likewise).
"""
import math, sys, time, torch, torch.nn.functional as F
from torch import nn, optim
from minifast_nb.data import Dataset, DataBunch, get_dls
from minifast_nb.loss import accuracy
from minifast_nb.callbacks import (Learner, Runner, Callback, AvgStatsCallback, TerminateOnNaNCallback, DeviceCallback,
                                   CancelBatchException, CancelEpochException, CancelTrainException)
from minifast_nb.annealing import LR_Find, Recorder, ParamScheduler, combine_scheds, cos_1cycle_anneal
from minifast_nb.checkpoint import CheckpointCallback, read_checkpoint, rank_world
from minifast_nb.distributed import DistributedCallback, init_distributed, destroy_distributed, on_main
from minifast_nb.gradients import GradientAccumulation

def this_rank(): return rank_world()[0]

def make_data(n=1001, bs=64, seed=1, torch_dl=False):
    "Random 20-feature, 5-class rows: `n` to train on (the order seeded by `seed`), `n` to validate on"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2*n, 20, generator=g), torch.randint(0, 5, (2*n,), generator=g)
    train_ds, valid_ds = Dataset(x[:n], y[:n]), Dataset(x[n:], y[n:])
    if not torch_dl: return DataBunch(*get_dls(train_ds, valid_ds, bs, seed=seed), c=5)
    from torch.utils.data import DataLoader, DistributedSampler
    r, w = rank_world()
    dl = lambda ds, b, shuffle: DataLoader(ds, b // w, sampler=DistributedSampler(ds, w, r, shuffle=shuffle, seed=seed))
    return DataBunch(dl(train_ds, bs, True), dl(valid_ds, 2*bs, False), c=5)

class Record(Callback):
    "The targets of every training batch, as `(epoch, iter, yb)`; whether its loss's gradient is weighed (see `_weigh`)"
    _order = 1001  # after DistributedCallback's decision, which weighs
    def __init__(self): self.ys, self.weighed = [], []
    def after_pred(self):
        if self.run.in_train: self.ys.append((self.run.epoch, self.run.iter, self.run.yb.tolist()))
    def before_backward(self): self.weighed.append(bool(self.run.loss._backward_hooks))

class SetEpoch(Callback):
    "What DistributedCallback does for torch's DistributedSampler, for the one-process reference"
    def begin_epoch(self): self.run.data.train_dl.sampler.set_epoch(self.run.epoch)

class Act(Callback):
    "At `event` of batch `it` of epoch `epoch` (training or validation), on the ranks `ranks`: raise `what`, return True, make the loss NaN or the batch double"
    _order = -1  # before the NaN guard
    def __init__(self, what, event, epoch=0, it=2, ranks=(1,), train=True):
        self.what, self.event, self.epoch, self.it, self.ranks, self.train = what, event, epoch, it, ranks, train
    def _act(self, event):
        run = self.run
        if event != self.event or this_rank() not in self.ranks or run.in_train != self.train: return
        if run.epoch != self.epoch or run.iter != self.it: return
        if self.what == 'true': return True
        if self.what == 'nan': run.loss = run.loss * math.nan; return
        if self.what == 'double': run.xb = run.xb.double(); return  # the model's forward pass then fails
        raise self.what
    def begin_batch(self): return self._act('begin_batch')
    def after_loss(self): return self._act('after_loss')
    def before_backward(self): return self._act('before_backward')
    def after_step(self): return self._act('after_step')

class CancelAt(Callback):
    "Raise CancelEpochException in `event` ('begin_epoch' or 'begin_validate') of epoch `epoch` on the ranks `ranks`"
    def __init__(self, event, epoch, ranks): self.event, self.epoch, self.ranks = event, epoch, ranks
    def _act(self, event):
        if event == self.event and self.run.epoch == self.epoch and this_rank() in self.ranks: raise CancelEpochException()
    def begin_epoch(self): self._act('begin_epoch')
    def begin_validate(self): self._act('begin_validate')

class StopAfterEpoch(Callback):
    "Stop the fit after the first epoch on the ranks `ranks` (as a tracker deciding from its own numbers would)"
    def __init__(self, ranks): self.ranks = ranks
    def after_epoch(self): return this_rank() in self.ranks

def train(dist_on, bs=64, epochs=2, cbs=(), n=1001, seed=1, torch_dl=False, lr_find=False, device=None, timeout=60):
    "Fit a seeded MLP, with `DistributedCallback` if `dist_on`; weights, stats, targets seen and error (text)"
    torch.manual_seed(0)
    data = make_data(n, bs, seed, torch_dl)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    cbs = [AvgStatsCallback([accuracy]), Record(), TerminateOnNaNCallback(), *cbs]
    if dist_on: cbs.append(DistributedCallback(timeout=timeout))
    elif torch_dl: cbs.append(SetEpoch())
    if lr_find: cbs.append(LR_Find(max_iter=40))
    if device: cbs.append(DeviceCallback(device))
    run, res = Runner(cbs=cbs), {}
    try: run.fit(epochs, Learner(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, data))
    except Exception as e: res['error'] = f"{type(e).__name__}: {e}"
    res.update(w=[p.detach().cpu().clone() for p in model.parameters()], ys=run.record.ys, weighed=run.record.weighed,
               train=run.avg_stats.train_stats.avg_stats, valid=run.avg_stats.valid_stats.avg_stats)
    if lr_find: res['lrs'] = run.lr_find.lrs
    return res

def cases(single):
    "name -> arguments of `train`; `single`: the one-process reference, where rank 0 acts for rank 1"
    r = (0,) if single else (1,)
    return dict(
        fit={}, pad=dict(bs=50), torch_dl=dict(n=1000, torch_dl=True),
        cancel_batch=dict(cbs=[Act(CancelBatchException(), 'begin_batch', ranks=r)]),
        skip=dict(cbs=[Act('true', 'begin_batch', ranks=r)]),
        cancel_epoch=dict(cbs=[Act(CancelEpochException(), 'begin_batch', it=4, ranks=r)]),
        cancel_valid=dict(cbs=[Act(CancelEpochException(), 'begin_batch', it=1, ranks=r, train=False)]),
        cancel_before_backward=dict(cbs=[Act(CancelEpochException(), 'before_backward', it=4, ranks=r)]),
        cancel_begin_epoch=dict(cbs=[CancelAt('begin_epoch', 1, r)]),  # the last epoch: the samplers stay in step
        cancel_begin_validate=dict(cbs=[CancelAt('begin_validate', 0, r)]),
        cancel_train=dict(cbs=[Act(CancelTrainException(), 'after_step', epoch=1, it=3, ranks=r)]),
        stop_after_epoch=dict(cbs=[StopAfterEpoch(r)]),
        nan=dict(cbs=[Act('nan', 'after_loss', it=3, ranks=r)]),
        boom=dict(cbs=[Act(ValueError('boom on rank 1'), 'after_loss', it=3, ranks=r)]),
        boom_late=dict(cbs=[Act(ValueError('boom on rank 1'), 'after_step', it=3, ranks=r)]),
        boom_valid=dict(cbs=[Act(ValueError('boom on rank 1'), 'after_loss', it=1, ranks=r, train=False)]),
        boom_forward=dict(cbs=[Act('double', 'begin_batch', it=3, ranks=r)]),  # an error in DDP's forward pass
        cancel_batch_loss=dict(cbs=[Act(CancelBatchException(), 'after_loss', it=4, ranks=r)]),  # dropped after backward
        skip_loss=dict(cbs=[Act('true', 'after_loss', it=4, ranks=r)]),
        accum_skip=dict(cbs=[GradientAccumulation(2), Act(CancelBatchException(), 'after_loss', it=5, ranks=r)]),
        lr_find=dict(lr_find=True, epochs=3),
    )

def dist_only_cases():
    "Cases with no one-process twin: what happens is checked on the ranks alone"
    return dict(
        cancel_epoch_late=dict(cbs=[Act(CancelEpochException(), 'after_step', it=4)]),
        cancel_batch_late=dict(cbs=[Act(CancelBatchException(), 'after_step', it=4)]),
        unseeded=dict(seed=10 + this_rank()), sizes=dict(n=1001 + 64 * this_rank()))

def resume(out):
    "Stop both ranks after the first epoch's checkpoint (rank 0 writes it), then resume from it in a new fit"
    path = f"{out}/checkpoint.pt"
    train(True, cbs=[CheckpointCallback(path), Act(CancelTrainException(), 'begin_batch', epoch=1, it=0, ranks=(0, 1))])
    return train(True, cbs=[CheckpointCallback(path, resume=True)])

class EpochStats(Callback):
    "Each epoch's averages `(epoch, train, valid)`, once summed over the ranks"
    _order, stateless = 5, True
    def __init__(self): self.rows = []
    def after_epoch(self):
        st = self.run.avg_stats
        self.rows.append((self.run.epoch, st.train_stats.avg_stats, st.valid_stats.avg_stats))

class Ask(Callback):
    "A signal handler's `save_now(stop=True)` on the ranks `ranks` only: after training batch `n` (counted over epochs), or validation batch `valid` of epoch 0"
    _order, stateless = 30, True
    def __init__(self, ranks, n=None, valid=None): self.ranks, self.n, self.valid = ranks, n, valid
    def after_batch(self):
        run = self.run
        if this_rank() not in self.ranks: return
        if (run.n_iter == self.n) if run.in_train else ((run.epoch, run.iter) == (0, self.valid)): run.checkpoint.save_now(stop=True)

class Peek(Callback):
    "The position that the checkpoint file holds, as this rank reads it right after each save every `every` training batches"
    _order, stateless = 25, True
    def __init__(self, every): self.every, self.seen = every, []
    def after_batch(self):
        run = self.run
        if not (run.in_train and run.n_iter % self.every == 0): return
        ck = read_checkpoint(run.checkpoint.path)
        self.seen.append((ck['epoch'], ck['iter']))

def ckpt_fit(path, resume=False, every='epoch', cbs=(), dist_on=True):
    "The checkpoint job: 301 rows in batches of 32 (the last, 13, shared 7 and 6), dropout, momentum, one-cycle lr, 3 epochs"
    torch.manual_seed(0)
    data = make_data(301, 32)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 5))
    sched = combine_scheds([0.3, 0.7], cos_1cycle_anneal(0.01, 0.2, 0.001))
    cbs = [AvgStatsCallback([accuracy]), Recorder(), ParamScheduler('lr', sched), EpochStats(),
           CheckpointCallback(path, every=every, resume=resume), *cbs] + ([DistributedCallback(timeout=60)] if dist_on else [])
    run, res = Runner(cbs=cbs), {}
    run.logger = lambda *a: None
    try: run.fit(3, Learner(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), F.cross_entropy, data))
    except Exception as e: res['error'] = f"{type(e).__name__}: {e}"
    res.update(w=[p.detach().clone() for p in model.parameters()], epochs=run.epoch_stats.rows, losses=run.recorder.losses,
               lrs=run.recorder.lrs, interrupted=run.checkpoint.interrupted, seen=getattr(getattr(run, 'peek', None), 'seen', None))
    return res

def ckpt_first(d):
    "The checkpoint job: never stopped; stopped by rank 1 in epoch 1; by rank 0 in validation; ended by rank 0's error after saves every 4 batches; writing to a missing folder"
    return dict(ref=ckpt_fit(f'{d}/ref.pt'), mid=ckpt_fit(f'{d}/mid.pt', cbs=[Ask((1,), n=13)]),
                end=ckpt_fit(f'{d}/end.pt', cbs=[Ask((0,), valid=1)]),
                crash=ckpt_fit(f'{d}/crash.pt', every=4, cbs=[Peek(4), Act(ValueError('crash on rank 0'), 'begin_batch', epoch=1, it=4, ranks=(0,))]),
                nodir=ckpt_fit(f'{d}/missing/ck.pt'))

def ckpt_resume(d):
    "In new processes: each job that `ckpt_first` stopped, resumed; and a job of one process resumed"
    res = {k: ckpt_fit(f'{d}/{k}.pt', resume=True, every=4 if k == 'crash' else 'epoch') for k in ('mid', 'end', 'crash')}
    res['one'] = ckpt_fit(f'{d}/one.pt', resume=True)
    return res

class BoomAtBeginFit(Callback):
    "Raise in `begin_fit` on rank 1 only, before DistributedCallback's (`order` -20) or after it (0)"
    def __init__(self, order): self._order = order
    def begin_fit(self):
        if this_rank() == 1: raise ValueError('boom in begin_fit on rank 1')

def faults():
    "Rank 1 fails in a `begin_fit`, before DistributedCallback's or after it; then before it, with no group joined"
    def timed(order):
        t = time.perf_counter()
        res = train(True, cbs=[BoomAtBeginFit(order)], timeout=20)
        return res['error'], time.perf_counter() - t
    init_distributed(timeout=20)
    res = {'before': timed(-20), 'after': timed(0)}
    destroy_distributed()  # rank 1 now joins only in `after_fit`, to tell its error
    return {**res, 'unjoined': timed(-20)}

def disk_full(): raise OSError(28, 'No space left on device')

def main_error():
    "`on_main` of a write that fails on rank 0: the error's text on every rank"
    try: on_main(disk_full)
    except OSError as e: return f"OSError: {e}"

def rank_world_threads():
    "What a process started by `launch` sees"
    init_distributed()
    return (*rank_world(), torch.get_num_threads())

def fail_on_rank1():
    "A fit in which rank 1 raises, uncaught"
    torch.manual_seed(0)
    data = make_data()
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    cbs = [Act(ValueError('boom on rank 1'), 'after_loss', it=3), DistributedCallback(timeout=60)]
    Runner(cbs=cbs).fit(1, Learner(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, data))

if __name__ == '__main__':
    mode, out = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    torch.set_num_threads(1)
    if mode != 'faults': init_distributed(timeout=60)
    if mode == 'boom': fail_on_rank1()
    if mode == 'faults': res = faults()
    if mode == 'fit': res = dict(fit=train(True))
    if mode == 'cases':
        res = {k: train(True, **kw) for k, kw in {**cases(False), **dist_only_cases()}.items()}
        res['main_error'], res['resume'] = main_error(), resume(out)
    if mode == 'ckpt_first': res = ckpt_first(out)
    if mode == 'ckpt_resume': res = ckpt_resume(out)
    torch.save(res, f"{out}/rank{this_rank()}.pt")
    destroy_distributed()
