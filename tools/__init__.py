"""Commands that measure and maintain the project; nothing a training run imports.

`python train_x.py` runs common/ and nothing here (common/ never imports tools/: tests/test_architecture.py).
Each folder is one job, its commands run from the repository root as `python -m tools.<job>.<name>`:

    bench       how fast and how big: the benchmark table and charts, FLOPs, data loading, evaluation
                batches, start-up, and our scripts beside stock MMSegmentation
    gpu_check   the GPU check: every script on a GPU in one call of a few minutes, and its report
    recipes     every official ADE20K config and the command that builds it; the generated tables
    setup       what setup.sh installs and builds (its plan), the locks, a CUDA_HOME from pip packages
"""
