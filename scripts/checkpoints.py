"""Orbax checkpoints of an agent state: atomic saves, and resumption from the latest one."""

import os

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        # Orbax writes into a temporary directory and renames it when complete, so a save that is
        # interrupted never replaces or corrupts the previous checkpoint.
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, template):
        return self.manager.restore(step, args=ocp.args.StandardRestore(template))

    def close(self) -> None:
        self.manager.close()
