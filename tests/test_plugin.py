"""LeRobot finds the plugin by itself: registration, factory conventions, CLI help."""

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_lerobot_plugin_discovery_registers_aim_and_factory_finds_it():
    out = _run(
        """
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.utils.import_utils import register_third_party_plugins
        register_third_party_plugins()
        cls = PreTrainedConfig.get_choice_class("aim")
        print(cls.__module__, cls.__name__)
        from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors
        policy_cls = get_policy_class("aim")
        print(policy_cls.__module__, policy_cls.__name__)
        config = make_policy_config("aim", device="cpu")
        pre, post = make_pre_post_processors(config, dataset_stats=None)
        print(type(pre).__name__, [type(s).__name__ for s in pre.steps])
        """
    )
    lines = out.strip().splitlines()
    assert lines[0] == "lerobot_aim.configuration_aim AIMConfig"
    assert lines[1] == "lerobot_aim.modeling_aim AIMPolicy"
    assert "AIMPackViewsProcessorStep" in lines[2]


def test_lerobot_train_help_lists_aim_fields():
    result = subprocess.run(
        [sys.executable, "-m", "lerobot.scripts.lerobot_train", "--policy.type=aim", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for field in (
        "--policy.attention_mode",
        "--policy.lambda_map",
        "--policy.share_value_weights",
        "--policy.cameras",
    ):
        assert field in result.stdout
    assert "actions read the future only through value maps" in " ".join(result.stdout.split())
