"""`migm bench`: quality against latency for vanilla N, shortcut N/B and the training-free peers.

For every (config, predictor): latency per image (warm-up, then repeats timed round-robin over all
points: median and spread),
speedup vs vanilla at the same N (same run), class accuracy and Fréchet distance (the base's
scorer), FID / Inception Score / CLIP score when asked for (shortcut_zoo/image_metrics.py),
token agreement with vanilla sampling of the same seeds, and measured / ideal latency,
where ideal = B·t_full + (N−B)·(t_shortcut + t_head) + N·t_sampling from per-call costs measured in
the same run. Predictors that choose their own full steps (ml-cache) get one row per N (config N{N},
B = their refresh steps); their non-full steps count as (recomputed fraction)·t_full + t_head, the
fraction counted over the row's sampling. Writes results.json, results.md and pareto.png.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from migm.shortcut_zoo.evaluate import FidelityProbe
from migm.shortcut_zoo.export import load_shortcut, read_step_errors
from migm.shortcut_zoo.image_metrics import ImageMetrics, image_metrics
from migm.shortcut_zoo.predictors import check_predictor_name, make_predictor
from migm.shortcut_zoo.sample import check_placement
from migm.shortcut_zoo.stats import bootstrap_ci, pareto_front
from migm.trajectories.checks import check_int, check_outside_data, check_seed, check_writable_dir, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import cycled_conditions, cycled_prompts, sample_many
from migm.trajectories.rollout import SamplerConfig, autocast, rollout, sample_seeds, stack_cond

# image metrics a row can carry (when asked for) and their table headings
IMAGE_METRICS = {"fid": "FID", "inception_score": "IS", "clip_score": "CLIP score"}
QUALITY_LABELS = {
    "fid": "FID (lower is better)",
    "clip_score": "CLIP score (higher is better)",
    "frechet": "Fréchet distance (lower is better)",
    "token_agreement": "token agreement with vanilla (higher is better)",
}

MAX_BOOTSTRAP = 10_000  # resamples: scipy's own default is 9,999; each one recomputes every statistic

MAX_BOOTSTRAP = 10_000  # resamples: scipy's own default is 9,999; each one recomputes every statistic


@dataclass
class BenchConfig:
    shortcuts: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=lambda: ["N8", "N12", "N16", "N32", "N32B12", "N32B8", "N16B6"])
    predictors: list[str] = field(default_factory=lambda: ["shortcut", "cache", "taylor"])
    samples: int = 1000
    seed: int = 0
    batch_size: int = 250
    repeats: int = 5
    out: str = "bench"
    force: bool = False
    prompts: list[str] | None = None  # text bases: samples cycle over these
    placements: list[str] = field(default_factory=lambda: ["uniform"])  # a zoo shortcut's rows per placement
    bootstrap: int = 1000  # resamples of the 95% intervals of the quality columns (0: none)
    fidelity: bool = True  # rollout fidelity: one extra base forward per shortcut step while sampling


def parse_config(spec: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"N(\d+)(?:B(\d+))?", spec.strip())
    if not m:
        raise MigmError(f"configs look like N16 or N32B12, got {spec!r}")
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


def shortcut_method(name: str, placement: str) -> str:
    """A zoo shortcut's row name: shortcut:NAME with uniform placement, shortcut:NAME@auto with auto."""
    return f"shortcut:{name}" + ("" if placement == "uniform" else f"@{placement}")


def own_steps(spec: str) -> bool:
    """Whether the predictor `spec` names picks its own full steps (ml-cache) instead of a budget's."""
    return spec != "shortcut" and make_predictor(spec).full_steps(1) is not None


