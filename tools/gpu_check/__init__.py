"""The GPU check: every train script on a GPU in one call of a few minutes, then the core six beside
stock MMSegmentation, and the report of what works there (benchmarks/README.md: the GPU check).

    gpu_check.sh         the command: `bash tools/gpu_check/gpu_check.sh --out DIR` (or `--prepare
                         WHEEL_DIR` for a GPU machine without .venv); runs check, resumes it after a crash
    check                MEASUREMENTS in order, each in its time budget (`python -m tools.gpu_check.check
                         --dry-run` on a CPU)
    stages               the measurements (env, data, smoke, vs_stock, eval_precision, sync_free, eval_batch)
    report               gpu_check.md and the progress lines (`python -m tools.gpu_check.report JSON`)
    inprocess            a train script run inside this process: probe, time limit, log, checked syncs
    host_reads           the host reads a recipe makes by its nature (matcher, OHEM): recognised from a
                         stack (tests/hostreads.py counts the same way on the CPU)
    mmcv_cuda_report.sh  what GPU code an mmcv build holds (benchmarks/mmcv_cuda_build.md)

What the check changes in its own process, beyond what a run of common/ changes (common/__init__.py):
inprocess registers the GpuCheckProbe hook in mmengine's HOOKS and sets SIGALRM's handler during a run
(its time limit); host_reads sets torch.cuda's sync debug mode and the warnings' showwarning during a
checked run, and restores both after it. The stock baseline (tools/bench/stock_mmseg_train.py) never
runs in a process of ours: none of these changes, nor a run's, reach it.
"""
