#!/usr/bin/env python3
"""Mutation testing of the modules behind the README's headline claims (issue 11, item 7).

``make mutation`` runs this script. For each module below it

1. exports a clean copy of the committed tree (``git archive HEAD``; ``--source worktree``
   copies the working tree instead) into ``build/mutation/<name>/`` -- nothing is written
   inside the repository's tracked folders and uncommitted edits by others are not mutated;
2. writes a ``setup.cfg`` ``[mutmut]`` section there that mutates only that module and runs
   only the tests that cover it (mutmut 3 additionally maps every mutated function to the
   tests that call it, so each mutant runs only those);
3. runs ``mutmut run`` and prints killed / survived / timeout / other counts per module.

Exit status: 0 when every module ran, 1 when mutmut itself failed (a red clean run, for
instance). Survivors do not fail the run: docs/testing.md lists each with a reason.

    python tools/mutation.py                     # every module
    python tools/mutation.py packing energy      # a selection, by the names in MODULES
    python tools/mutation.py --list              # the names
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Packages copied into mutmut's mutants/ folder so that every import resolves there.
SOURCE_PATHS = ["sim", "brevitas_models", "tatvpr_hw", "ternary_format"]
# Non-package files the tests read, relative to the repository root.
ALSO_COPY = ["configs"]


@dataclass
class Module:
    path: str
    tests: list[str]
    # mutmut mutant-name globs; empty means every function of the module.
    only: list[str] = field(default_factory=list)


MODULES: dict[str, Module] = {
    # the packed formats' authority (sim/packing.py only re-exports it)
    "packing": Module("ternary_format/packing.py", [
        "tests/sim/test_packing_golden.py", "tests/sim/test_trace.py", "tests/sim/test_gather.py",
        "tests/sim/test_energy.py", "tests/sim/test_packing_mutants.py"]),
    "energy": Module("sim/energy.py", [
        "tests/sim/test_energy.py", "tests/sim/test_systolic_mode.py", "tests/sim/test_energy_mutants.py"]),
    "engine": Module("sim/engine.py", [
        "tests/sim/test_engine.py", "tests/sim/test_systolic_mode.py", "tests/sim/test_gather.py",
        "tests/sim/test_energy.py", "tests/sim/test_engine_mutants.py", "tests/sim/test_engine_survivors.py"]),
    "reference": Module("sim/reference.py", [
        "tests/sim/test_engine.py", "tests/sim/test_systolic_mode.py", "tests/sim/test_reference_mutants.py"]),
    "quant": Module("brevitas_models/quant.py", [
        "tests/brevitas_models/test_quant.py", "tests/brevitas_models/test_ops.py",
        "tests/brevitas_models/test_quant_mutants.py"]),
    "sparsity": Module("brevitas_models/sparsity.py", [
        "tests/brevitas_models/test_sparsity.py", "tests/brevitas_models/test_ops.py",
        "tests/brevitas_models/test_sparsity_mutants.py"]),
    # The resume path only: the checkpoint callback, where a stage keeps its files, and
    # fit_stage (which picks last.ckpt up). The rest of stages.py is training glue.
    # test_resume_mutants.py drives fit_stage with a toy module (seconds a run); test_resume.py
    # (the real stages, about a minute a run) comes second (see --tests).
    "resume": Module("tatvpr_hw/training/stages.py", [
        "tests/training/test_resume_mutants.py", "tests/training/test_resume.py"], only=[
        "tatvpr_hw.training.stages.x_fit_stage__mutmut_*",
        "tatvpr_hw.training.stages.x_stage_paths__mutmut_*",
        "tatvpr_hw.training.stages.x\u01c1*\u01c1_save_checkpoint__mutmut_*",
        "tatvpr_hw.training.stages.x\u01c1*\u01c1on_train_end__mutmut_*"]),
}

STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout",
                       -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed",
                       5: "no tests", 33: "no tests", None: "not checked"}


def export_tree(dest: Path, source: str) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if source == "head":
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                               check=True, capture_output=True).stdout.decode().split("\0")
        for f in filter(None, files):
            src = REPO / f
            if src.is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / f)
    # Tests that locate shared/ relative to the checkout (parents of the test file) see it here.
    shared = REPO.parent / "shared"
    if shared.is_dir() and not (dest / "shared").exists():
        (dest / "shared").symlink_to(shared)


def write_config(work: Path, mod: Module) -> None:
    tests = [t for t in mod.tests if (work / t).is_file()]
    missing = sorted(set(mod.tests) - set(tests))
    if missing:
        print(f"    (not in this tree yet: {', '.join(missing)})")
    lines = ["[mutmut]",
             "source_paths =\n" + "".join(f"    {p}\n" for p in SOURCE_PATHS).rstrip("\n"),
             f"only_mutate = {mod.path}",
             "also_copy =\n" + "".join(f"    {p}\n" for p in ALSO_COPY if (work / p).exists()).rstrip("\n"),
             "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in tests).rstrip("\n"),
             "pytest_add_cli_args =\n    -p\n    no:randomly\n    -p\n    no:xdist\n    -q",
             # torch is not fork-safe once a test has run; the fork server keeps the parent clean.
             "process_isolation = forkserver" if mod.path.startswith(("brevitas", "tatvpr_hw")) else "",
             "use_git_change_detection = false", ""]
    (work / "setup.cfg").write_text("\n".join(lines))


def count(work: Path, mod: Module) -> Counter:
    import fnmatch
    meta = work / "mutants" / (mod.path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    c = Counter()
    for key, code in codes.items():
        if mod.only and not any(fnmatch.fnmatch(key, g) for g in mod.only):
            continue
        c[STATUS_BY_EXIT_CODE.get(code, "suspicious")] += 1
    return c


def survivors(work: Path, mod: Module) -> list[str]:
    import fnmatch
    meta = work / "mutants" / (mod.path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return sorted(k for k, v in codes.items() if STATUS_BY_EXIT_CODE.get(v) not in ("killed", "not checked")
                  and (not mod.only or any(fnmatch.fnmatch(k, g) for g in mod.only)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"names from {', '.join(MODULES)} (default: all)")
    ap.add_argument("--source", choices=["head", "worktree"], default="head",
                    help="mutate the committed tree (default) or the working tree")
    ap.add_argument("--workdir", type=Path, default=REPO / "build" / "mutation")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--keep", action="store_true",
                    help="reuse build/mutation/<name>/mutants (mutmut reruns only what changed)")
    ap.add_argument("--time-limit-s", type=float, default=None,
                    help="stop each module's run after this many seconds and count what was checked "
                         "(the rest shows as 'not checked'); mutmut records every verdict as it goes")
    ap.add_argument("--names", nargs="+", default=None, metavar="GLOB",
                    help="run (and count) only the mutants whose names match, e.g. to recheck survivors")
    ap.add_argument("--tests", nargs="+", default=None, metavar="FILE",
                    help="override the module's test selection, e.g. the fast resume tests only "
                         "(then recheck the survivors with the full selection and --names)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--show-survivors", action="store_true", help="print each survivor's diff")
    args = ap.parse_args(argv)
    if args.list:
        for name, m in MODULES.items():
            print(f"{name:10s} {m.path}  <- {' '.join(m.tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"error: unknown module {unknown[0]!r}; allowed: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    names = args.modules or list(MODULES)
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        print("error: mutmut is not installed; run `make install EXTRAS=dev,mutation`", file=sys.stderr)
        return 2

    rows, failed = [], []
    for name in names:
        mod = MODULES[name]
        if args.tests:
            mod = Module(mod.path, list(args.tests), mod.only)
        if args.names:
            mod = Module(mod.path, mod.tests, [g for g in args.names if g.startswith(mod.path[:-3].replace("/", ".") + ".")])
            if not mod.only:
                continue
        work = args.workdir / name
        print(f"== {name}: {mod.path}", flush=True)
        if not (args.keep and (work / "mutants").is_dir()):
            export_tree(work, args.source)
        write_config(work, mod)
        t0 = time.monotonic()
        cmd = [str(mutmut), "run", "--max-children", str(args.max_children), *mod.only]
        env = dict(os.environ, CI=os.environ.get("CI", "1"), PYTHONDONTWRITEBYTECODE="1")
        log = work / "mutmut-run.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            stopped = False
            try:
                proc.wait(timeout=args.time_limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                stopped = True
        wall_s = time.monotonic() - t0
        meta = work / "mutants" / (mod.path + ".meta")
        if stopped and meta.is_file():
            print(f"    stopped after {args.time_limit_s:.0f} s (--time-limit-s); counts are partial")
        elif proc.returncode != 0 or not meta.is_file():
            print(log.read_text()[-3000:])
            print(f"    mutmut failed (exit {proc.returncode}); log: {log}")
            failed.append(name)
            continue
        c = count(work, mod)
        rows.append((name, c, wall_s))
        surv = survivors(work, mod)
        print(f"    killed {c['killed']}  survived {c['survived']}  timeout {c['timeout']}  "
              f"other {sum(c.values()) - c['killed'] - c['survived'] - c['timeout']}  ({wall_s:.0f} s)  "
              + "  ".join(f"{k}: {v}" for k, v in sorted(c.items())
                          if k not in ("killed", "survived", "timeout")))
        for s in surv:
            print(f"    not killed: {s}")
            if args.show_survivors:
                diff = subprocess.run([str(mutmut), "show", s], cwd=work, capture_output=True, text=True)
                print("\n".join("        " + ln for ln in diff.stdout.splitlines()))

    print("\nmodule      mutants  killed  survived  timeout  other  killed%   wall_s")
    for name, c, wall_s in rows:
        total = sum(c.values())
        other = total - c["killed"] - c["survived"] - c["timeout"]
        pct = 100.0 * c["killed"] / total if total else 0.0
        print(f"{name:10s} {total:8d} {c['killed']:7d} {c['survived']:9d} {c['timeout']:8d} {other:6d}"
              f" {pct:7.1f}% {wall_s:8.0f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