def _interleaved_times(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float, float]]:
    """Median, min and max seconds of each fn, timed round-robin (one warm-up each first), so that
    a machine that slows down or speeds up during the run shifts every point alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return [(statistics.median(ts), min(ts), max(ts)) for ts in times]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def call_fns(
    base, shortcuts: dict[str, torch.nn.Module], cond: torch.Tensor, N: int
) -> dict[str, Callable[[], object]]:
    """One base forward, one head and one call of each shortcut on the `cond` batch (both CFG
    branches), as functions to time beside the rollouts."""
    batch, L, device = len(cond), base.L, base.device
    rows = stack_cond(cond.to(device), base.null_cond(batch).to(device))
    R = len(rows)
    tokens = torch.full((R, L), base.mask_id, device=device)
    feature = base.forward(tokens, rows)[1]
    K = max(1, L // N)
    new = base.new_tokens(
        torch.zeros(batch, K, dtype=torch.long, device=device),
        torch.arange(K, device=device).expand(batch, K),
        rows,
        torch.arange(2, device=device).repeat_interleave(batch),
    )
    text_rows = {} if (valid := base.feature_valid(rows)) is None else {"feat_valid": valid}
    args = (feature, *new, torch.full((R,), 0.5, device=device))

    def under_autocast(fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            with torch.no_grad(), autocast(base):
                return fn()

        return run

    fns = {"t_full": lambda: base.forward(tokens, rows), "t_head": lambda: base.head(feature, rows)}
    fns |= {f"t_shortcut:{name}": (lambda m=m: m(*args, **text_rows)) for name, m in shortcuts.items()}
    return {key: under_autocast(fn) for key, fn in fns.items()}


def cpu_name() -> str:
    """The CPU model, for benchmark tables."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_bench(cfg: BenchConfig, base) -> list[tuple[int, int | None]]:
    """The configs (N, B) of `cfg`, after checking every option against the base before any work."""
    configs = [parse_config(c) for c in cfg.configs]
    if not configs:
        raise MigmError("--configs names no config; give e.g. N16,N32B12")
    if cfg.samples < 2:
        raise MigmError(f"samples must be at least 2, got {cfg.samples}")
    check_int("--repeats", cfg.repeats)
    check_int("--batch-size", cfg.batch_size)
    check_int("--bootstrap", cfg.bootstrap, low=0, high=MAX_BOOTSTRAP)
    check_seed(cfg.seed)
    for placement in cfg.placements:
        check_placement(placement)
    if not cfg.placements:
        raise MigmError("--placement names no placement; give uniform, auto or uniform,auto")
    if "auto" in cfg.placements and ("shortcut" not in cfg.predictors or not cfg.shortcuts):
        raise MigmError("--placement auto places a zoo shortcut's full steps: give --shortcut zoo/NAME")
    for name in cfg.predictors:
        check_predictor_name(name, base)
    if "shortcut" in cfg.predictors and not cfg.shortcuts and any(b for _, b in configs):
        raise MigmError("the shortcut predictor needs --shortcut zoo/NAME (or leave it out of --predictors)")
    for N, B in configs:
        SamplerConfig.for_base(base, N, B)  # validates 1 <= B <= N <= L before any work
    return configs


