"""Action-chunk sampling on the device, for reward-based and goal-conditioned training.

`to_device_dataset` moves an OGBench-layout numpy dataset (`observations`, `actions`,
`next_observations`, `terminals` marking each trajectory's last transition, optional `rewards`,
`masks`) to the device once, with the index arrays the samplers need. The samplers are pure and
jit-able (batch size and horizon static): a start index t is drawn uniformly over all transitions,
and chunk step i reads transition t+i, held at the episode's last transition once the episode
has ended (`valid` says which steps are real). `sample_goal_chunks` adds relabelled goals (separate
ones for the critic and for the velocity field, as OGBench's goal-conditioned agents draw them), and
`goal_sampler(config, env_name)` binds it to an agent config.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from envs.specs import parse_name

# Keys `to_device_dataset` reads; `rewards` and `masks` default to 0 and 1 when absent.
DATASET_KEYS = ("observations", "actions", "next_observations", "terminals", "rewards", "masks")


def episode_index_arrays(terminals: np.ndarray) -> tuple:
    """(episode_ends, episode_ids): per row, the row of its episode's last transition and the episode number."""
    terminals = np.asarray(terminals) > 0
    terminals[-1] = True  # a dataset ends an episode
    end_rows = np.flatnonzero(terminals)
    episode_ids = np.searchsorted(end_rows, np.arange(len(terminals)))
    return end_rows[episode_ids].astype(np.int32), episode_ids.astype(np.int32)


def to_device_dataset(dataset: dict, device=None) -> dict:
    """Device copy of the keys in DATASET_KEYS plus `episode_ends` and `episode_ids` (int32)."""
    n = len(dataset["observations"])
    episode_ends, episode_ids = episode_index_arrays(dataset["terminals"])
    host = {
        "observations": np.asarray(dataset["observations"], np.float32),
        "actions": np.asarray(dataset["actions"], np.float32),
        "next_observations": np.asarray(dataset["next_observations"], np.float32),
        "rewards": np.asarray(dataset.get("rewards", np.zeros(n)), np.float32),
        "masks": np.asarray(dataset.get("masks", np.ones(n)), np.float32),
        "episode_ends": episode_ends,
        "episode_ids": episode_ids,
    }
    return {k: jax.device_put(v, device) for k, v in host.items()}


def _chunk_rows(dataset, starts, horizon):
    """Rows read by each chunk step, and whether the step lies inside the start's episode."""
    raw = starts[:, None] + jnp.arange(horizon)[None, :]
    ends = dataset["episode_ends"][starts][:, None]
    return jnp.minimum(raw, ends), raw <= ends


def _chunk_batch(dataset, starts, rows, rewards, masks, valid) -> dict:
    """The fields every chunk batch has, read at the chunk's start and rows."""
    return {
        "observations": dataset["observations"][starts],
        "actions": dataset["actions"][rows],
        "rewards": rewards,
        "masks": masks,
        "valid": valid,
        "next_observations": dataset["next_observations"][rows],
    }


def _discounted_returns(step_rewards, step_masks, valid, discount):
    """Running masks (min over j <= i) and rewards sum_{j<=i} gamma^j r_j while valid and not yet cut."""
    horizon = step_rewards.shape[1]
    masks = jax.lax.cummin(step_masks, axis=1)
    alive = jnp.concatenate([jnp.ones_like(masks[:, :1]), masks[:, :-1]], axis=1)  # masks before step i
    weights = valid * alive * (discount ** jnp.arange(horizon, dtype=jnp.float32))[None, :]
    return jnp.cumsum(step_rewards * weights, axis=1), masks


@functools.partial(jax.jit, static_argnames=("batch_size", "horizon"))
def sample_chunks(dataset: dict, key, batch_size: int, horizon: int, discount: float) -> dict:
    """A batch of action chunks: observations [B,O], actions [B,H,A], rewards, masks, valid [B,H],
    next_observations [B,H,O] (see the module docstring and DESIGN.md for the definitions)."""
    n = dataset["observations"].shape[0]
    return chunks_at(dataset, jax.random.randint(key, (batch_size,), 0, n), horizon, discount)


def chunks_at(dataset: dict, starts, horizon: int, discount: float) -> dict:
    """The chunks of `sample_chunks` at given start rows [B] (bench.parity compares every start with the official
    sampler's)."""
    rows, valid = _chunk_rows(dataset, starts, horizon)
    valid = valid.astype(jnp.float32)
    rewards, masks = _discounted_returns(dataset["rewards"][rows], dataset["masks"][rows], valid, discount)
    return _chunk_batch(dataset, starts, rows, rewards, masks, valid)


