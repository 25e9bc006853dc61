"""How long the `minifast_train` console script takes to start, next to importing torch alone.

Run from the repository root:  python bench/startup.py           (about a minute)
                              python bench/startup.py --quick   (2 rounds, for a smoke run)

Times three commands, each a fresh process, interleaved A B C A B C ... so that a busy moment of the machine
hits all of them alike, and prints the median wall-clock seconds of each and its ratio to A:
  A  python -c "import torch"                                   the floor any PyTorch script pays
  B  minifast_train --data digits --epochs 1 --no-progress      a whole 1-epoch run, outputs written to a temp folder
  C  minifast_train --help                                      should not need torch at all
It also checks, in one more process, whether `--help` imports torch. The targets (issue 21): B at most 1.5x A on a
quiet machine (a digits run imports neither scikit-learn nor SciPy: nbs/tests/test_cli.ipynb checks it), and `--help`
without importing torch. It measures whatever `minifast_train` is installed in this environment.
"""
import argparse, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HELP_IMPORTS_TORCH = """
import sys
from importlib.metadata import entry_points
(ep,) = entry_points(group='console_scripts', name='minifast_train')
sys.argv = ['minifast_train', '--help']
try: ep.load()()
except SystemExit: pass
sys.stderr.write('TORCH_IMPORTED=%s\\n' % ('torch' in sys.modules))
"""

def find_script():
    "Path of the installed `minifast_train` (next to this Python first)"
    here = Path(sys.executable).parent / 'minifast_train'
    found = str(here) if here.exists() else shutil.which('minifast_train')
    if not found: sys.exit("minifast_train is not installed in this environment: run `pip install -e .` first")
    return found

def timed(cmd):
    "Wall-clock seconds of `cmd` run to completion; fails loudly if it fails"
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t = time.perf_counter() - t0
    if r.returncode: sys.exit(f"{' '.join(cmd)} failed with status {r.returncode}:\n{r.stderr}")
    return t

def help_imports_torch():
    r = subprocess.run([sys.executable, '-c', HELP_IMPORTS_TORCH], capture_output=True, text=True)
    line = next((l for l in r.stderr.splitlines() if l.startswith('TORCH_IMPORTED=')), None)
    if line is None: sys.exit(f"could not check whether --help imports torch:\n{r.stderr}")
    return line.endswith('True')

def cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def main(rounds=7):
    script = find_script()
    with tempfile.TemporaryDirectory() as tmp:
        cmds = {'`python -c "import torch"`': [sys.executable, '-c', 'import torch'],
                '`minifast_train --data digits --epochs 1`': [script, '--data', 'digits', '--epochs', '1',
                                                              '--no-progress', '--out', os.path.join(tmp, 'run')],
                '`minifast_train --help`': [script, '--help']}
        for cmd in cmds.values(): timed(cmd)  # warm-up: fills the OS file cache and Python's bytecode caches
        times = {k: [] for k in cmds}
        for r in range(rounds):
            for k, cmd in cmds.items(): times[k].append(timed(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med['`python -c "import torch"`']
    print(f"Python {platform.python_version()}, {cpu_name()}, {os.cpu_count()} logical CPUs; "
          f"medians of {rounds} interleaved rounds\n")
    print("| command | median s | ratio to `import torch` |")
    print("|---|---:|---:|")
    for k, m in med.items(): print(f"| {k} | {m:.2f} | {m / base:.2f}x |")
    run = med['`minifast_train --data digits --epochs 1`'] / base
    verdict = 'met' if run <= 1.5 else 'NOT met'
    print(f"\n1-epoch digits run: {run:.2f}x `import torch` (target: at most 1.5x on a quiet machine): {verdict}")
    imp = help_imports_torch()
    print(f"`minifast_train --help` imports torch: {'yes (target: no)' if imp else 'no (target met)'}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='2 rounds: a smoke run')
    main(rounds=2 if p.parse_args().quick else 7)