@dataclass
class BenchRun:
    """What every point of one bench shares: the base, its samples' conditions, the scorers, and
    vanilla's tokens at each N (the reference of token agreement)."""

    cfg: BenchConfig
    base: Any
    metrics: ImageMetrics | None
    shortcuts: dict[str, torch.nn.Module]
    step_errors: dict[str, dict]  # a zoo shortcut's stored errors, for --placement auto
    labels: torch.Tensor
    cond: torch.Tensor
    texts: list[str] | None
    vanilla: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def scorer(self) -> Callable | None:  # None: no classifier ships for this base; quality is token agreement
        return self.base.scorer

    def sample(self, config: SamplerConfig, predictor=None, seed_offset: int = 0):
        """Sample every condition; with --fidelity a predictor is wrapped in a probe. Returns (samples, probe)."""
        probe = None
        if predictor is not None and self.cfg.fidelity:
            probe = FidelityProbe(predictor, branches=2 if config.guidance > 0 else 1)
        s = sample_many(
            self.base,
            self.labels,
            config,
            self.cfg.seed + seed_offset,
            self.cfg.batch_size,
            predictor=probe or predictor,
            cond=self.cond,
        )
        return s, probe

    def score(self, s) -> dict:
        """The classifier's metrics (None without one) and the image metrics asked for, of one sampling run."""
        m = self.scorer(s.tokens, s.labels) if self.scorer else {"accuracy": None, "frechet": None}
        if self.metrics:
            m |= image_metrics(self.metrics, self.base, s.tokens, self.texts, self.cfg.batch_size)
        return m

    def quality(self, s, N: int, probe: FidelityProbe | None) -> dict:
        """Token agreement with vanilla N and rollout fidelity (per-sample means), and a bootstrap 95%
        interval (KEY_ci) of every quality column the samples allow: the scorer's too."""
        agree = (s.tokens == self.vanilla[N]).double().mean(1).numpy() if N in self.vanilla else None
        fidelity = probe.values() if probe is not None else None
        per_subset = self.base.score_statistics  # the scorer's metrics per subset of samples
        stats = dict(per_subset(s.tokens, s.labels)) if per_subset else {}
        columns = {"token_agreement": 1.0 if agree is None else float(agree.mean())}
        if agree is not None:
            stats["token_agreement"] = lambda i: float(agree[i].mean())
        columns["fidelity"] = None if fidelity is None else float(fidelity.mean())
        if fidelity is not None:
            f = fidelity.numpy()
            stats["fidelity"] = lambda i: float(f[i].mean())
        cfg = self.cfg
        for key, stat in stats.items():  # resampling biases Fréchet distances: estimate ± 1.96 standard errors
            method = "normal" if key in ("frechet", "fid") else "percentile"
            columns[f"{key}_ci"] = (
                bootstrap_ci(stat, len(s.tokens), cfg.bootstrap, cfg.seed, method) if cfg.bootstrap else None
            )
        return columns

    def row(self, s, m: dict, probe, *, config: str, method: str, N: int, B: int, placement: str, **extra) -> dict:
        """One row of the table: the point, its scores, quality columns and image metrics."""
        head = {"config": config, "method": method, "N": N, "B": B, "accuracy": m["accuracy"], "frechet": m["frechet"]}
        image = {k: m[k] for k in IMAGE_METRICS if k in m}
        return {**head, **extra, "placement": placement, "full_steps": s.full, **self.quality(s, N, probe), **image}


def vanilla_points(run: BenchRun, Ns: list[int], progress) -> list[tuple[dict, SamplerConfig, object]]:
    """Vanilla at every N: the reference for speed-up and agreement, with the run-to-run spread of a
    second seed's Fréchet distance / FID / CLIP score. (row, config, predictor) each."""
    points = []
    for N in Ns:
        config = SamplerConfig.for_base(run.base, N)
        if progress:
            progress(f"vanilla N{N}")
        s, _ = run.sample(config)
        m = run.score(s)
        run.vanilla[N] = s.tokens
        spread = {"frechet_spread": None}
        if run.scorer or run.metrics:
            m2 = run.score(run.sample(config, seed_offset=1)[0])
            spread = {"frechet_spread": abs(m["frechet"] - m2["frechet"]) if run.scorer else None}
            if run.metrics:
                spread |= {f"{k}_spread": abs(m[k] - m2[k]) for k in ("fid", "clip_score") if k in m}
        row = run.row(s, m, None, config=f"N{N}", method="vanilla", N=N, B=N, placement="all")
        points.append(({**row, **spread}, config, None))
    return points


def budget_points(run: BenchRun, configs: list[tuple[int, int | None]], progress) -> list[tuple]:
    """Each N/B config below N: a zoo shortcut once per placement (auto: by its stored step errors), the
    peers placed uniformly. (row, config, predictor) each."""
    cfg, points = run.cfg, []
    for N, B in configs:
        if B is None or B == N:
            continue
        config = SamplerConfig.for_base(run.base, N, B)
        methods = [
            (
                shortcut_method(name, placement),
                placement,
                make_predictor("shortcut", model, placed(run, name, placement)),
            )
            for name, model in run.shortcuts.items()
            for placement in cfg.placements
            if "shortcut" in cfg.predictors
        ] + [(p, "uniform", make_predictor(p)) for p in cfg.predictors if p != "shortcut" and not own_steps(p)]
        for method, placement, predictor in methods:
            if progress:
                progress(f"{method} N{N}B{B}")
            s, probe = run.sample(config, predictor)
            row = run.row(s, run.score(s), probe, config=f"N{N}B{B}", method=method, N=N, B=B, placement=placement)
            points.append((row, config, predictor))
    return points