def _relabelled_goals(dataset, key, starts, discount, p_cur, p_traj, p_rand, geom_sample: bool):
    """Goals for the chunks starting at `starts`: (goals [B, O], goal state ids [B]).

    The goal is the start state s_t (probability ∝ p_cur), a later state s_{t+k} of the same trajectory
    (∝ p_traj), or a random dataset state (∝ p_rand). The trajectory offset k >= 1 is geometric with
    parameter 1 - discount and capped at the trajectory's final state s_{end+1} (`geom_sample`), or
    uniform over {1, ..., end + 1 - t}, the whole remaining trajectory. A state's id is its row plus its
    episode number, which gives each episode's final state its own id (OGBench's compact layout).
    """
    batch_size = starts.shape[0]
    n = dataset["observations"].shape[0]
    key_kind, key_offset, key_rand = jax.random.split(key, 3)
    ends = dataset["episode_ends"][starts]
    episode = dataset["episode_ids"][starts]
    if geom_sample:
        u = jax.random.uniform(key_offset, (batch_size,), minval=1e-12)
        # Capped at the final state before the int cast; γ = 1 (log 0) gives the final state.
        geometric = 1 + jnp.floor(jnp.log(u) / jnp.minimum(jnp.log(discount), -1e-30))
        offsets = jnp.minimum(geometric, (ends + 1 - starts).astype(geometric.dtype)).astype(jnp.int32)
    else:
        offsets = jax.random.randint(key_offset, (batch_size,), 1, ends + 2 - starts)
    traj_rows = jnp.minimum(starts + offsets, ends + 1)  # s_{t+k} = next_observations[t + k - 1]
    rand_rows = jax.random.randint(key_rand, (batch_size,), 0, n)
    u = jax.random.uniform(key_kind, (batch_size,)) * (p_cur + p_traj + p_rand)
    use_cur = u < p_cur
    use_traj = ~use_cur & (u < p_cur + p_traj)
    goal_ids = jnp.where(
        use_cur,
        starts + episode,
        jnp.where(use_traj, traj_rows + episode, rand_rows + dataset["episode_ids"][rand_rows]),
    )
    goals = jnp.where(
        use_cur[:, None],
        dataset["observations"][starts],
        jnp.where(use_traj[:, None], dataset["next_observations"][traj_rows - 1], dataset["observations"][rand_rows]),
    )
    return goals, goal_ids


@functools.partial(jax.jit, static_argnames=("batch_size", "horizon", "success_fn", "actor_geom_sample"))
def sample_goal_chunks(
    dataset: dict,
    key,
    batch_size: int,
    horizon: int,
    discount: float,
    p_cur: float = 0.2,
    p_traj: float = 0.5,
    p_rand: float = 0.3,
    success_fn=None,
    actor_p_cur: float | None = None,
    actor_p_traj: float | None = None,
    actor_p_rand: float | None = None,
    actor_geom_sample: bool = False,
) -> dict:
    """`sample_chunks`' fields plus `goals` [B,O] (the critic's and value's), with goal rewards and masks,
    and `actor_goals` [B,O] (the velocity field's) when the actor's goal probabilities are given.

    Goals (see `_relabelled_goals`): the start state (p_cur), a later state of the same trajectory at a
    geometric offset (p_traj), or a random dataset state (p_rand). Chunk step i is a success when s_{t+i}
    is the goal state itself (same dataset state) or, if given, when `success_fn(states [..., O], goals
    [..., O])` holds; its reward is 0 on success else -1 and its mask 0 on success (OGBench's convention),
    accumulated as in `sample_chunks`. Actor goals are drawn independently from the same start, with
    their own probabilities and, unless `actor_geom_sample`, a trajectory offset uniform over the rest of
    the trajectory; they do not enter the rewards. Without actor probabilities there is no `actor_goals`
    and every network trains on `goals`.
    """
    n = dataset["observations"].shape[0]
    key_start, key_goal = jax.random.split(key)
    starts = jax.random.randint(key_start, (batch_size,), 0, n)
    rows, valid = _chunk_rows(dataset, starts, horizon)
    valid = valid.astype(jnp.float32)
    ends = dataset["episode_ends"][starts]
    episode = dataset["episode_ids"][starts]

    # States s_{t+i} of the chunk and their ids (as the goals' ids in `_relabelled_goals`).
    steps = jnp.arange(horizon)[None, :]
    state_rows = jnp.minimum(starts[:, None] + steps, ends[:, None] + 1)
    state_ids = state_rows + episode[:, None]
    next_rows = jnp.maximum(state_rows - 1, starts[:, None])
    states = jnp.where(
        (steps == 0)[..., None], dataset["observations"][starts][:, None], dataset["next_observations"][next_rows]
    )

    goals, goal_ids = _relabelled_goals(dataset, key_goal, starts, discount, p_cur, p_traj, p_rand, True)
    successes = state_ids == goal_ids[:, None]
    if success_fn is not None:
        successes = successes | success_fn(states, goals[:, None, :])
    successes = successes.astype(jnp.float32)
    rewards, masks = _discounted_returns(successes - 1.0, 1.0 - successes, valid, discount)
    batch = {**_chunk_batch(dataset, starts, rows, rewards, masks, valid), "goals": goals}
    actor_probabilities = (actor_p_cur, actor_p_traj, actor_p_rand)
    if any(p is not None for p in actor_probabilities):
        if any(p is None for p in actor_probabilities):
            raise ValueError("give all three of actor_p_cur, actor_p_traj and actor_p_rand, or none")
        batch["actor_goals"], _ = _relabelled_goals(
            dataset, jax.random.fold_in(key, 1), starts, discount, *actor_probabilities, actor_geom_sample
        )
    return batch


