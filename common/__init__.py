"""Shared, model-independent pieces of the ADE20K training scripts: the map.

common/ is what `python train_x.py` runs, and the commands its messages tell a user to run. The
commands that measure and maintain the project are in tools/ (its map: tools/__init__.py); nothing
here imports them.

Import modules by name (`from common import ade20k, cli, runtime, schedules`). Each module answers one
question; a module imports only modules of its own layer or below, never one above, and there is no
import loop (tests/test_architecture.py checks both against LAYERS below).

0. Leaves
    errors       SetupError: what the user can fix, and its one rendering (report, exit code 2)
    faults       test-only fault injection at exact points (ADE_TRAIN_FAULT)
    files        atomic_write: a file is written whole or not at all
    download     one file over HTTP with progress, resume-safe, hash-checked
1. Recipe pieces (fresh dicts, no torch at import)
    ade20k       the dataset: constants, pipelines, dataloaders, evaluator
    schedules    optimizer + LR scheduler + loop bundles; warmup and MAX_ITERS x ACCUMULATE arithmetic
    models       model parts many recipes share (ResNetV1c, the auxiliary FCN head, SYNC_BN)
2. The run, one concern a module (2a-2d are one layer; the groups only say what each module is about)
  2a. Settings: what a run is asked to do
    scripts      a train_*.py as data: load, settings, variant, reference numbers (the script protocol)
    cli          a script's settings as command line flags
    validate     every setting's valid range or set, and the folders a run writes, checked first
    config       walking a config tree: SyncBN -> BN, without pretrained, files and packages it names, dump
  2b. Weights: the files a run reads and writes
    layouts      what a pretrained file is (from its tensors' names and shapes) and which backbones it fits
    pretrained   the pretrained-file registry: init_cfg from PRETRAINED, require (and its stand-in), fetch, list
    inventory    list's second part: each file found in pretrain/, what it is and the commands that use it
    weights_fit  a pretrained file must initialise every tensor of the module it is loaded into: refused
                 before building where its layout cannot fit (layouts), audited while it loads
    fixed_window BEiT and MAE, whose window the crop fixes: pretrained tables resized, test views no smaller
    checkpoints  checkpoint files: atomic writes, newest complete, pre-emption save, safe and exact loading
  2c. The machine: processes, devices and how fast a run uses them
    dist         launcher, rank and world size from the environment; the CPU (gloo) process group
    gpu          the NVIDIA GPUs the driver lists, and whether this torch can use them (DEVICE)
    speed        how a run uses the machine: precision, channels_last, TF32, fused step, compile
    kernel_guard ops the fast path cannot feed as they are (mmcv's compiled kernels, NCHW-only code): fp32, NCHW
    deferred     logged tensors stay on the device until a log line reads them (no wait per iteration)
    batched_eval validation in batches of same-shape images (EVAL_BATCH), exact on one or several GPUs
    activation_ckpt  memory: which backbones recompute their blocks' activations in the backward pass
                 (ACTIVATION_CKPT) and how the config says so (their own with_cp, or mmengine's key)
  2d. The run: from its checks to its record
    checks       can this run start: installation, packages, pretrained files, dataset (preflight)
    demo_data    the small, learnable ADE20K-layout dataset of --demo and the tests
    resilience   pre-emption signals and the non-finite-loss guard
    out_of_memory  a training step out of GPU memory: redone in more passes per batch, the total batch kept
    resume       which checkpoint a run resumes from, its data order continued without replay, and its
                 optimizer state fitted to this run (memory layout, fused step)
    train        one training run: prepare the config, the Runner and its hooks, banner, summary.json
    console      what a run shows on the console (progress, evaluations, its end) and keeps for its log file
    class_table  per-class IoU and accuracy of an evaluation, as markdown and CSV
    trackers     where a run's scalars, config and summary go (TRACKER): TensorBoard, W&B, MLflow
    stock_tools  what MMSegmentation's own tools need to run a dumped config: its custom_imports, and
                 (imported by it) checkpoints' allow-list in torch's safe loading
3. Using a trained checkpoint
    infer        MODES: --eval-only, --predict, --export-onnx, --export-safetensors, --flops, one module each
    infer.model  the one offline model (config + checkpoint, no pretrained file) and its logits function
4. The top
    runtime      defaults() (a script's runtime config) and run() (a script's whole life); nothing imports it
5. Commands a user runs (`python -m common.<name>`), as setup.sh and the scripts' messages name them
    env_check, download_ade20k, convert_vit, convert_beit, convert_swin; and in their own layer,
    pretrained (fetch, list) and demo_data

How a run extends mmengine, mmcv and torch. Through their registries (what a run's config names):
- resilience: GuardedOptimWrapper (fp32), and speed's AutocastOptimWrapper (bf16, no loss scaler) and
  ScaledAutocastOptimWrapper (fp16, torch.amp's GradScaler for the model's device, a CPU included) in
  OPTIM_WRAPPERS, each with the LossGuard mixin: a non-finite loss skips its step, agreed on by every
  rank (on the device, through the fused optimizer's found_inf, where it can), and the gradient norm
  is recorded as a tensor instead of float() (which waits for the GPU).
- checkpoints: the 'atomic_local' file backend (mmengine.fileio.register_backend), named in the run's
  CheckpointHook backend_args: a checkpoint is written whole or not at all (files.atomic_write); and
  the reader of *.safetensors files in mmengine's CheckpointLoader (register_scheme), through which
  --load-from, a Pretrained init and mmseg.apis.init_model read them.
- speed: AutocastValLoop and AutocastTestLoop in LOOPS; batched_eval: SameShapeBatchSampler in
  DATA_SAMPLERS; out_of_memory: AdaptiveTrainLoop in LOOPS (the run's training loop: a step out of
  memory is redone in more passes); resume: ResumedInfiniteSampler and ResumedTrainLoop (built on it: a resumed run's sampler skips the
  batches before its iteration instead of mmengine loading each of them); resilience: the dataloader
  worker_init in FUNCTIONS; fixed_window: ResizeToAtLeast in mmseg's TRANSFORMS; trackers:
  RunWandbVisBackend and RunMLflowVisBackend in VISBACKENDS (the run's name, summary.json's numbers,
  the run finished after them).
- Hooks registered on the run's Runner: resilience's SafetyHook (pre-emption, the loss guard's stop),
  resume's OptimizerStateFitHook (a resumed optimizer state in its parameters' layout and this run's
  fused/unfused step), train's RunRecorder, console's ProgressHook (the console's lines).
- console: the run's Runner class builds mmengine's logger with a console filter (marked lines and
  errors) and formatter; class_table: KeptAreasIoUMetric in mmseg's METRICS (the run's own copy of
  the config names it: IoUMetric keeping the per-class areas of its last evaluation).
- On the run's own model (nothing of the libraries replaced): kernel_guard.guard_kernels' forward hooks
  (mmcv ops with compiled kernels get fp32, contiguous inputs outside autocast; NCHW_ONLY modules
  contiguous ones, and on a CPU NCHW_ON_CPU ones: torch's GroupNorm backward), speed.non_blocking_inputs (its data preprocessor copies without blocking),
  deferred.install (the runner's MessageHub keeps tensor scalars on the device until read),
  activation_ckpt.install (with --activation-ckpt: each backbone block's forward in torch's non-reentrant
  checkpoint, on this model's blocks only).
- torch's own allow-list: checkpoints.install adds mmengine's HistoryBuffer and numpy types to
  torch.load's weights-only safe globals, so mmengine's torch.load calls (resume, load_from,
  Pretrained init) stay safe; with --trust-checkpoint it sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD instead.
  A config written by --dump-config names stock_tools in its custom_imports: importing it adds the same
  allow-list in MMSegmentation's own tools (tools/train.py, tools/test.py, mmseg.apis).
What has no registry lasts only while a run does (train.changes_of_a_run; weights_fit.must_fit inside
runner.train()), and tests/test_library_changes.py checks that the libraries are stock after it:
- speed.global_flags: TF32 for the matmuls and convolutions left in fp32 (GPU);
- speed.sync_free_accuracy: mmseg's decode heads' `accuracy` (acc_seg) without boolean-mask indexing
  (same numbers, no wait for the GPU);
- fixed_window.resizing (BEiT, MAE): mmseg's BEiT._geometric_sequence_interpolation computes with
  RectBivariateSpline instead of scipy's interp2d, which the pinned SciPy no longer has;
- resilience.signal_handlers: SIGTERM, SIGINT and SIGUSR1 save a checkpoint and stop (pre-emption);
- warnings.catch_warnings: console.attach sends Python warnings to the run's log file (not with --verbose);
- trackers.mlflow_file_store: MLFLOW_ALLOW_FILE_STORE, without which MLflow 3 refuses a file store;
- weights_fit.must_fit: mmengine's and torch's load_state_dict audit what a file leaves uninitialised;
- faults.loss_faults (tests only, ADE_TRAIN_FAULT=nan@iter=N / overflow@iter=N): BaseModel.parse_losses.
Also: train.prepare sets TORCH_NCCL_ASYNC_ERROR_HANDLING=1 (unless set), so a dead rank fails the others.
"""