def placed(run: BenchRun, name: str, placement: str) -> dict | None:
    """The step errors a zoo shortcut places its full steps by (None: uniform)."""
    return run.step_errors[name] if placement == "auto" else None


def own_step_points(run: BenchRun, Ns: list[int], progress) -> list[tuple]:
    """Predictors that pick their own full steps (ml-cache): one row per N, B their count."""
    points = []
    for N in Ns:
        for method in filter(own_steps, run.cfg.predictors):
            predictor = make_predictor(method)
            config = SamplerConfig.for_base(run.base, N)
            if progress:
                progress(f"{method} N{N}")
            s, probe = run.sample(config, predictor)
            m = run.score(s)
            recomputed = predictor.recomputed_fraction  # read before the timing runs add to it
            extra = {"recomputed": 0.0 if recomputed is None else recomputed}
            row = run.row(s, m, probe, config=f"N{N}", method=method, N=N, B=len(s.full), placement="own", **extra)
            points.append((row, config, predictor))
    return points


def time_points(run: BenchRun, points: list[tuple], N_max: int) -> dict:
    """Latency of every row (a batch of `--batch-size` rollouts) and the per-call costs of the overhead
    accounting, all timed round-robin; sets latency_* and speedup on the rows. Returns the costs."""
    timing_cond = run.cond[: run.cfg.batch_size]
    seeds = sample_seeds(run.cfg.seed + 10_000, 0, len(timing_cond))
    rollouts = [
        (lambda c=config, p=predictor: rollout(run.base, timing_cond, seeds, c, predictor=p))
        for _, config, predictor in points
    ]
    cost_fns = call_fns(run.base, run.shortcuts, timing_cond, N_max)
    times = _interleaved_times(rollouts + list(cost_fns.values()), run.cfg.repeats)
    n, rows = len(timing_cond), [row for row, _, _ in points]
    for r, (med, lo, hi) in zip(rows, times):
        r.update(latency_s=med / n, latency_min_s=lo / n, latency_max_s=hi / n)
    for r in rows:
        r["speedup"] = (
            next(v["latency_s"] for v in rows if v["method"] == "vanilla" and v["N"] == r["N"]) / r["latency_s"]
        )
    per_call = {key: t[0] / n for key, t in zip(cost_fns, times[len(rows) :])}
    return {
        "t_full": per_call["t_full"],
        "t_head": per_call["t_head"],
        "t_shortcut": {k.split(":", 1)[1]: v for k, v in per_call.items() if k.startswith("t_shortcut:")},
    }


def ideal_latency(rows: list[dict], costs: dict) -> dict[int, float]:
    """Sets ideal_s = B·t_full + (N−B)·(cost of a non-full step) + N·t_sampling and measured_over_ideal on
    every row; returns t_sampling per step at each N (vanilla's latency beyond its base forwards)."""
    sampling = {
        r["N"]: max(0.0, (r["latency_s"] - r["N"] * costs["t_full"]) / r["N"]) for r in rows if r["method"] == "vanilla"
    }
    for r in rows:
        N, B, method = r["N"], r["B"], r["method"]
        if method == "vanilla":
            per_shortcut_step = 0.0
        elif method.startswith("shortcut:"):
            per_shortcut_step = costs["t_shortcut"][method.split(":", 1)[1].split("@")[0]] + costs["t_head"]
        elif "recomputed" in r:  # ml-cache: that fraction of the positions through the whole base, then the head
            per_shortcut_step = r["recomputed"] * costs["t_full"] + costs["t_head"]
        else:  # cache, taylor: a few elementwise ops, then the head
            per_shortcut_step = costs["t_head"]
        r["ideal_s"] = B * costs["t_full"] + (N - B) * per_shortcut_step + N * sampling[N]
        r["measured_over_ideal"] = r["latency_s"] / r["ideal_s"]
    return sampling


