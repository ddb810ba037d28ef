"""The official side of `python -m bench.parity`: runs inside the official code's own environment.

Started by bench/parity.py as `<official python> bench/parity_official.py <checkout> <workdir>`; it imports only
the official checkout's modules and that environment's numpy / jax / flax, never this project. It reads
`<workdir>/cases.json` and `<workdir>/<case>.in.npz` (example arrays, batches, keys, draws) and writes
`<workdir>/<case>.out.npz` (parameters, forward passes, actions, losses, parameters after each update, each array
under a '/'-separated name) and `<workdir>/official.json` (versions, losses, and one error line per step that
failed). A step that fails as released is retried with the smallest fix the case names (applied here, at run time,
to the imported modules; the checkout is never edited), and both results are reported.
"""

import contextlib
import functools
import importlib
import json
import os
import sys
import traceback

import numpy as np

CHECKOUT, WORKDIR = sys.argv[1], sys.argv[2]
PROBE = sys.argv[3:] == ["--probe"]  # Run by this project's python: does the official qgf run under our pins?
sys.path.insert(0, CHECKOUT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

# jax >= 0.5 draws random bits with the partitionable threefry; the same setting here makes one key give the same
# draws in both environments (the harness checks this as its first row).
jax.config.update("jax_threefry_partitionable", True)
jax.config.update("jax_default_matmul_precision", "highest")


def flatten(tree, prefix: str) -> dict:
    """{'prefix/a/b': array} for every leaf of a nested dict."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(flatten(dict(value), name))
        else:
            out[name] = np.asarray(value)
    return out


def build_config(module, overrides: dict):
    config = module.get_config()
    for dotted, value in overrides.items():
        node = config
        *path, last = dotted.split(".")
        for part in path:
            node = node[part]
        node[last] = tuple(value) if isinstance(value, list) else value
    return config


class _Replaying:
    """Stands in for `jax` (and its `random`) inside one official module: jax.random.normal / uniform / randint
    return the given arrays in call order (each call's shape checked); everything else is jax's own."""

    def __init__(self, queue: list):
        self.queue = queue
        self.random = self

    def __getattr__(self, name):
        if name in ("normal", "uniform", "randint"):
            return lambda key, shape=(), *args, **kwargs: self.draw(name, key, shape, *args, **kwargs)
        return getattr(jax.random, name) if name in dir(jax.random) and name not in dir(jax) else getattr(jax, name)

    def draw(self, name, key, shape, *args, **kwargs):
        if not self.queue:
            raise RuntimeError(f"jax.random.{name}{tuple(shape)}: no draw left to replay")
        kind, array = self.queue.pop(0)
        if array is None:  # A draw the comparison does not read (a logging metric's): jax's own.
            return getattr(jax.random, name)(key, shape, *args, **kwargs)
        if kind != name or tuple(array.shape) != tuple(shape):
            raise RuntimeError(f"jax.random.{name}{tuple(shape)} called where {kind}{array.shape} was expected")
        return jnp.asarray(array)


@contextlib.contextmanager
def replayed_draws(modules: list, draws: list):
    """Within the block, the official `module`'s random draws are the given ones, in call order: its losses then use
    the draws ours used, whatever their key threading. Runs under jax.disable_jit, so that every call happens (and is
    answered) in program order; draws made by other modules (flax's) are untouched."""
    queue = list(draws)
    for module in modules:
        module.jax = _Replaying(queue)
    try:
        with jax.disable_jit():
            yield
    finally:
        for module in modules:
            module.jax = jax
    if queue:
        raise RuntimeError(f"{len(queue)} replayed draws were not used")


def draws_of(arrays: dict, step: int, plan: list) -> list:
    """The replay queue of update `step`: `plan` lists (jax.random function, input name or None) in call order."""
    return [(kind, None if name is None else arrays[f"draws/{step}/{name}"]) for kind, name in plan]


def as_batch(arrays: dict, name: str) -> dict:
    return {key.split("/")[-1]: jnp.asarray(v) for key, v in arrays.items() if key.startswith(f"{name}/")}


# ---------------------------------------------------------------------------------------------------------------
# Agents: how each official agent stores its networks, evaluates them, acts and updates.
# ---------------------------------------------------------------------------------------------------------------


class SeparateStates:
    """qgf, grad_step, edp, robust_q, cfgrl: one TrainState per network (`names`), as fields of the agent."""

    def __init__(self, names):
        self.fields = tuple(names)

    def params(self, agent) -> dict:
        return {name: getattr(agent, name).params for name in self.fields}

    def network(self, agent, name):
        return getattr(agent, name)


class ModuleDictState:
    """fql, qam, dcgql: one ModuleDict `network` whose parameters are {'modules_<name>': ...}."""

    def __init__(self, names):
        self.fields = tuple(names)

    def params(self, agent) -> dict:
        return {name: agent.network.params[f"modules_{name}"] for name in self.fields}

    def network(self, agent, name):
        return agent.network.select(name)


def forward(case, agent, store, arrays) -> dict:
    """Each network's output on the case's forward inputs."""
    obs, chunk = jnp.asarray(arrays["forward/observations"]), jnp.asarray(arrays["forward/actions"])
    times = jnp.asarray(arrays["forward/times"])
    out = {}
    for name, call in case["forward"].items():
        net = store.network(agent, call["network"])
        if call["kind"] == "q":
            out[name] = net(obs, chunk)
        elif call["kind"] == "v":
            out[name] = net(obs)
        elif call["kind"] == "velocity":
            t = times[:, None] if call.get("time_shape") == "column" else times
            out[name] = net(obs, chunk, t)
        elif call["kind"] == "one_step":
            out[name] = net(obs, chunk)
        elif call["kind"] == "labelled_velocity":
            out[name] = net(obs, jnp.full(obs.shape[:1], call["label"], jnp.int32), chunk, times)
        elif call["kind"] == "noise_predictor":
            out[name] = net(obs, chunk, jnp.asarray(arrays["forward/steps"])[:, None])
        elif call["kind"] == "noise_critic":  # Robust-Q's Q_ρ: a Value on [s, a_t, emb(t)].
            embedding = importlib.import_module("utils.networks").timestep_embedding(times, 16)
            out[name] = net(obs, jnp.concatenate([chunk, embedding], -1))
        else:
            raise ValueError(call["kind"])
    return {k: np.asarray(v) for k, v in out.items()}


def act(case, module, agent, arrays, weight, n, fix=None):
    obs, key = jnp.asarray(arrays["act/observations"]), jnp.asarray(arrays["act/key"], jnp.uint32)
    sample = type(agent).sample_actions
    kwargs = {"seed": key}
    if case["act"].get("guidance", True):
        kwargs["guidance_weight"] = weight
    kwargs["rejection_sampling"] = n

    def call():
        return np.asarray(fix(agent, obs, kwargs) if fix is not None else sample(agent, obs, **kwargs))

    if not case["act"].get("draws"):
        return call()
    draws = [(kind, None if name is None else arrays[f"act/{name}"]) for kind, name in case["act"]["draws"]]
    with replayed_draws([module], draws):
        return call()


def run_case(case, module, arrays) -> tuple[dict, dict]:
    results, report = {}, {"errors": {}, "fixed": {}, "losses": {}}
    config = build_config(module, case["config"])
    cls = getattr(module, case["class"])
    ex_obs, ex_actions = jnp.asarray(arrays["example/observations"]), jnp.asarray(arrays["example/actions"])
    agent = cls.create(case["seed"], ex_obs, ex_actions, config)
    store = ModuleDictState(case["networks"]) if case["store"] == "module_dict" else SeparateStates(case["networks"])
    for name, tree in store.params(agent).items():
        results.update(flatten(dict(tree), f"init/{name}"))
    # Both sides update from the same key (the official agents and ours split it the same way, or replay draws).
    agent = agent.replace(rng=jnp.asarray(arrays["update/rng"], jnp.uint32))
    results.update({f"forward/{k}": v for k, v in forward(case, agent, store, arrays).items()})

    fixes = FIXES.get(case["name"], {})
    for weight in case["act"]["weights"]:
        for n in case["act"]["best_of_n"]:
            label = f"act/w{weight}_n{n}"
            try:
                results[label] = act(case, module, agent, arrays, weight, n)
            except Exception as error:  # Reported as the row's failure; the fix (if any) is tried next.
                report["errors"][label] = one_line(error)
                if "act" in fixes:
                    results[label] = act(case, module, agent, arrays, weight, n, fix=fixes["act"][1])
                    report["fixed"][label] = fixes["act"][0]

    draw_modules = [importlib.import_module(m) for m in case["update"].get("draw_modules") or [case["module"]]]
    for batch_name in case["update"]["batches"]:
        state = agent
        batch = as_batch(arrays, f"batch/{batch_name}")
        for step in range(case["update"]["steps"]):
            label = f"update/{batch_name}/{step}"
            plan = case["update"].get("draws")
            try:
                state, info = updated(draw_modules, state, batch, arrays, batch_name, step, plan)
            except Exception as error:
                report["errors"].setdefault(f"update/{batch_name}", one_line(error))
                if "update" not in fixes:
                    break
                with fixes["update"][1]():
                    state, info = updated(draw_modules, state, batch, arrays, batch_name, step, plan)
                report["fixed"][f"update/{batch_name}"] = fixes["update"][0]
            report["losses"][label] = {k: float(v) for k, v in info.items() if np.ndim(v) == 0}
            for name, tree in store.params(state).items():
                results.update(flatten(dict(tree), f"{label}/{name}"))
    return results, report


def updated(modules, agent, batch, arrays, batch_name, step, plan):
    if plan is None:
        return agent.update(batch)
    with replayed_draws(modules, draws_of(arrays, f"{batch_name}/{step}", plan)):
        return agent.update(batch)


def one_line(error: Exception) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    # Named relative to the checkout, or to this project for the harness's own lines: no machine's paths in the doc.
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (CHECKOUT, project):
        if os.path.abspath(where.filename).startswith(os.path.abspath(root) + os.sep):
            return f"{type(error).__name__}: {error} ({os.path.relpath(where.filename, root)}:{where.lineno})"
    return f"{type(error).__name__}: {error} ({os.path.basename(where.filename)}:{where.lineno})"


# ---------------------------------------------------------------------------------------------------------------
# The smallest fixes of what fails as released (BASELINES.md §5), applied to the imported modules at run time.
# ---------------------------------------------------------------------------------------------------------------


def qam_act_ignoring_rejection_sampling(agent, obs, kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k not in ("rejection_sampling", "guidance_weight")}
    return type(agent).sample_actions(agent, obs, **kwargs)


@contextlib.contextmanager
def robust_q_critic_loss_accepting_rng():
    """QGFAgent.critic_loss, which Robust-Q calls with an `rng` keyword it does not take, accepting (and ignoring)
    it."""
    qgf = importlib.import_module("agents.qgf")
    original = qgf.QGFAgent.critic_loss
    qgf.QGFAgent.critic_loss = lambda self, batch, critic_params=None, rng=None: original(self, batch, critic_params)
    try:
        yield
    finally:
        qgf.QGFAgent.critic_loss = original


def robust_q_act_fixed(agent, obs, kwargs):
    """Robust-Q's sampler with its two name errors fixed: the weight parameter it lacks, and `cfg` read as that
    weight (module globals are patched for the call)."""
    module = importlib.import_module("agents.robust_q")
    weight = kwargs.pop("guidance_weight")
    sampler = type(agent).sample_actions.__wrapped__
    module.cfg = weight
    try:
        return sampler(agent, obs, **kwargs)
    finally:
        del module.cfg


FIXES = {
    "qam": {
        "act": (
            "sample_actions called without the rejection_sampling argument it does not accept",
            qam_act_ignoring_rejection_sampling,
        )
    },
    "robust_q": {
        "update": (
            "QGFAgent.critic_loss accepts (and ignores) the rng keyword Robust-Q passes",
            robust_q_critic_loss_accepting_rng,
        ),
        "act": (
            "sample_actions called without guidance_weight; the undefined name `cfg` bound to the weight",
            robust_q_act_fixed,
        ),
    },
}


def main():
    cases = json.load(open(f"{WORKDIR}/cases.json"))
    report = {
        "versions": {
            "python": sys.version.split()[0],
            **{m: importlib.import_module(m).__version__ for m in ("jax", "flax", "optax", "numpy")},
        },
        "cases": {},
    }
    for case in cases:
        arrays = dict(np.load(f"{WORKDIR}/{case['name']}.in.npz"))
        try:
            module = importlib.import_module(case["module"])
            results, case_report = run_case(case, module, arrays)
        except Exception as error:
            traceback.print_exc()
            results, case_report = {}, {"errors": {"case": one_line(error)}, "fixed": {}, "losses": {}}
        np.savez(f"{WORKDIR}/{case['name']}.out.npz", **results)
        report["cases"][case["name"]] = case_report
    report.update(extra_checks(cases))
    json.dump(report, open(f"{WORKDIR}/official.json", "w"), indent=1)


def extra_checks(cases) -> dict:
    """PRNG draws, the chunk sampler at every start, and paper-size parameter counts."""
    arrays = dict(np.load(f"{WORKDIR}/shared.in.npz"))
    out = {}
    key = jnp.asarray(arrays["prng/key"], jnp.uint32)
    first, second = jax.random.split(key)
    out["prng/normal"] = np.asarray(jax.random.normal(first, (4, 7)))
    out["prng/uniform"] = np.asarray(jax.random.uniform(second, (5, 1)))
    out["prng/randint"] = np.asarray(jax.random.randint(second, (9,), 0, 11))

    datasets = importlib.import_module("utils.datasets")
    fields = {k.split("/")[1]: arrays[k] for k in arrays if k.startswith("dataset/")}
    dataset = datasets.Dataset.create(**fields)
    horizon, discount = int(arrays["sampler/horizon"]), float(arrays["sampler/discount"])
    starts = np.arange(dataset.size - horizon + 1)
    original = np.random.randint
    np.random.randint = lambda high, size=None: starts  # Every start once, in order.
    try:
        chunks = dataset.sample_sequence(len(starts), horizon, discount)
    finally:
        np.random.randint = original
    out.update({f"sampler/{k}": np.asarray(v) for k, v in chunks.items()})

    counts = {}
    for case in json.load(open(f"{WORKDIR}/paper_size.json")):
        module = importlib.import_module(case["module"])
        config = build_config(module, case["config"])
        agent_class = getattr(module, case["class"])
        observations, actions = jnp.zeros((1, case["obs_dim"])), jnp.zeros((1, case["action_dim"]))
        shapes = jax.eval_shape(functools.partial(agent_class.create, 0, observations, actions, config))
        store = (ModuleDictState if case["store"] == "module_dict" else SeparateStates)(case["networks"])
        counts[case["name"]] = {
            name: int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
            for name, tree in store.params(shapes).items()
        }
    np.savez(f"{WORKDIR}/shared.out.npz", **out)
    return {"paper_size_counts": counts}


def probe() -> dict:
    """Imports the official qgf agent, and (with `distrax`, which only its Gaussian actors use, stubbed when it fails
    to import) creates it and runs one update and one sample_actions on tiny networks."""
    import types

    out = {"versions": {m: importlib.import_module(m).__version__ for m in ("jax", "flax", "optax", "numpy")}}
    try:
        importlib.import_module("agents.qgf")
        out["import"] = "ok"
    except Exception as error:
        out["import"] = one_line(error)
        for name in [n for n in sys.modules if n == "agents" or n.startswith(("agents.", "utils."))]:
            del sys.modules[name]
        stub = types.ModuleType("distrax")
        stub.Transformed = object
        sys.modules["distrax"] = stub
    try:
        qgf = importlib.import_module("agents.qgf")
        config = build_config(
            qgf,
            {
                "actor_hidden_dims": [8, 8],
                "value_network_kwargs.hidden_dims": [8, 8],
                "horizon_length": 2,
                "action_chunking": True,
            },
        )
        agent = qgf.QGFAgent.create(0, jnp.zeros((3, 4)), jnp.zeros((3, 2)), config)
        batch = {
            "observations": jnp.zeros((3, 4)),
            "actions": jnp.zeros((3, 2, 2)),
            "rewards": jnp.zeros((3, 2)),
            "masks": jnp.ones((3, 2)),
            "valid": jnp.ones((3, 2)),
            "next_observations": jnp.zeros((3, 2, 4)),
        }
        agent.update(batch)
        agent.sample_actions(jnp.zeros((3, 4)), seed=jax.random.PRNGKey(0), guidance_weight=0.1)
        out["run"] = "ok" + (" with distrax stubbed" if "distrax" in sys.modules and out["import"] != "ok" else "")
    except Exception as error:
        out["run"] = one_line(error)
    return out


if __name__ == "__main__":
    if PROBE:
        json.dump(probe(), open(f"{WORKDIR}/probe.json", "w"), indent=1)
    else:
        main()
