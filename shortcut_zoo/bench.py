"""`migm bench`: quality against latency for vanilla N, shortcut N/B and the training-free peers.

For every (config, predictor): latency per image (warm-up, then repeats timed round-robin over all
points: median and spread),
speedup vs vanilla at the same N (same run), class accuracy and Fréchet distance (the base's
scorer), FID / Inception Score / CLIP score when asked for (trajectories/metrics.py),
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

import torch

from migm.shortcut_zoo.evaluate import FidelityProbe, bootstrap_ci, pareto_front
from migm.shortcut_zoo.export import load_shortcut, read_step_errors
from migm.shortcut_zoo.predictors import check_predictor_name, make_predictor
from migm.shortcut_zoo.sample import check_placement
from migm.trajectories.checks import check_int, check_outside_data, check_seed, check_writable_dir, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import sample_many, spread, spread_prompts
from migm.trajectories.metrics import ImageMetrics, image_metrics
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
    B2 = len(rows)
    tokens = torch.full((B2, L), base.mask_id, device=device)
    feature = base.forward(tokens, rows)[1]
    K = max(1, L // N)
    new = base.new_tokens(
        torch.zeros(batch, K, dtype=torch.long, device=device),
        torch.arange(K, device=device).expand(batch, K),
        rows,
        torch.arange(2, device=device).repeat_interleave(batch),
    )
    padding = {} if (valid := base.feature_valid(rows)) is None else {"feat_valid": valid}
    args = (feature, *new, torch.full((B2,), 0.5, device=device))

    def under_autocast(fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            with torch.no_grad(), autocast(base):
                return fn()

        return run

    fns = {"t_full": lambda: base.forward(tokens, rows), "t_head": lambda: base.head(feature, rows)}
    fns |= {f"t_shortcut:{name}": (lambda m=m: m(*args, **padding)) for name, m in shortcuts.items()}
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


def run_bench(
    cfg: BenchConfig, base, progress: Callable[[str], None] | None = None, metrics: ImageMetrics | None = None
) -> dict:
    """Bench the loaded `base`: every config of `cfg` with vanilla sampling and each predictor; `metrics`
    adds FID / Inception Score (with a reference) and CLIP score (text bases) to every row."""
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
    check_outside_data(cfg.out, "--out", itself=True)  # bench writes its own files into the folder
    out = check_writable_dir(cfg.out, "--out")
    for N, B in configs:
        SamplerConfig.for_base(base, N, B)  # validates 1 <= B <= N <= L before any work
    shortcuts = {Path(p).name: load_shortcut(p, base, force=cfg.force) for p in cfg.shortcuts}
    step_errors = {Path(p).name: read_step_errors(p) for p in cfg.shortcuts} if "auto" in cfg.placements else {}
    statistics = base.score_statistics  # the scorer's metrics per subset of samples: their intervals
    # Without a scorer for this base (real ImageNet models: no classifier ships), quality is token agreement only.
    scorer = base.scorer
    classifier = scorer or (lambda tokens, labels: {"accuracy": None, "frechet": None})
    labels, cond = spread(base, cfg.samples, cfg.prompts)
    texts = spread_prompts(base, cfg.samples, cfg.prompts)

    def score(s) -> dict:  # the classifier's metrics and the image metrics asked for, of one sampling run
        m = classifier(s.tokens, s.labels)
        return m | (image_metrics(metrics, base, s.tokens, texts, cfg.batch_size) if metrics else {})

    def image_columns(m: dict, again: dict | None = None) -> dict:  # vanilla rows: the seed-to-seed spread too
        out = {k: m[k] for k in IMAGE_METRICS if k in m}
        if again is not None:
            out |= {f"{k}_spread": abs(m[k] - again[k]) for k in ("fid", "clip_score") if k in m}
        return out

    timing_cond = cond[: cfg.batch_size]
    timing_seeds = sample_seeds(cfg.seed + 10_000, 0, len(timing_cond))

    rows, vanilla, timed = [], {}, []  # timed: what each row's latency runs, timed after all sampling

    def timer(config, predictor) -> Callable[[], object]:
        return lambda: rollout(base, timing_cond, timing_seeds, config, predictor=predictor)

    def placed(name: str, placement: str) -> dict | None:  # the step errors a shortcut places by (None: uniform)
        return step_errors[name] if placement == "auto" else None

    def probed(config, predictor) -> FidelityProbe | None:  # fidelity measured while sampling (bench only)
        return FidelityProbe(predictor, branches=2 if config.guidance > 0 else 1) if cfg.fidelity else None

    def quality(s, N: int, probe: FidelityProbe | None = None) -> dict:
        """Token agreement with vanilla N and rollout fidelity (per-sample means), and a bootstrap 95%
        interval (KEY_ci) of every quality column the samples allow: the scorer's too."""
        agree = (s.tokens == vanilla[N]["tokens"]).double().mean(1).numpy() if N in vanilla else None
        fidelity = probe.values() if probe is not None else None
        stats = dict(statistics(s.tokens, s.labels)) if statistics else {}
        columns = {"token_agreement": 1.0 if agree is None else float(agree.mean())}
        if agree is not None:
            stats["token_agreement"] = lambda i: float(agree[i].mean())
        columns["fidelity"] = None if fidelity is None else float(fidelity.mean())
        if fidelity is not None:
            f = fidelity.numpy()
            stats["fidelity"] = lambda i: float(f[i].mean())
        for key, stat in stats.items():  # resampling biases Fréchet distances: estimate ± 1.96 standard errors
            method = "normal" if key in ("frechet", "fid") else "percentile"
            ci = bootstrap_ci(stat, len(s.tokens), cfg.bootstrap, cfg.seed, method) if cfg.bootstrap else None
            columns[f"{key}_ci"] = ci
        return columns

    steps_needed = sorted({N for N, _ in configs})
    for N in steps_needed:  # vanilla at every N: the reference for speed-up and agreement
        config = SamplerConfig.for_base(base, N)
        if progress:
            progress(f"vanilla N{N}")
        s = sample_many(base, labels, config, cfg.seed, cfg.batch_size, cond=cond)
        m = score(s)
        vanilla[N] = {"tokens": s.tokens}
        if scorer or metrics:  # a second seed gives the run-to-run spread of the Fréchet distance / FID / CLIP
            again = sample_many(base, labels, config, cfg.seed + 1, cfg.batch_size, cond=cond)
            m2 = score(again)
        timed.append(timer(config, None))
        rows.append(
            {
                "config": f"N{N}",
                "method": "vanilla",
                "N": N,
                "B": N,
                "accuracy": m["accuracy"],
                "frechet": m["frechet"],
                "frechet_spread": abs(m["frechet"] - m2["frechet"]) if scorer else None,
                "placement": "all",
                "full_steps": s.full,
                **quality(s, N),
                **image_columns(m, m2 if metrics else None),
            }
        )
    for N, B in configs:
        if B is None or B == N:
            continue
        config = SamplerConfig.for_base(base, N, B)
        methods = [  # a zoo shortcut once per placement (auto: by its stored step errors), the peers uniform
            (shortcut_method(name, placement), placement, make_predictor("shortcut", model, placed(name, placement)))
            for name, model in shortcuts.items()
            for placement in cfg.placements
            if "shortcut" in cfg.predictors
        ] + [(p, "uniform", make_predictor(p)) for p in cfg.predictors if p != "shortcut" and not own_steps(p)]
        for method, placement, predictor in methods:
            if progress:
                progress(f"{method} N{N}B{B}")
            probe = probed(config, predictor)
            s = sample_many(base, labels, config, cfg.seed, cfg.batch_size, predictor=probe or predictor, cond=cond)
            m = score(s)
            timed.append(timer(config, predictor))
            rows.append(
                {
                    "config": f"N{N}B{B}",
                    "method": method,
                    "N": N,
                    "B": B,
                    "accuracy": m["accuracy"],
                    "frechet": m["frechet"],
                    "placement": placement,
                    "full_steps": s.full,
                    **quality(s, N, probe),
                    **image_columns(m),
                }
            )

    for N in steps_needed:  # predictors that pick their own full steps: one row per N, B their count
        for method in filter(own_steps, cfg.predictors):
            predictor = make_predictor(method)
            config = SamplerConfig.for_base(base, N)
            if progress:
                progress(f"{method} N{N}")
            probe = probed(config, predictor)
            s = sample_many(base, labels, config, cfg.seed, cfg.batch_size, predictor=probe or predictor, cond=cond)
            m = score(s)
            recomputed = predictor.recomputed_fraction  # read before the timing runs add to it
            timed.append(timer(config, predictor))
            rows.append(
                {
                    "config": f"N{N}",
                    "method": method,
                    "N": N,
                    "B": len(s.full),
                    "placement": "own",
                    "full_steps": s.full,
                    "recomputed": 0.0 if recomputed is None else recomputed,
                    "accuracy": m["accuracy"],
                    "frechet": m["frechet"],
                    **quality(s, N, probe),
                    **image_columns(m),
                }
            )

    # Latency: every rollout and the per-call costs of the overhead accounting, timed round-robin.
    if progress:
        progress("latency, all points round-robin")
    n = len(timing_cond)
    cost_fns = call_fns(base, shortcuts, timing_cond, max(steps_needed))
    times = _interleaved_times(timed + list(cost_fns.values()), cfg.repeats)
    for r, (med, lo, hi) in zip(rows, times):
        r.update(latency_s=med / n, latency_min_s=lo / n, latency_max_s=hi / n)
    for r in rows:
        r["speedup"] = (
            next(v["latency_s"] for v in rows if v["method"] == "vanilla" and v["N"] == r["N"]) / r["latency_s"]
        )
    per_call = {key: t[0] / n for key, t in zip(cost_fns, times[len(rows) :])}
    costs = {
        "t_full": per_call["t_full"],
        "t_head": per_call["t_head"],
        "t_shortcut": {k.split(":", 1)[1]: v for k, v in per_call.items() if k.startswith("t_shortcut:")},
    }
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

    # the plotted quality, and per method the rows on its Pareto front in latency and that quality
    plotted = next((k for k in ("fid", "clip_score") if k in rows[0]), "frechet" if scorer else "token_agreement")
    mark_pareto(rows, plotted)

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
    result = {"where": where, "costs": {**costs, "t_sampling_per_step": sampling}, "config": asdict(cfg), "rows": rows}
    if metrics:
        result["image_metrics"] = metrics.about
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(results_table(result) + "\n")
    pareto_plot(
        rows,
        out / "pareto.png",
        f"{base.name}, {cfg.samples} samples, {where['device']} ({where['threads']} threads)",
        quality=plotted,
    )
    result["files"] = [str(out / f) for f in ("results.json", "results.md", "pareto.png")]
    return result


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
    Fréchet distance, or token agreement with vanilla for bases without a scorer. A line joins a method's
    points of the same N across budgets (vanilla: across N), error bars are the bootstrap 95% intervals,
    and a ring marks each method's Pareto front (`mark_pareto`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
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
    front = [r for r in rows if r.get("pareto_front")]
    if front:
        ax.scatter(
            [1000 * r["latency_s"] for r in front],
            [r[quality] for r in front],
            s=110,
            facecolors="none",
            edgecolors="black",
            linewidths=1,
            label="Pareto front of its method",
        )
    ax.set_xlabel("latency per image (ms)")
    ax.set_ylabel(QUALITY_LABELS[quality])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