def write_outputs(run: BenchRun, out: Path, rows: list[dict], costs: dict, plotted: str) -> dict:
    """results.json, results.md and pareto.png in `out`; returns the result with the files written."""
    base, cfg = run.base, run.cfg
    writable_dir(out, "--out")
    where = {
        "device": str(base.device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "model": base.name,
        "samples": cfg.samples,
        "batch": cfg.batch_size,
    }
    result = {"where": where, "costs": costs, "config": asdict(cfg), "rows": rows}
    if run.metrics:
        result["image_metrics"] = run.metrics.about
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(results_table(result) + "\n")
    title = f"{base.name}, {cfg.samples} samples, {where['device']} ({where['threads']} threads)"
    pareto_plot(rows, out / "pareto.png", title, quality=plotted)
    result["files"] = [str(out / f) for f in ("results.json", "results.md", "pareto.png")]
    return result


def run_bench(
    cfg: BenchConfig, base, progress: Callable[[str], None] | None = None, metrics: ImageMetrics | None = None
) -> dict:
    """Bench the loaded `base`: every config of `cfg` with vanilla sampling and each predictor; `metrics`
    adds FID / Inception Score (with a reference) and CLIP score (text bases) to every row.
    Plan (check the options, load the shortcuts) → sample and score each point → time them → rows → files."""
    configs = check_bench(cfg, base)
    check_outside_data(cfg.out, "--out", itself=True)  # bench writes its own files into the folder
    out = check_writable_dir(cfg.out, "--out")
    labels, cond = cycled_conditions(base, cfg.samples, cfg.prompts)
    run = BenchRun(
        cfg,
        base,
        metrics,
        shortcuts={Path(p).name: load_shortcut(p, base, force=cfg.force) for p in cfg.shortcuts},
        step_errors={Path(p).name: read_step_errors(p) for p in cfg.shortcuts} if "auto" in cfg.placements else {},
        labels=labels,
        cond=cond,
        texts=cycled_prompts(base, cfg.samples, cfg.prompts),
    )
    Ns = sorted({N for N, _ in configs})
    points = vanilla_points(run, Ns, progress) + budget_points(run, configs, progress)
    points += own_step_points(run, Ns, progress)
    if progress:
        progress("latency, all points round-robin")
    costs = time_points(run, points, max(Ns))
    rows = [row for row, _, _ in points]
    sampling = ideal_latency(rows, costs)
    # the plotted quality, and per method the rows on its Pareto front in latency and that quality
    plotted = next((k for k in ("fid", "clip_score") if k in rows[0]), "frechet" if run.scorer else "token_agreement")
    mark_pareto(rows, plotted)
    return write_outputs(run, out, rows, {**costs, "t_sampling_per_step": sampling}, plotted)


def results_table(result: dict) -> str:
    w = result["where"]
    shown = [k for k in IMAGE_METRICS if k in result["rows"][0]]
    lines = [
        f"{w['model']}, {w['samples']} samples per point, batch {w['batch']}, {w['device']} "
        f"({w['cpu']}, {w['threads']} threads), torch {w['torch']}",
        "",
        "| config | method | ms / image | min-max | speed-up vs vanilla N | accuracy | Fréchet | "
        + "".join(f"{IMAGE_METRICS[k]} | " for k in shown)
        + "token agreement | fidelity | measured / ideal | full steps |",
        "|---|---|---|---|---|---|---|" + "---|" * len(shown) + "---|---|---|---|",
    ]
    for r in result["rows"]:
        method = r["method"]
        if "recomputed" in r:  # ml-cache picks its own full steps: say how many, and how much it recomputes
            method += f" (B={r['B']}, {100 * r['recomputed']:.0f}% recomputed)"
        fd = with_ci(r, "frechet", ".2f")
        fd += f" ± {r['frechet_spread']:.2f}" if r.get("frechet_spread") is not None else ""
        steps = "all" if r.get("placement") == "all" else f"{r.get('placement', '')} {r.get('full_steps', '')}"
        lines.append(
            f"| {r['config']} | {method} | {1000 * r['latency_s']:.2f} | {1000 * r['latency_min_s']:.2f}-"
            f"{1000 * r['latency_max_s']:.2f} | {r['speedup']:.2f}x | {with_ci(r, 'accuracy', '.3f')} | {fd} | "
            + "".join(f"{image_cell(r, k)} | " for k in shown)
            + f"{with_ci(r, 'token_agreement', '.3f')} | {with_ci(r, 'fidelity', '.4f')} | "
            f"{r['measured_over_ideal']:.2f} | {steps} |"
        )
    return "\n".join(lines)


def with_ci(row: dict, key: str, fmt: str) -> str:
    """A quality cell: the value and its bootstrap 95% interval, e.g. 0.712 (0.705-0.719); '-' when none."""
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{value:{fmt}}" + (f" ({ci[0]:{fmt}}-{ci[1]:{fmt}})" if ci else "")


def mark_pareto(rows: list[dict], quality: str) -> None:
    """`pareto_front` on every row: no row of the same method is as fast or faster and as good or better
    in `quality`, strictly one of the two."""
    higher = quality not in ("fid", "frechet")
    for method in {r["method"] for r in rows}:
        mine = [r for r in rows if r["method"] == method]
        for r, front in zip(mine, pareto_front([(r["latency_s"], r[quality]) for r in mine], higher)):
            r["pareto_front"] = front


def image_cell(row: dict, key: str) -> str:
    """An image metric's table cell, with the vanilla rows' seed-to-seed spread."""
    cell = f"{row[key]:.2f}"
    return cell + (f" ± {row[key + '_spread']:.2f}" if row.get(key + "_spread") is not None else "")


def pareto_plot(rows: list[dict], path: Path, title: str, quality: str = "frechet") -> None:
    """Quality vs latency, one colour per method; quality is FID or CLIP score when measured, else the
    Fréchet distance, or token agreement with vanilla for bases without a scorer. Beside any quality but
    token agreement, a second panel plots token agreement: its intervals are narrow enough at a few hundred
    samples to tell predictors apart where the Fréchet distance's overlap. A line joins a method's points
    of the same N across budgets (vanilla: across N), error bars are the bootstrap 95% intervals, and a
    ring marks each method's Pareto front in that panel's quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [quality] if quality == "token_agreement" else [quality, "token_agreement"]
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 5), dpi=120, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (ax, q) in enumerate(zip(axes[0], panels)):
        # the side panel leaves vanilla out (its agreement is 1 by definition) so that the peers' spread shows
        quality_panel(ax, rows, q, colours, skip=("vanilla",) if k else ())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def quality_panel(ax, rows: list[dict], quality: str, colours: list[str], skip: tuple[str, ...] = ()) -> None:
    """One panel of `pareto_plot`: `quality` against latency, intervals, lines and Pareto rings."""
    higher = quality not in ("fid", "frechet")
    ring_label = "Pareto front of its method"  # once per panel
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        if method in skip:
            continue
        mine = [r for r in rows if r["method"] == method]
        lines = (
            [mine]
            if method == "vanilla"
            else [[r for r in mine if r["N"] == N] for N in dict.fromkeys(r["N"] for r in mine)]
        )
        for j, pts in enumerate(lines):
            pts = sorted(pts, key=lambda r: (r["N"], -r["B"]) if method != "vanilla" else r["N"])
            xs, ys = [1000 * r["latency_s"] for r in pts], [r[quality] for r in pts]
            cis = [r.get(f"{quality}_ci") or [y, y] for r, y in zip(pts, ys)]
            err = [[max(0.0, y - lo) for y, (lo, _) in zip(ys, cis)], [max(0.0, hi - y) for y, (_, hi) in zip(ys, cis)]]
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                marker="o",
                ms=4,
                capsize=2,
                color=colours[i % len(colours)],
                label=None if j else method,
            )
            for r, x, y in zip(pts, xs, ys):
                ax.annotate(r["config"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = [r for r, f in zip(mine, pareto_front([(r["latency_s"], r[quality]) for r in mine], higher)) if f]
        ax.scatter(
            [1000 * r["latency_s"] for r in front],
            [r[quality] for r in front],
            s=110,
            facecolors="none",
            edgecolors="black",
            linewidths=1,
            label=ring_label,
        )
        ring_label = None
    ax.set_xlabel("latency per image (ms)")
    ax.set_ylabel(QUALITY_LABELS[quality])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