# module -> layer (see above): tests/test_architecture.py checks that every module is listed and
# that imports go only to the same layer or below.
LAYERS = {
    'errors': 0, 'faults': 0, 'files': 0, 'download': 0,
    'ade20k': 1, 'schedules': 1, 'models': 1,
    'scripts': 2, 'cli': 2, 'validate': 2, 'config': 2,  # 2a
    'layouts': 2, 'pretrained': 2, 'inventory': 2, 'weights_fit': 2, 'fixed_window': 2, 'checkpoints': 2,  # 2b
    'dist': 2, 'gpu': 2, 'speed': 2, 'kernel_guard': 2, 'deferred': 2, 'batched_eval': 2,
    'activation_ckpt': 2,  # 2c
    'checks': 2, 'demo_data': 2, 'resilience': 2, 'resume': 2, 'train': 2, 'trackers': 2, 'stock_tools': 2,  # 2d
    'console': 2, 'class_table': 2, 'out_of_memory': 2,
    'infer': 3, 'infer.model': 3, 'infer.evaluate': 3, 'infer.predict': 3, 'infer.export_onnx': 3,
    'infer.export_safetensors': 3, 'infer.flops': 3,
    'runtime': 4,
    'env_check': 5, 'download_ade20k': 5, 'convert_vit': 5, 'convert_swin': 5, 'convert_beit': 5,
}
