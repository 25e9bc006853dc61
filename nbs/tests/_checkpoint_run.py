"A small training run for tests/test_checkpoint.ipynb, in a new process: `python _checkpoint_run.py key=value ...`"
import os, random, signal, sys
import numpy as np, torch, torch.nn.functional as F
from torch import nn
from minifast_nb.loss import accuracy
from minifast_nb.data import Dataset, DataBunch, get_dls
from minifast_nb.callbacks import Runner, Learner, Callback, AvgStatsCallback
from minifast_nb.annealing import Recorder, ParamScheduler, combine_scheds, cos_1cycle_anneal
from minifast_nb.checkpoint import CheckpointCallback, EarlyStoppingCallback, BestModelCallback

def get_learner(seed=0):
    "Fixed data (120 training items: 8 batches of 16, the last of 8); sampler and model from `seed`"
    torch.manual_seed(0)
    x = torch.randn(150, 10)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    data = DataBunch(*get_dls(Dataset(x[:120], y[:120]), Dataset(x[120:], y[120:]), bs=16, seed=seed), c=3)
    torch.manual_seed(seed); random.seed(seed); np.random.seed(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    return Learner(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3), F.cross_entropy, data)

class Jitter(Callback):
    "Noise on the training inputs from Python's and NumPy's generators"
    stateless = True
    def begin_batch(self):
        if self.run.in_train: self.run.xb = self.run.xb + 0.01 * (random.random() + np.random.rand())

class Stop(Callback):
    "After `n` training batches: ask the checkpoint to save and stop ('stop'), or die at once ('kill')"
    _order, stateless = 30, True
    def __init__(self, how, n): self.how, self.n = how, n
    def after_batch(self):
        if not self.run.in_train or self.run.n_iter != self.n: return
        if self.how == 'kill': os.kill(os.getpid(), signal.SIGKILL)
        self.run.checkpoint.save_now(stop=True)

def get_runner(path=None, every='epoch', patience=100, how=None, n=0):
    sched = combine_scheds([0.3, 0.7], cos_1cycle_anneal(0.01, 0.3, 0.001))
    cbs = [AvgStatsCallback([accuracy]), Recorder(), ParamScheduler('lr', sched), Jitter(),
           EarlyStoppingCallback(patience=patience, min_delta=0.005), BestModelCallback()]
    if path: cbs.append(CheckpointCallback(path, every=every, resume=True))
    if how: cbs.append(Stop(how, n))
    run = Runner(cbs=cbs)
    run.logger = lambda *a: None
    return run

def result(run, learn):
    "What must not depend on interruptions: weights, optimizer, history, statistics, trackers, random states"
    return dict(model=learn.model.state_dict(), opt=learn.opt.state_dict(), lrs=run.recorder.lrs, losses=run.recorder.losses,
                stats=[run.avg_stats.train_stats.state_dict(), run.avg_stats.valid_stats.state_dict()], epoch=run.epoch,
                es=run.early_stopping.state_dict(), best=run.best_model.state_dict(), rng=[random.random(), np.random.rand(), torch.rand(2)])

if __name__ == '__main__':
    a = dict(o.split('=', 1) for o in sys.argv[1:])
    torch.set_num_threads(1)
    learn = get_learner(int(a.get('seed', 1)))
    every = a.get('every', 'epoch')
    run = get_runner(a['path'], every if every == 'epoch' else int(every), int(a.get('patience', 100)), a.get('how'), int(a.get('n', 0)))
    run.fit(int(a['epochs']), learn)
    if 'out' in a: torch.save(result(run, learn), a['out'])
    print('interrupted' if run.checkpoint.interrupted else 'done')
