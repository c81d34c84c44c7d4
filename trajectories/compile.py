"""`--compile`: sampling through torch.compile (inductor).

What it compiles, and the shapes it sees:
- the base's transformer (`net.features`) and its head (`head`): a batch is one shape at every step (the
  two CFG branches already run as one batch); a text base's sequence length changes with the prompts,
  so after a second length torch compiles one graph with that length dynamic;
- a shortcut (`compile_shortcut`): the rollout pads each step's new tokens to the widest step of the
  rollout (`Predictor.static_new_tokens`), so one graph serves every shortcut step; on CUDA at small
  batch (at most SMALL_BATCH rows) the step is also captured as a CUDA graph ("reduce-overhead"), its
  launch overhead gone. Where a graph cannot be captured, a one-line notice, and the step runs compiled
  without one.

Only sampling is compiled: calls with grad enabled (training through the frozen head) or under a
dispatch mode (FLOP counting) run the eager function. A toolchain that cannot build kernels (no C++
compiler on CPU, no Triton on CUDA) is a one-line error before anything runs; a function inductor cannot
compile is a one-line notice and runs eager. Compiled and eager sampling give the same tokens at fp32
on CPU (tests/test_compile.py).
"""

from __future__ import annotations

import sys

import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import _get_current_dispatch_mode

from migm.trajectories.errors import MigmError

SMALL_BATCH = 32  # rows (samples x CFG branches) up to which a CUDA shortcut step is graph-captured


def notice(text: str) -> None:
    print(f"notice: {text}", file=sys.stderr, flush=True)


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def check_compiler(device: str | torch.device) -> None:
    """Compile and run one tiny function on `device`: a toolchain inductor cannot use is a user error here,
    not a traceback from the middle of a rollout."""
    try:
        torch.compile(lambda x: torch.sin(x) + 1, dynamic=False)(torch.ones(8, device=device))
    except Exception as e:  # BackendCompilerFailed (no C++ compiler), TritonMissing, …
        raise MigmError(f"--compile: torch.compile cannot build kernels on {device}: {first_line(e)}") from None
    finally:
        torch._dynamo.reset()  # the probe's graph is not needed again


class Compiled:
    """`fn` through torch.compile, its eager self kept for training, FLOP counting and fallback."""

    def __init__(self, fn, what: str, graphs: bool = False):
        self.eager, self.what = fn, what
        self.compiled = torch.compile(fn)
        # CUDA graphs for small batches: "reduce-overhead" captures the whole step and replays it
        self.captured = torch.compile(fn, mode="reduce-overhead") if graphs else None
        self.failed = self.skipped = False

    def __call__(self, *args, **kwargs):
        if self.failed or torch.is_grad_enabled() or _get_current_dispatch_mode() is not None:
            return self.eager(*args, **kwargs)
        rows = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 0
        try:
            if self.captured is not None and not self.skipped and rows <= SMALL_BATCH:
                return self.replay(*args, **kwargs)
            return self.compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:  # the backend failed on this function
            self.failed = True
            notice(f"--compile: {self.what} could not be compiled ({first_line(e)}); it runs eager")
            return self.eager(*args, **kwargs)

    def replay(self, *args, **kwargs):
        """The CUDA-graph path: a new step begins at each call, and the output is cloned out of the
        graph's memory pool (the next replay overwrites it; the rollout feeds it back in)."""
        torch.compiler.cudagraph_mark_step_begin()
        skips = counters["inductor"]["cudagraph_skips"]
        out = self.captured(*args, **kwargs)
        if counters["inductor"]["cudagraph_skips"] > skips:
            self.skipped = True  # compiled without a graph: use the plain compiled function from now on
            notice(
                f"--compile: no CUDA graph could be captured for {self.what} (TORCH_LOGS=cudagraphs says why); "
                "it runs compiled without one"
            )
        return out.clone()


def is_compiled(module) -> bool:
    return isinstance(getattr(module, "__dict__", {}).get("forward"), Compiled)


def compile_base(base) -> None:
    """Compile the base's transformer and head in place (their eager versions stay reachable through
    `Compiled.eager`); checks the toolchain first."""
    net = getattr(base, "net", None)
    if net is None or not hasattr(net, "features"):
        raise MigmError(f"--compile: base {base.name} has no transformer (net.features) to compile")
    check_compiler(base.device)
    net.features = Compiled(net.features, f"the {base.name} transformer")
    base.head = Compiled(base.head, f"the {base.name} head")
    base.compiled = True


def compile_shortcut(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Compile a shortcut's forward in place (CUDA graphs at small batch on CUDA); the module keeps its
    parameters, so FLOP counts and state dicts are unchanged."""
    if not is_compiled(model):
        model.forward = Compiled(model.forward, "the shortcut", graphs=torch.device(device).type == "cuda")
    return model
