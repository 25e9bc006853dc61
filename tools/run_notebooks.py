"""Run the chapter notebooks the way Jupyter's "Restart and Run All" does, and fail on the first cell that raises.

Run from the repository root:  python tools/run_notebooks.py                 (every chapter, 2 at a time)
                              python tools/run_notebooks.py nbs/03_data.ipynb --jobs 1

`nbdev_test` skips the cells flagged with settings.ini's `tst_flags` (`#| cuda`, `#| notest`); a reader's Jupyter
runs them all. This script executes every cell of each notebook, in order, in a fresh `python3` kernel (ipykernel,
through nbclient), with the notebook's folder as working directory and matplotlib's inline backend, as Jupyter
does, and stops a notebook at its first error. The notebooks are read, never written: outputs are thrown away.

By default it runs nbs/[0-9]*.ipynb and nbs/index.ipynb (when that has code cells); `--timeout` bounds each
notebook's wall-clock time. It prints one line per notebook and, for a failure, the notebook, the cell (its number
among all cells, as the .ipynb stores them, and its id), the cell's first lines and the end of the traceback.
Exit status: 0 when every notebook ran to the end, 1 otherwise.
"""
import argparse, asyncio, os, re, sys, tempfile, time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent

def default_notebooks():
    "The chapters nbs/[0-9]*.ipynb, then nbs/index.ipynb if it has code"
    nbs = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))
    index = ROOT / 'nbs' / 'index.ipynb'
    if index.exists() and any(c.cell_type == 'code' and c.source.strip() for c in nbformat.read(index, 4).cells):
        nbs.append(index)
    return nbs

class _ThisPython(KernelSpecManager):
    "The `python3` kernel of the Python that runs this script (a user's own python3 kernelspec may name another)"
    def get_kernel_spec(self, kernel_name, *args, **kwargs):
        return KernelSpec(argv=[sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                          display_name='Python 3 (ipykernel)', language='python')

def _name(path):
    try: return str(path.resolve().relative_to(ROOT))
    except ValueError: return str(path)

def _failure(nb, name, err):
    "What to print for the first cell of `nb` that raised: where it is, its first lines, the end of its traceback"
    idx = next((i for i, c in reversed(list(enumerate(nb.cells)))
                if any(o.get('output_type') == 'error' for o in c.get('outputs', []))), None)
    if idx is None:  # a timeout or a dead kernel: the cell that was running has no error output
        idx = next((i for i, c in reversed(list(enumerate(nb.cells))) if c.get('execution_count')), None)
    if idx is None: return f"{name}: FAILED before any cell ran: {type(err).__name__}: {err}"
    cell = nb.cells[idx]
    src = cell.source.splitlines()
    what = f"{err.ename}: {err.evalue}" if isinstance(err, CellExecutionError) else f"{type(err).__name__}: {err}"
    lines = [f"{name}: FAILED at cell {idx} (id {cell.get('id', '?')}): {what}",
             "  the cell begins:"] + [f"    {l}" for l in src[:8]] + (["    ..."] if len(src) > 8 else [])
    tb = next((o.get('traceback', []) for o in cell.get('outputs', []) if o.get('output_type') == 'error'), [])
    if tb:
        text = re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(tb)).splitlines()  # IPython colors the traceback
        lines += ["  traceback (last lines):"] + [f"    {l}" for l in text[-15:]]
    return '\n'.join(lines)

async def run_one(path, timeout, sem, sockets):
    "Execute notebook `path` in a fresh kernel, talking to it over local sockets under folder `sockets`; (ok, message)"
    async with sem:
        name, t0 = _name(path), time.monotonic()
        nb = nbformat.read(path, as_version=4)
        deadline = t0 + timeout
        # Unix sockets rather than TCP ports on the loopback, as the kernel's own warning advises
        ipc = dict(transport='ipc', ip=str(Path(sockets) / path.stem)) if os.name == 'posix' else {}
        km = AsyncKernelManager(kernel_name='python3', kernel_spec_manager=_ThisPython(), **ipc)
        client = NotebookClient(nb, km=km, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                                timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                                allow_errors=False, record_timing=False)
        n_code = sum(c.cell_type == 'code' for c in nb.cells)
        try: await client.async_execute(cleanup_kc=True)  # shut the kernel down (we made its manager)
        except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as e:
            if isinstance(e, CellTimeoutError): e = TimeoutError(f"the notebook ran past its {timeout} s (--timeout)")
            return False, _failure(nb, name, e)
        return True, f"{name}: ok, {n_code} code cells in {time.monotonic() - t0:.0f} s"

async def run_all(paths, jobs, timeout):
    sem = asyncio.Semaphore(jobs)
    with tempfile.TemporaryDirectory(prefix='nbrun') as sockets:
        async def report(p):
            ok, msg = await run_one(p, timeout, sem, sockets)
            print(msg, flush=True)
            return ok
        return await asyncio.gather(*(report(p) for p in paths))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', type=Path, help="notebooks to run (default: the chapters and index)")
    p.add_argument('--jobs', type=int, default=2, help="notebooks run at the same time (default 2)")
    p.add_argument('--timeout', type=int, default=900, help="seconds each notebook may take (default 900)")
    a = p.parse_args()
    if a.jobs < 1 or a.timeout < 1: p.error(f"--jobs and --timeout must be at least 1, got {a.jobs} and {a.timeout}")
    paths = a.notebooks or default_notebooks()
    missing = [str(q) for q in paths if not q.is_file()]
    if missing: p.error(f"no such notebook: {', '.join(missing)}")
    os.environ.pop('MPLBACKEND', None)  # let ipykernel choose matplotlib's inline backend, as in Jupyter
    os.environ['CUDA_VISIBLE_DEVICES'] = ''  # on the CPU, as a reader without a GPU runs them
    t0 = time.monotonic()
    oks = asyncio.run(run_all(paths, a.jobs, a.timeout))
    print(f"notebooks run as in Jupyter, every cell: {sum(oks)} passed, {len(oks) - sum(oks)} failed "
          f"({time.monotonic() - t0:.0f} s)")
    return 0 if all(oks) else 1

if __name__ == '__main__': sys.exit(main())
