"""LLM planner benchmark: time per plan, tokens/s and plan correctness of the ``llm`` backend.

Cases: a few built-in instructions on the demo scene (one in Chinese) plus every instruction of
the shipped scenarios (``scenarios/*.yaml``). A case is *correct* when the model's goals resolve
to the same concrete wants as the deterministic symbolic parser's (or, for the Chinese case,
move the expected objects), and *valid* when the plan passed the shared validator.

    python -m bench.llm [--model qwen2.5-coder-0.5b] [--device auto|cpu|cuda] [--out bench/results]

Writes ``llm[_DEVICE].json`` and ``llm[_DEVICE].png``.

``--corpus en,zh`` instead runs the llm planner over the instruction corpus (``bench/corpus``,
issue 15) and reports, per mode, how many instructions were carried out as meant (a plan whose
goals mean the expected goals, or a refusal where a refusal is expected), how many were
refused, and how many were **wrong but accepted** (a plan whose goals mean something else:
must be 0). Modes: ``planner`` (as shipped: the grammar first, the model where it does not
reach) or ``model`` (``--model-only``: every instruction to the model, its reading confirmed).
``--corpus-limit N`` takes every k-th entry so that N remain (a spread subset), for CPU runs.
Writes ``llm_corpus[_DEVICE].json``. ``--export-kit DIR`` also writes what a
GPU machine without the weights needs to replay the run (model config, tokenizer, the recorded
prompts and answer tokens); ``--replay DIR`` times those same answers there: the same model
shape with random weights, the same prompts, grammar masking and forward passes, the recorded
token chosen at each step. Correctness figures come from the real run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench import corpus_cases, scenes
from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.goals import CancelTask, GoalSet
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.brain_agent.resolve import resolve_goals

HERE = Path(__file__).resolve().parent
ZH_DEMO = "拿离杯子最近的水果，并递送一把水果刀"
BUILTIN = [
    ("demo-en", "Bring the fruit nearest the cup and a fruit knife to the office desk", None),
    ("demo-zh", ZH_DEMO, {"apple", "knife"}),  # no destination given: the objects must move
    ("put-in", "put the knife in the basket", None),
    ("goto", "g1, go to the custom table", None),
    ("hand-to", "hand the banana to agilex", None),
    ("all-at", "bring all fruit on the kitchen table to the custom table", None),
]
KIT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "chat_template.jinja", "special_tokens_map.json")


@dataclass
class Case:
    name: str
    text: str
    scene: dict[str, Any]
    robots: list[dict[str, Any]]
    subjects: set[str] | None = None  # expected moved objects, when no symbolic reference
    result: dict[str, Any] = field(default_factory=dict)

    def ctx(self) -> Any:
        return scenes.build(self.scene, self.robots, task_id=self.name)


def load_cases(pattern: str) -> list[Case]:
    cases = [Case(n, t, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS, s) for n, t, s in BUILTIN]
    for path in sorted(glob.glob(pattern)):
        scene, robots, instructions = scenes.from_scenario(path)
        for i, ins in enumerate(instructions):
            cases.append(Case(f"{Path(path).stem}#{i}", ins["text"], scene, robots))
    return cases


def want_keys(goals: GoalSet, ctx: Any) -> set[tuple[Any, ...]]:
    """What the goals mean concretely: cancelled task ids, else resolved wants."""
    cancels = {("cancel", g.task_id) for g in goals.goals if isinstance(g, CancelTask)}
    if cancels:
        return cancels
    return {(w.kind, w.subject, w.target, w.robot) for w in resolve_goals(goals, ctx)}


def reference(case: Case) -> set[tuple[Any, ...]] | None:
    try:
        return want_keys(SymbolicPlanner().parse_sync(case.text, case.ctx()), case.ctx())
    except BrainError:
        return None


async def run_case(planner: Any, case: Case) -> None:
    ctx = case.ctx()
    planner.history.clear()
    started, cpu = time.perf_counter(), time.process_time()
    res: dict[str, Any] = {"valid": False, "correct": False}
    try:
        plan = await planner.plan(case.text, ctx)
        res.update(valid=True, steps=len(plan.steps))
        got = want_keys(planner.last_goals, ctx)
        if case.subjects is not None:
            res["correct"] = {k[1] for k in got} == case.subjects
        else:
            ref = reference(case)
            res.update(correct=ref is not None and got == ref, has_reference=ref is not None)
    except BrainError as exc:
        res["error"] = exc.reason
    res["seconds"] = time.perf_counter() - started
    res["cpu_s"] = time.process_time() - cpu  # all threads: robust to other load on the box
    gens = list(planner.history)
    res.update(_gen_stats([g for _, g in gens]))
    res["answer"] = gens[-1][1].text if gens else ""
    res["attempts_detail"] = [{"messages": m, "tokens": list(g.tokens)} for m, g in gens]
    case.result = res


def _gen_stats(gens: list[Any]) -> dict[str, Any]:
    gen_s = sum(g.seconds for g in gens)
    new = sum(g.new_tokens for g in gens)
    return {"attempts": len(gens), "gen_seconds": gen_s, "new_tokens": new,
            "prompt_tokens": gens[-1].prompt_tokens if gens else 0,
            "cached_tokens": gens[-1].cached_tokens if gens else 0,
            "tokens_per_s": new / gen_s if gen_s else 0.0}


def summarize(cases: list[Case], extra: dict[str, Any]) -> dict[str, Any]:
    secs = [c.result["seconds"] for c in cases]
    gen_s = sum(c.result["gen_seconds"] for c in cases)
    toks = sum(c.result["new_tokens"] for c in cases)
    scen = [c for c in cases if "#" in c.name]
    return {**extra, "cases": len(cases), "valid": sum(c.result["valid"] for c in cases),
            "correct": sum(c.result["correct"] for c in cases),
            "scenario_cases": len(scen), "scenario_correct": sum(c.result["correct"] for c in scen),
            "p50_s_per_plan": statistics.median(secs), "mean_s_per_plan": statistics.fmean(secs),
            "max_s_per_plan": max(secs), "min_s_per_plan": min(secs),
            "p50_cpu_s_per_plan": statistics.median(c.result.get("cpu_s", 0.0) for c in cases),
            "tokens_per_s": toks / gen_s if gen_s else 0.0,
            "mean_new_tokens": toks / max(1, sum(c.result["attempts"] for c in cases))}


def plot(cases: list[Case], summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in cases]
    colors = ["tab:green" if c.result["correct"] else "tab:orange" if c.result["valid"]
              else "tab:red" for c in cases]
    fig, (a, b) = plt.subplots(2, 1, figsize=(max(8, len(cases) * 0.55), 7), sharex=True)
    a.bar(names, [c.result["seconds"] for c in cases], color=colors)
    a.set_ylabel("s per plan (all attempts)")
    a.set_title(f"llm planner, {summary['model']} on {summary['device']}: "
                f"{summary['correct']}/{summary['cases']} correct (green), valid-but-wrong "
                f"orange, failed red", fontsize=9)
    b.bar(names, [c.result["tokens_per_s"] for c in cases], color="tab:blue")
    b.set_ylabel("generated tokens/s")
    b.tick_params(axis="x", rotation=70, labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def export_kit(results: Path, model: str, cache: str | None, kit: Path) -> None:
    """Config, tokenizer and the recorded run: everything a replay needs, minus the weights."""
    from robobus.brain_agent.llm import models

    folder = models.resolve(model, models.cache_root(cache))
    (kit / "model").mkdir(parents=True, exist_ok=True)
    for name in KIT_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, kit / "model" / name)
    shutil.copy2(results, kit / "llm.json")


def replay(kit: Path, device: str, dtype: str) -> tuple[list[Case], dict[str, Any]]:
    """Time the recorded answers on ``device`` with a random-weight model of the same shape."""
    import torch
    import transformers

    from robobus.brain_agent.llm import prompts
    from robobus.brain_agent.llm.constrain import grammar_for
    from robobus.brain_agent.llm.engine import LocalEngine, pick_device, pick_dtype
    from robobus.brain_agent.llm.planning import schema_for

    recorded = json.loads((kit / "llm.json").read_text())
    dev = pick_device(device)
    config = transformers.AutoConfig.from_pretrained(str(kit / "model"))
    lm = transformers.AutoModelForCausalLM.from_config(config, dtype=pick_dtype(dtype, dev))
    tok = transformers.AutoTokenizer.from_pretrained(str(kit / "model"))
    engine = LocalEngine(lm.to(dev).eval(), tok, name=recorded["summary"]["model"], device=dev)
    engine.warm_prefix(prompts.prefix_messages())
    cases = []
    for rec in [*recorded["cases"][:1], *recorded["cases"]]:  # the first one twice: warm-up
        case = Case(rec["name"], rec["text"], rec["scene"], rec["robots"])
        grammar = grammar_for(schema_for(case.text, case.ctx()))
        started = time.perf_counter()
        gens = [engine.generate(a["messages"], grammar, replay=a["tokens"])
                for a in rec["result"]["attempts_detail"]]
        case.result = {**rec["result"], "seconds": time.perf_counter() - started,
                       **_gen_stats(gens), "attempts_detail": []}
        cases.append(case)
    extra = {**recorded["summary"], "device": dev, "mode": "replay (random weights, recorded tokens)",
             "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if dev == "cuda" else ""}
    return cases[1:], extra


async def measure(args: argparse.Namespace) -> tuple[list[Case], dict[str, Any]]:
    import torch

    from robobus.brain_agent.llm import models
    from robobus.brain_agent.planners.llm import LlmPlanner

    t0 = time.perf_counter()
    models.resolve(args.model, models.cache_root(args.cache))
    prepare = time.perf_counter() - t0
    # grammar_first=False: these cases time the model itself (the grammar reads most of them)
    planner = LlmPlanner(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache,
                         grammar_first=False)
    t0 = time.perf_counter()
    await planner.warmup()
    load = time.perf_counter() - t0
    cases = [c for c in load_cases(args.scenarios) if not args.only or args.only in c.name]
    cases = cases[: args.limit or None]
    for case in cases:
        await run_case(planner, case)
        r = case.result
        print(f"{case.name:28s} {'ok ' if r['correct'] else 'val' if r['valid'] else 'ERR'} "
              f"{r['seconds']:6.2f}s {r['tokens_per_s']:5.1f} tok/s x{r['attempts']} {r['answer']}")
    extra = {"model": args.model, "device": planner.engine().device, "dtype": args.dtype,
             "torch": torch.__version__, "prepare_s": prepare, "load_s": load,
             "threads": torch.get_num_threads(), "mode": "real",
             "loadavg_1m_after": os.getloadavg()[0]}
    return cases, extra


def corpus_entries(names: str, limit: int) -> list[corpus_cases.Entry]:
    """The corpus files named (``en,zh``), every k-th entry when ``limit`` is set."""
    entries = [e for n in names.split(",") if (corpus_cases.CORPUS / f"{n}.yaml").is_file()
               for e in corpus_cases.load(corpus_cases.CORPUS / f"{n}.yaml")]
    if limit and limit < len(entries):
        step = len(entries) / limit
        entries = [entries[int(i * step)] for i in range(limit)]
    return entries


async def judge(planner: Any, entry: corpus_cases.Entry) -> dict[str, Any]:
    """One corpus entry through ``planner.read``: outcome, time, model answers."""
    ctx = entry.ctx()
    calls = planner.model_calls
    started = time.perf_counter()
    row: dict[str, Any] = {"name": entry.name, "text": entry.text}
    try:
        await planner.read(entry.text, ctx)  # the goals the brain would act on (or cancel)
        got = corpus_cases.meaning(planner.last_goals, ctx)
        want = corpus_cases.expected(entry)
        row["outcome"] = "as_meant" if got == want else "wrong_accepted"
        row["got"] = sorted(map(str, got))
    except BrainError as exc:
        row.update(code=exc.code, reason=exc.reason[:300])
        if entry.error is None:
            row["outcome"] = "refused"
        else:
            row["outcome"] = "as_meant"
            row["same_code"] = exc.code == entry.error
    row.update(seconds=time.perf_counter() - started, model_calls=planner.model_calls - calls)
    return row


def corpus_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    count = {k: sum(r["outcome"] == k for r in rows) for k in ("as_meant", "refused",
                                                                "wrong_accepted")}
    secs = [r["seconds"] for r in rows]
    return {"entries": n, **count, "as_meant_pct": 100.0 * count["as_meant"] / max(1, n),
            "refusal_code_exact": sum(bool(r.get("same_code")) for r in rows),
            "model_calls": sum(r["model_calls"] for r in rows),
            "p50_s": statistics.median(secs) if secs else 0.0,
            "max_s": max(secs) if secs else 0.0}


async def measure_corpus(args: argparse.Namespace) -> dict[str, Any]:
    from robobus.brain_agent.planners.llm import LlmPlanner

    entries = corpus_entries(args.corpus, args.corpus_limit)
    out: dict[str, Any] = {"model": args.model, "corpus": args.corpus, "subset": len(entries),
                           "max_attempts": args.max_attempts, "modes": {}}
    modes = ["model"] if args.model_only else ["planner"]
    for mode in modes:
        planner = LlmPlanner(args.model, device=args.device, dtype=args.dtype,
                             cache_dir=args.cache, grammar_first=mode == "planner",
                             max_attempts=args.max_attempts)
        await planner.warmup()
        out["device"] = planner.engine().device
        rows = []
        for entry in entries:
            rows.append(await judge(planner, entry))
            r = rows[-1]
            print(f"{mode:7s} {r['outcome']:14s} {r['seconds']:6.2f}s x{r['model_calls']} "
                  f"{entry.name} {entry.text!r} {r.get('code', '')}", flush=True)
        out["modes"][mode] = {"summary": corpus_summary(rows), "rows": rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--cache", default=None, help="conversion cache (default ~/.cache/robobus)")
    ap.add_argument("--scenarios", default=str(HERE.parent / "scenarios" / "*.yaml"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    ap.add_argument("--only", default="", help="only cases whose name contains this")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--export-kit", type=Path, help="after the run, write a replay kit here")
    ap.add_argument("--replay", type=Path, help="time a kit's recorded answers (GPU, no weights)")
    ap.add_argument("--from-results", type=Path,
                    help="with --export-kit: export from this earlier run's JSON, run nothing")
    ap.add_argument("--corpus", default="", help="run the corpus files named (en,zh) instead")
    ap.add_argument("--corpus-limit", type=int, default=0, help="a spread subset of N entries")
    ap.add_argument("--model-only", action="store_true",
                    help="with --corpus: every entry through the model (no grammar first)")
    ap.add_argument("--max-attempts", type=int, default=3, help="model answers per instruction")
    args = ap.parse_args()
    if args.corpus:
        result = anyio.run(measure_corpus, args)
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "llm_corpus" if result["device"] == "cpu" else f"llm_corpus_{result['device']}"
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
        print(json.dumps({m: v["summary"] for m, v in result["modes"].items()}, indent=1))
        return
    if args.export_kit and args.from_results:
        export_kit(args.from_results, args.model, args.cache, args.export_kit)
        return
    if args.replay:
        cases, extra = replay(args.replay, args.device, args.dtype)
    else:
        cases, extra = anyio.run(measure, args)
    summary = summarize(cases, extra)
    stem = "llm" if summary["device"] == "cpu" and not args.replay else f"llm_{summary['device']}"
    stem += "_replay" if args.replay else ""
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"summary": summary, "cases": [{**asdict(c), "subjects": sorted(c.subjects or [])}
                                          for c in cases]}
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    plot(cases, summary, args.out / f"{stem}.png")
    print(json.dumps(summary, indent=1))
    if args.export_kit:
        export_kit(args.out / f"{stem}.json", args.model, args.cache, args.export_kit)


if __name__ == "__main__":
    main()
