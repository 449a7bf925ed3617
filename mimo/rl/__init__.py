"""RL with verifiable rewards: MiMo's GRPO variant, easy-data re-sampling and the Seamless Rollout Engine."""
