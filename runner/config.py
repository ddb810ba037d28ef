"""What the user asked for (`Options`, main.py's flags as plain values) → one resolved run (`RunPlan`).

Resolution reads presets, a saved run's config.json (`--eval_only --restore=<run dir>`) and the overrides,
and makes every check that needs no data and no compilation, so a bad setting fails in a second with one
`configs.ConfigError`. It writes nothing: `runner.train` writes each seed's config.json.
"""

import dataclasses
import glob
import json
import os
import resource

import ml_collections

import configs
import envs
from envs.download import SLICES_PER_100M, slice_names
from envs.generate import DEFAULT_DATASET_DIR
from envs.rollouts import NUM_EVAL_TASKS
from envs.specs import FAMILIES
from runner.devices import seed_batching
from runner.run_data import DATA_SOURCES, check_agent_fits_task, slice_directory
from runner.run_dir import config_hash, default_run_dir, eval_tag, to_plain
from runner.videos import check_videos_per_weight
from runner.wandb_logger import WandbOptions, check_mode, import_wandb

RUN_OVERRIDES = (
    "train_steps",
    "steps_per_call",
    "log_every",
    "eval_every",
    "save_every",
    "eval_episodes",
    "slice_every",
)


@dataclasses.dataclass(frozen=True)
class Options:
    """A run as asked for; None means the preset's (or, evaluating, the saved run's) value."""

    agent: str = "qgf"
    agent_overrides: dict = dataclasses.field(default_factory=dict)  # agent config field -> value
    env: str | None = None
    preset: str | None = None  # default: 'demo' without `env`, the task's family preset with it (task_preset)
    seed: int = 0
    num_seeds: int = 1
    seed_batching: str = "auto"
    train_steps: int | None = None
    steps_per_call: int | None = None
    log_every: int | None = None
    eval_every: int | None = None
    save_every: int | None = None
    eval_episodes: int | None = None
    slice_every: int | None = None
    guidance_weights: list | None = None  # numbers, or strings of them (flags)
    run_dir: str | None = None  # '{seed}' is replaced; default runs/<env>/<agent>/seed<seed>-<config hash>
    dataset_dir: str | None = None
    dataset_path: str | None = None
    dataset_size: str | None = None  # "standard" or "100m" (configs.DATASET_SIZES); default: the preset's
    data: str = "auto"  # where missing dataset files come from: a runner.run_data.DATA_SOURCES key
    eval_only: bool = False
    restore: str | None = None
    eval_reset_seed: int | None = None
    allow_config_change: bool = False
    progress: bool = True
    command: str = ""  # the command line, quoted in the report
    eval_videos: int = 0  # episodes per guidance weight recorded as videos at each evaluation (runner.videos)
    wandb: bool = False  # also log to Weights & Biases (runner.wandb_logger)
    wandb_project: str = "qgf"
    wandb_entity: str | None = None
    wandb_mode: str | None = None  # online, offline, disabled; None: wandb's default


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Every setting of a run, resolved. Seed i trains into `train_dirs[i]` (whose config.json is
    `seed_configs[i]`) and writes its evaluation logs and report into `out_dirs[i]` (the same dir when
    training; `<run dir>/eval/<estimator>-bo<N>[-gs<L>-a<α>]-reset<seed>` when evaluating a saved run, see
    runner.run_dir.eval_tag, with `-v<hash>` added when that folder holds an evaluation of other settings:
    evaluation_dir)."""

    agent_name: str
    preset: str
    env_name: str
    config: ml_collections.ConfigDict  # the agent's
    run: ml_collections.ConfigDict  # configs.run_config's fields
    weights: list
    seeds: list
    reset_seeds: list
    seed_configs: list
    train_dirs: list
    out_dirs: list
    eval_only: bool
    batching: str  # agents.training.over_seeds's seed batching
    data: str  # a runner.run_data.DATA_SOURCES key
    allow_config_change: bool
    progress: bool
    command: str
    eval_videos: int = 0  # not in config.json: recording changes no result
    wandb: WandbOptions | None = None  # None: no W&B logging
    restore: str | None = None  # training (not --eval_only) into the run dir given as --restore


def split_agent_name(argv: list[str]) -> tuple[str, list[str]]:
    """Takes `--agent=<name>` (or `--agent <name>`) out of argv; `--agent.<field>` flags stay for absl.

    Without one, the agent is qgf, or the saved run's agent for `--eval_only --restore=<run dir>`.
    """
    name, rest, i = None, [], 0
    while i < len(argv):
        if argv[i].startswith("--agent="):
            name = argv[i].split("=", 1)[1]
        elif argv[i] == "--agent" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 1
        else:
            rest.append(argv[i])
        i += 1
    restore = [a.split("=", 1)[1] for a in argv if a.startswith("--restore=")]
    saved_config = os.path.join(restore[-1], "config.json") if restore else ""
    if name is None and "--eval_only" in argv and os.path.exists(saved_config):
        try:
            with open(saved_config) as f:
                name = json.load(f)["agent"]
        except (OSError, ValueError, KeyError, TypeError):  # resolve() names the damage
            name = None
    return name or "qgf", rest


def check_agent_arguments(agent_name: str, argv: list[str]) -> None:
    """Raises ConfigError for an unknown agent or an `--agent.<field>` its config does not have (absl would raise
    a traceback for the latter)."""
    if agent_name not in configs.AGENT_CONFIGS:
        raise configs.ConfigError(
            f"unknown agent {agent_name!r}{configs.closest(agent_name, configs.AGENT_CONFIGS)}; "
            f"choose one of {sorted(configs.AGENT_CONFIGS)}"
        )
    fields = configs.get_config(agent_name)
    given = set()
    for arg in argv[1:]:
        if arg.startswith(("--agent.", "--noagent.")):
            field = arg.split("agent.", 1)[1].split("=", 1)[0]
            # absl joins the values of a tuple field given twice: (16,16) then (0,) would be (16, 16, 0).
            if field in given and isinstance(fields.get(field), tuple):
                raise configs.ConfigError(
                    f"--agent.{field} is given twice; give it once, e.g. --agent.{field}=(256,256)"
                )
            given.add(field)
            if field.split(".")[0] not in fields:
                raise configs.ConfigError(
                    f"unknown --agent.{field}{configs.closest(field, fields)}; agent '{agent_name}' has the "
                    f"fields {', '.join(sorted(fields))}"
                )
            if "." in field and not isinstance(fields[field.split(".")[0]], ml_collections.ConfigDict):
                name = field.split(".")[0]
                raise configs.ConfigError(
                    f"--agent.{field}: --agent.{name} has no fields; set it whole, --agent.{name}=<value>"
                )


def check_run_steps(run: ml_collections.ConfigDict, training: bool) -> None:
    """Raises ConfigError unless every step count and interval is at least 1 and, when training, every
    interval (and the step total) is a multiple of --steps_per_call: each compiled call runs that many updates,
    so logs, evaluations, saves and slice swaps can only happen between calls. Checked before any data or
    compilation."""
    counts = ("eval_episodes", "eval_envs")
    intervals = ("train_steps", "log_every", "eval_every", "save_every")
    if slice_directory(run):  # Slices are swapped between compiled calls.
        intervals += ("slice_every",)
    for name in counts + (("steps_per_call",) + intervals if training else ()):
        if run[name] < 1:
            raise configs.ConfigError(f"--{name}={run[name]} must be at least 1")
    for name in intervals if training else ():
        if run[name] % run.steps_per_call:
            raise configs.ConfigError(
                f"--{name}={run[name]} must be a multiple of --steps_per_call={run.steps_per_call}"
            )


FILES_PER_SEED = 8  # open at once by each seed of a run: its run lock, TensorBoard writer, checkpoint manager, logs


def check_open_files(num_seeds: int) -> None:
    """Raises ConfigError when the seeds of one process would need more open files than it may have (found here,
    before a run dir is made, rather than after thousands of them)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY and num_seeds * FILES_PER_SEED + 256 > limit:
        most = max(1, (limit - 256) // FILES_PER_SEED)
        raise configs.ConfigError(
            f"--num_seeds={num_seeds} needs about {num_seeds * FILES_PER_SEED} open files, more than this process "
            f"may open ({limit}, `ulimit -n`); train at most {most} seeds per process"
        )


def check_run_dir(run_dir: str) -> None:
    """Raises ConfigError for a run dir that cannot be one: an existing file, or a name too long for the OS."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise configs.ConfigError(f"--run_dir={run_dir} is a file, not a directory; choose another --run_dir")
    too_long = [part for part in run_dir.split(os.sep) if len(part.encode()) > 255]
    if too_long:
        raise configs.ConfigError(
            f"--run_dir has a name of {len(too_long[0].encode())} bytes ({too_long[0][:40]}...); the file system "
            "allows 255: choose a shorter --run_dir"
        )


def _saved_run(options: Options) -> dict | None:
    """The config.json of the run `--eval_only` evaluates (None when training)."""
    if not options.eval_only:
        return None
    if not options.restore:
        raise configs.ConfigError("--eval_only needs --restore=<run dir>")
    if options.num_seeds != 1:
        raise configs.ConfigError("--eval_only evaluates one run dir; drop --num_seeds")
    path = os.path.join(options.restore, "config.json")
    if not os.path.isdir(options.restore):
        raise configs.ConfigError(f"--restore={options.restore} is not a directory; give the run dir of a training run")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise configs.ConfigError(
            f"{options.restore} holds no config.json: it is not a run dir (a training run's dir holds config.json and "
            "checkpoints/)"
        ) from None
    except (OSError, ValueError) as error:
        raise configs.ConfigError(
            f"{path} cannot be read ({type(error).__name__}: {' '.join(str(error).split())}); restore it from a "
            "copy, or rerun the training command with --allow_config_change to write it anew"
        ) from None
    keys = ("agent", "preset", "env", "seed", "agent_config", "run")
    missing = [k for k in keys if k not in saved] if isinstance(saved, dict) else list(keys)
    if missing:
        raise configs.ConfigError(f"{path} is not a run's config.json (it lacks {', '.join(missing)})")
    kinds = {"agent": str, "preset": str, "env": str, "seed": int, "agent_config": dict, "run": dict}
    for key, kind in kinds.items():
        if not isinstance(saved[key], kind) or (kind is int and isinstance(saved[key], bool)):
            raise configs.ConfigError(
                f"{path}: {key} is {json.dumps(saved[key])}, not a {'whole number' if kind is int else kind.__name__} "
                "(edited by hand?); restore it from a copy"
            )
    return saved


def task_preset(preset: str | None, env_name: str | None) -> str:
    """The preset a run takes. Without `--env`: `--preset`, else `demo`. With `--env`: the task's family preset
    when no `--preset` is given (the paper's coefficients for that family, e.g. FQL's α = 1000 on puzzle-4x4), the
    family preset followed by `--preset` when it only sets a size or the study's protocol
    (configs.MODIFIER_PRESETS), else `--preset` as given. A family preset of another family is a ConfigError."""
    if env_name is None:
        return preset or "demo"
    try:
        family = envs.parse_name(env_name).family
    except ValueError as error:
        raise configs.ConfigError(f"--env: {error}") from None
    own = family if family in configs.FAMILY_SETTINGS else "paper"
    if preset is None:
        return own
    parts = configs.preset_parts(preset)
    other = next((p for p in parts if p in configs.FAMILY_SETTINGS and p != family), None)
    if other is not None:
        raise configs.ConfigError(
            f"--preset={preset} holds the {other} family's coefficients, but --env={env_name} is a {family} task; "
            f"drop --preset (the task's family preset, '{own}', is the default with --env) or choose a {other} task"
        )
    if all(part in configs.MODIFIER_PRESETS for part in parts):
        return "+".join([own, *parts])
    return preset


def resolve_dataset(run: ml_collections.ConfigDict, env_name: str, data: str) -> None:
    """Points `run.dataset_path` at OGBench's 100M directory of slices when `run.dataset_size` asks for it and no
    dataset_path is given; raises ConfigError when that cannot be: a family without one, or slices that are
    absent while `data` (local, generate) rules out downloading them (slices are never generated)."""
    if run.dataset_size not in configs.DATASET_SIZES:
        raise configs.ConfigError(
            f"unknown --dataset_size={run.dataset_size!r}{configs.closest(run.dataset_size, configs.DATASET_SIZES)}; "
            f"choose one of {list(configs.DATASET_SIZES)}"
        )
    if run.dataset_size != "100m" or run.dataset_path:
        return
    name = envs.parse_name(env_name)
    if name.family not in configs.FAMILIES_WITH_100M:
        raise configs.ConfigError(
            f"OGBench publishes no 100M slices of {name.family} (it does for {', '.join(configs.FAMILIES_WITH_100M)}); "
            "drop --dataset_size=100m to train on the standard file"
        )
    directory = os.path.join(os.path.expanduser(run.dataset_dir or DEFAULT_DATASET_DIR), name.slices_name)
    run.dataset_path = directory
    if data in ("local", "generate") and not glob.glob(os.path.join(directory, "*.npz")):
        raise configs.ConfigError(
            f"{directory} holds none of OGBench's {SLICES_PER_100M} slices of {name.slices_name} (100M transitions, "
            f"the paper's data), and --data={data} does not download them (slices are never generated); fetch them "
            "with --data=download, or train on OGBench's standard file with --dataset_size=standard"
        )


def describe_dataset(run: ml_collections.ConfigDict, env_name: str, data: str) -> dict:
    """What a run trains on, for config.json, --dry_run, report.md and the tables: `kind` (100M slices, standard
    file, generated here, file, slice directory), `path` and the `expected_transitions` (what OGBench's files hold, or
    what a generation of `dataset_episodes` would write; None when unknown): a file already there may hold another
    count, which data.json records once the run has loaded it (runner.session)."""
    name = envs.parse_name(env_name)
    path = run.dataset_path
    if path and slice_names(path) is not None:
        return {"kind": "100M slices", "path": path, "expected_transitions": SLICES_PER_100M * 1000 * 1000}
    if path:
        kind = "slice directory" if os.path.isdir(path) else "file"
        return {"kind": kind, "path": path, "expected_transitions": None}
    file = os.path.join(run.dataset_dir or DEFAULT_DATASET_DIR, name.dataset_name + ".npz")
    if run.dataset_episodes:
        transitions = run.dataset_episodes * (run.dataset_episode_steps - 1)
        return {"kind": "generated here", "path": file, "expected_transitions": transitions}
    kind = "generated here" if data == "generate" else "standard file"
    return {"kind": kind, "path": file, "expected_transitions": FAMILIES[name.family].num_episodes * 1000}


def _seed_run_dir(options: Options, seed: int, seed_config: dict) -> str:
    if options.restore:
        return options.restore
    if options.run_dir is None:
        return default_run_dir("runs", seed_config["env"], options.agent, seed, seed_config)
    if "{seed}" in options.run_dir:
        return options.run_dir.replace("{seed}", str(seed))
    return os.path.join(options.run_dir, f"seed{seed}") if options.num_seeds > 1 else options.run_dir


def resolve(options: Options) -> RunPlan:
    """The run `options` ask for; raises ConfigError on the first bad setting."""
    saved = _saved_run(options)
    if options.num_seeds < 1:
        raise configs.ConfigError(f"--num_seeds={options.num_seeds} must be at least 1")
    for name in ("seed", "eval_reset_seed"):  # environments reset from seeds >= 0
        if (getattr(options, name) or 0) < 0:
            raise configs.ConfigError(f"--{name}={getattr(options, name)} must be 0 or more")
    batching = seed_batching(options.seed_batching)
    if options.data not in DATA_SOURCES:
        raise configs.ConfigError(
            f"unknown --data={options.data!r}{configs.closest(options.data, DATA_SOURCES)}; choose one of "
            + ", ".join(f"{name} ({what})" for name, what in DATA_SOURCES.items())
        )
    if saved and saved["agent"] != options.agent:  # before its settings are compared with this agent's
        raise configs.ConfigError(f"{options.restore} holds a '{saved['agent']}' run; drop --agent={options.agent}")
    preset = saved["preset"] if saved else task_preset(options.preset, options.env)
    # A saved run's settings are its config.json over the agent's defaults, not over its preset's values now: a
    # field the file lacks was added after the run was written, and its default is what the code did then (new
    # fields default to the earlier behaviour; presets opt in), which a preset may since have changed.
    config = configs.get_config(options.agent, "default" if saved else preset)
    run = configs.get_run_config("default" if saved else preset, options.agent)
    if saved:
        added = sorted(set(config) - set(saved["agent_config"])) + sorted(set(run) - set(saved["run"]))
        if added:
            print(
                f"note: {options.restore}'s config.json predates the settings {', '.join(added)}; "
                "they take their defaults, the behaviour of the code that wrote the run",
                flush=True,
            )
        try:  # a ConfigDict keeps each field's type
            config.update(saved["agent_config"])
            run.update(saved["run"])
        except (TypeError, ValueError) as error:
            raise configs.ConfigError(
                f"{options.restore}/config.json holds a value of the wrong type (edited by hand?): "
                f"{' '.join(str(error).split())}; restore it from a copy"
            ) from None
    for field, value in options.agent_overrides.items():
        config[field] = value
    for name in RUN_OVERRIDES:
        if getattr(options, name) is not None:
            run[name] = getattr(options, name)
    run.dataset_dir = options.dataset_dir or run.dataset_dir
    run.dataset_path = options.dataset_path or run.dataset_path
    if options.dataset_size is not None:
        run.dataset_size = options.dataset_size
    elif config.get("goal_conditioned", False) and not saved:
        run.dataset_size = "standard"  # OGBench's goal-conditioned protocol trains on the standard files.
    check_run_steps(run, training=not saved)
    env_name = saved["env"] if saved else options.env or run.env_name
    weights = saved["guidance_weights"] if saved else list(config.guidance_weights)
    if options.guidance_weights is not None and not any(str(w).strip() for w in options.guidance_weights):
        raise configs.ConfigError("--guidance_weights is empty; give one weight or more, e.g. 0,0.01,0.1")
    if options.guidance_weights:
        try:
            weights = [float(w) for w in options.guidance_weights]
        except ValueError:
            raise configs.ConfigError(
                f"--guidance_weights={','.join(map(str, options.guidance_weights))} must be numbers, e.g. 0,0.01,0.1"
            ) from None
    configs.check_config(config, weights)
    try:
        envs.parse_name(env_name)
    except ValueError as error:
        raise configs.ConfigError(f"--env: {error}") from None
    check_agent_fits_task(options.agent, config, env_name)
    if not saved:
        resolve_dataset(run, env_name, options.data)
    seeds = [saved["seed"]] if saved else [options.seed + i for i in range(options.num_seeds)]
    if options.eval_reset_seed is not None and len(seeds) > 1:
        raise configs.ConfigError("--eval_reset_seed sets one seed's episodes; drop it with --num_seeds")
    reset_seeds = [1000 * s if options.eval_reset_seed is None else options.eval_reset_seed for s in seeds]
    check_open_files(len(seeds))
    shared = dict(agent=options.agent, preset=preset, env=env_name, guidance_weights=weights)
    shared["dataset"] = saved.get("dataset") if saved else describe_dataset(run, env_name, options.data)
    shared.update(agent_config=to_plain(config), run=to_plain(run))
    seed_configs = [{**shared, "seed": s, "eval_reset_seed": r} for s, r in zip(seeds, reset_seeds, strict=True)]
    train_dirs = [_seed_run_dir(options, s, c) for s, c in zip(seeds, seed_configs, strict=True)]
    for d in train_dirs:
        check_run_dir(d)
    grad_step = (config.get("grad_steps", 0), config.get("grad_step_size", 0.0))
    tag = eval_tag(config.estimator, config.best_of_n, reset_seeds[0], *grad_step)
    settings = evaluation_settings(config, weights, run, reset_seeds[0]) if saved else None
    out_dirs = [evaluation_dir(os.path.join(d, "eval", tag), settings) if saved else d for d in train_dirs]
    tasks = 1 if envs.parse_name(env_name).singletask else NUM_EVAL_TASKS
    problem = check_videos_per_weight(options.eval_videos, tasks, run.eval_episodes)
    if problem:
        raise configs.ConfigError(problem)
    wandb = None
    if options.wandb:
        check_mode(options.wandb_mode)
        import_wandb()  # a missing wandb fails here, before any data is loaded
        group = f"{env_name}/{options.agent}/{config_hash(shared)}"  # the seeds of this command
        wandb = WandbOptions(options.wandb_project, options.wandb_entity, options.wandb_mode, group)
    return RunPlan(
        agent_name=options.agent,
        preset=preset,
        env_name=env_name,
        config=config,
        run=run,
        weights=weights,
        seeds=seeds,
        reset_seeds=reset_seeds,
        seed_configs=seed_configs,
        train_dirs=train_dirs,
        out_dirs=out_dirs,
        eval_only=bool(saved),
        batching=batching,
        data=options.data,
        allow_config_change=options.allow_config_change,
        progress=options.progress,
        command=options.command,
        eval_videos=options.eval_videos,
        wandb=wandb,
        restore=None if saved else options.restore,
    )


EVALUATION_FILE = "evaluation.json"  # in an eval dir: the settings its numbers come from (evaluation_settings)


def evaluation_settings(config: ml_collections.ConfigDict, weights: list, run, reset_seed: int) -> dict:
    """Every setting an `--eval_only` evaluation's numbers depend on: the agent's config (estimator, best-of-N,
    GradStep, steps, critics, ...), the weights, the episodes and their first reset seed."""
    weights = [float(w) for w in weights]
    return {"agent_config": to_plain(config), "guidance_weights": weights, "eval_episodes": run.eval_episodes} | {
        "eval_reset_seed": reset_seed
    }


def evaluation_dir(base: str, settings: dict) -> str:
    """Where an evaluation with `settings` goes: `base` (the folder of runner.run_dir.eval_tag) when it is free or
    holds an evaluation of the same settings (a rerun, which replaces it), else `base-v<hash of the settings>`, so
    an evaluation with other weights, episodes or agent settings never replaces an earlier one. A folder with
    results but no record of its settings (written before evaluation.json) counts as other settings."""
    path = os.path.join(base, EVALUATION_FILE)
    try:
        with open(path) as f:
            earlier = json.load(f)
    except FileNotFoundError:
        earlier = None if not os.path.exists(os.path.join(base, "eval.csv")) else {}
    except (OSError, ValueError):
        earlier = {}
    if earlier is None or earlier == settings:
        return base
    variant = f"{base}-v{config_hash(settings)}"
    print(f"note: {base} holds an evaluation with other settings; this one goes to {variant}", flush=True)
    return variant


def dry_run_view(plan: RunPlan) -> dict:
    """`--dry_run`'s output: per seed the config.json the run would write (with its preset and dataset) and its
    run dir (evaluating: the saved run's settings with this evaluation's, and the dir its results would go to)."""
    runs = [
        {"run_dir": out_dir, "config": seed_config}
        for out_dir, seed_config in zip(plan.out_dirs, plan.seed_configs, strict=True)
    ]
    return {"eval_only": plan.eval_only, "runs": runs}