def goal_sampler(config, env_name: str):
    """`sample_goal_chunks` bound to an agent config's batch size, horizon, discount and relabelling
    probabilities (`p_*` for the critic and value, `actor_*` for the velocity field) and to the task's
    success test: a function (dataset, key) -> batch."""
    return functools.partial(
        sample_goal_chunks,
        batch_size=config.batch_size,
        horizon=config.horizon,
        discount=config.discount,
        p_cur=config.p_cur,
        p_traj=config.p_traj,
        p_rand=config.p_rand,
        success_fn=goal_success_fn(env_name),
        actor_p_cur=config.actor_p_cur,
        actor_p_traj=config.actor_p_traj,
        actor_p_rand=config.actor_p_rand,
        actor_geom_sample=config.actor_geom_sample,
    )


# Observation layout of OGBench's manipulation envs (state observations): 19 proprioceptive
# entries, then 9 per cube (position (xyz - [0.425, 0, 0]) * 10, quaternion, cos/sin yaw), then 4
# per button (one-hot of 2 states, position, velocity), then (scene) drawer and window positions
# scaled by 18 and 15 with their velocities. OGBench's success: cubes within 0.04 m of the goal,
# buttons in the goal state, drawer and window within 0.04.
_PROPRIO = 19
_CUBE = 9
_BUTTON = 4
_XYZ_SCALE = 10.0
_DRAWER_SCALE = 18.0
_WINDOW_SCALE = 15.0
_TOLERANCE = 0.04


@functools.cache  # one function per name: it is a static argument of the sampler
def goal_success_fn(env_name: str):
    """OGBench's task success between observations and goal observations, as a jnp function."""
    spec = parse_name(env_name).spec
    num_cubes, num_buttons, scene = spec.num_cubes, spec.num_buttons, spec.kind == "scene"

    def success(states, goals):
        ok = jnp.ones(jnp.broadcast_shapes(states.shape, goals.shape)[:-1], bool)
        for c in range(num_cubes):
            s = slice(_PROPRIO + _CUBE * c, _PROPRIO + _CUBE * c + 3)
            ok &= jnp.linalg.norm(states[..., s] - goals[..., s], axis=-1) <= _TOLERANCE * _XYZ_SCALE
        base = _PROPRIO + _CUBE * num_cubes
        for b in range(num_buttons):
            i = base + _BUTTON * b
            ok &= (states[..., i] > 0.5) == (goals[..., i] > 0.5)
        if scene:
            drawer = base + _BUTTON * num_buttons
            window = drawer + 2
            ok &= jnp.abs(states[..., drawer] - goals[..., drawer]) <= _TOLERANCE * _DRAWER_SCALE
            ok &= jnp.abs(states[..., window] - goals[..., window]) <= _TOLERANCE * _WINDOW_SCALE
        return ok

    return success
