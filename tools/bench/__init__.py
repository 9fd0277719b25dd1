"""Benchmarks: what bench.sh runs and the measurements behind benchmarks/.

    bench              the table and charts of a bench.sh run (collect), a failed run's error line
    bench_sh           bench.sh's options checked before its loop, and its short validation split
    plots              training curves of work dirs; the benchmark's two charts
    complexity         parameters and FLOPs of each script's model (cached in benchmarks/)
    data_speed         how many images a second a script's training pipeline feeds, per worker count
    vs_stock           our scripts beside stock MMSegmentation on the same GPU and data
    stock_mmseg_train  the stock baseline: an official config trained as the wheel's tools/train.py does;
                       run as a file (`python tools/bench/stock_mmseg_train.py CONFIG ...`), in a process
                       that imports nothing of this project
    eval_batch_speed   batched vs one-at-a-time evaluation on ADE20K's mix of image sizes
    startup_breakdown  where the seconds go from launch to the first iteration, and a resume both ways
    activation_memory  peak memory and time of a training step with and without --activation-ckpt (CPU)

plots chooses matplotlib's Agg backend when it is imported: no display is needed.
"""
