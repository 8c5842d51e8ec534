"""Where and how the models run: CUDA when there is one, else the CPU with one thread per call.

`runs_models` marks the functions that run models. On the CPU each call uses one thread and the queue runs
as many calls at once as there are cores: these are batch-1 products of a few hundred units, which several
threads do not speed up, and threads that wait on each other stall badly when the cores are shared (5-15x
slower measured here). Set in the calling (worker) thread, this leaves the main thread's setting alone.
On Hugging Face ZeroGPU hardware the `spaces` package is installed and `spaces.GPU` lends a GPU to each
call; elsewhere it is absent (and outside a ZeroGPU Space `spaces.GPU(f) is f` anyway).
"""
import functools

import torch

try:
    from spaces import GPU as on_gpu
except ImportError:
    def on_gpu(fn):
        """No ZeroGPU here: the function runs as it is."""
        return fn

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runs_models(fn):
    """`fn` with one CPU thread per call, on a ZeroGPU GPU where there is one; arguments and results are
    plain data (on ZeroGPU they cross to a GPU worker process)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        torch.set_num_threads(1)
        return fn(*args, **kwargs)
    return on_gpu(run)
