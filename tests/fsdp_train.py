"""lerobot-train with the policy sharded by accelerate's FSDP2, on CPU processes (gloo).

    python -m accelerate.commands.launch --config_file <FSDP2 config> tests/fsdp_train.py <lerobot-train args>

Accelerate turns FSDP on only for accelerators (on CPU it falls back to DDP), and LeRobot 0.6.1's
loop is written for FSDP1. This launcher runs LeRobot 0.6.1's own ``train`` with an accelerator whose
distributed type is FSDP, so that ``accelerator.prepare`` shards the policy with accelerate's
``fsdp2_prepare_model`` (the wrap classes of the config file, fp32 master weights under mixed
precision), and adds the two things LeRobot main does for FSDP2 policies: it registers
``policy.forward`` (which lerobot-train calls directly, bypassing the hooks of ``__call__``) as an
FSDP forward method, and it gathers the full model and optimizer state dicts for checkpoints with
``torch.distributed.checkpoint`` (0.6.1's gatherer uses FSDP1's API). Everything else is lerobot-train.

Once the run and its checkpoints are complete, each rank leaves after a barrier without the
interpreter's teardown: there gloo's worker threads, still referenced by FSDP2's device mesh, now and
then abort the process (``terminate called without an active exception``, SIGABRT; see
pytorch/pytorch#179291), which failed a CI run whose training and checkpoints were complete.
"""

import logging
import os
import sys

import lerobot.scripts.lerobot_train as lerobot_train
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from lerobot.utils.import_utils import register_third_party_plugins
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.fsdp import register_fsdp_forward_method


def gather_full_state_dicts(model, optimizer) -> tuple[dict, dict]:
    """Full model and optimizer state dicts of an FSDP2 model, on CPU, on rank 0 (empty elsewhere)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    # The gathered tensors are views of shared buffers, which safetensors refuses to write.
    return {key: tensor.clone() for key, tensor in model_state.items()}, optimizer_state


def main() -> None:
    register_third_party_plugins()
    mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    accelerator = Accelerator(step_scheduler_with_optimizer=False, mixed_precision=mixed_precision, cpu=True)
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables accelerate launch sets
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin

    prepare = accelerator.prepare

    def prepare_and_register(*objects):
        prepared = prepare(*objects)
        policy = prepared[0]
        register_fsdp_forward_method(policy, "forward")
        local = sum(p.to_local().numel() for p in policy.parameters())
        total = sum(p.numel() for p in policy.parameters())
        print(f"FSDP2 rank {accelerator.process_index} holds {local} of {total} parameters", flush=True)
        return prepared

    accelerator.prepare = prepare_and_register

    def end_training_and_exit() -> None:
        accelerator.wait_for_everyone()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    accelerator.end_training = end_training_and_exit
    lerobot_train.gather_fsdp_state_dicts = gather_full_state_dicts
    lerobot_train.train(accelerator=accelerator)


if __name__ == "__main__":
    main()
