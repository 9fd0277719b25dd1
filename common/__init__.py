"""Shared, model-independent pieces of the ADE20K training scripts.

Modules (import them by name: `from common import ade20k, cli, runtime, schedules`):
    ade20k      dataset constants, pipelines, dataloaders, evaluator
    schedules   optimizer + LR scheduler + loop bundles (SGD/poly, AdamW/warmup/poly)
    runtime     hooks, launcher, checkpoint policy, resume, the train entry point
    cli         settings block -> command line flags
    checks      preflight validation of dataset, pretrained files and environment
    safe_load   torch.load with weights_only=True and mmengine's checkpoint types allowed
    pretrained  the pretrained-weights registry and its fetch command
    demo_data   a small, learnable ADE20K-layout dataset
    env_check   the stack self-check run by setup.sh
"""
