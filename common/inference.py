"""Use a trained checkpoint instead of training: evaluate, predict, export to ONNX, count FLOPs.

Every train script has these flags (common/cli.py); pass the same model settings as the training
run (e.g. --backbone, --crop-size: the test resize follows CROP_SIZE), since the script builds the
model and pipelines from them:

    python train_fcn.py --eval-only work_dirs/fcn/iter_80000.pth            # per-class IoU/Acc table
    python train_fcn.py --eval-only work_dirs/fcn/iter_80000.pth --tta      # multi-scale + flip
    python train_fcn.py --predict work_dirs/fcn/iter_80000.pth photos/ --out preds/
    python train_fcn.py --predict work_dirs/fcn/iter_80000.pth clip.mp4 --opacity 0.6
    python train_fcn.py --export-onnx work_dirs/fcn/iter_80000.pth          # -> work_dirs/fcn/fcn.onnx
    python train_fcn.py --flops --flops-size 512,512

--eval-only writes to --out (default WORK_DIR/eval_<checkpoint stem>[_tta]/): per_class.csv,
per_class.md (IoU and accuracy of the 150 classes) and metrics.json (mIoU, mAcc, aAcc, seconds).
It runs the recipe's test mode (whole or slide, model.test_cfg) with the same IoUMetric as the
training run's evaluation, so a checkpoint scores exactly what its run logged.

--predict writes to --out (default WORK_DIR/predict_<input stem>/):
    labels/<name>.png    uint8, ADE20K annotation coding: class index + 1 (1..150), as the
                         dataset's annotations/ PNGs; 0 ("other") is never predicted
    colors/<name>.png    RGB, the class colours of mmseg's ADE20KDataset palette
    overlays/<name>.jpg  the image blended with the colours (--opacity)
    classes.csv          label value, class name and colour of every class
    <video>_overlay.mp4  for a video input: the overlays as a video (frames are <video>_000000...)
Images are batched (--batch-per-gpu at a time, same-size images together) and decoded by
--num-workers processes.

--export-onnx writes one .onnx (default WORK_DIR/<script>.onnx; --out DIR or --out FILE.onnx):
input "image", float32 RGB 0..255, N x 3 x H x W (normalisation is inside); output "logits",
N x 150 x H x W in whole-image mode (argmax = class index). Height, width and batch are dynamic
where the model allows (checked: the ONNX model must reproduce PyTorch at another size); otherwise
the model is exported at CROP_SIZE. (Mask2Former's PyTorch pipeline pads to a multiple of 32; the
ONNX model takes the size it is given.) onnxruntime then runs it on a real image (the dataset's first
validation image, or the --predict INPUT) and the max logit difference and argmax agreement with
PyTorch are printed and stored beside it (<file>.json). The export runs on the CPU, so mmcv ops
with a PyTorch fallback (MultiScaleDeformableAttention) take it; a compiled-only op (PSAMask) is
named in the error.

--flops prints parameters and FLOPs (one multiply-add = one FLOP, as mmengine.analysis counts) of
whole-image inference at --flops-size, per part of the model.
"""
import collections
import copy
import csv
import json
import logging
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import ade20k, checks, runtime, safe_load
from common.errors import SetupError

LABEL_OFFSET = 1                # label PNG value = class index + 1: the coding of ADE20K's own annotations
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')
ONNX_OPSET = 17                 # LayerNormalization is a single op from 17 on (transformers)
AGREEMENT_TARGET = 0.999        # argmax agreement an ONNX export must reach to count as faithful


def dispatch(cfg, s, reference):
    """Run what the flags ask for (several may be given), each with its own model."""
    cfg = prepare_config(cfg)
    if s.flops:
        flops(cfg, s)
    if s.eval_only:
        evaluate(cfg, s, reference)
    if s.predict:
        predict(cfg, s)
    if s.export_onnx:
        export_onnx(cfg, s)


# ---------------------------------------------------------------- config, model, checkpoint

def prepare_config(cfg):
    """The script's config, adjusted for one process on this machine, with no pretrained init
    (the checkpoint holds every weight, so pretrain/ files need not exist)."""
    if runtime.launcher_from_env() != 'none':
        raise SetupError('--eval-only, --predict, --export-onnx and --flops run in one process',
                         'start the script with `python`, not torchrun or srun')
    cfg = copy.deepcopy(cfg)
    cfg['launcher'] = 'none'
    # In eval mode SyncBN computes what BN does, and BN also traces on a CPU (ONNX, FLOPs) and
    # needs no process group; the weights are the same tensors.
    runtime.sync_bn_to_bn(cfg)

    def drop_pretrained_init(node):
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
        if isinstance(node.get('pretrained'), str):
            node['pretrained'] = None
    runtime._walk(cfg['model'], drop_pretrained_init)
    return cfg


def _register(cfg):
    """mmseg's registries as default scope, plus the config's custom_imports (mmdet for Mask2Former)."""
    from mmengine.utils import import_modules_from_strings
    from mmseg.utils import register_all_modules
    runtime._check_packages(cfg)
    register_all_modules(init_default_scope=True)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])


def device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def read_checkpoint(path, s, flag):
    """The checkpoint's state dict, read through safe_load (no code runs from the file)."""
    checkpoint = safe_load.load(path, trust=s.trust_checkpoint, what=f'{flag} checkpoint')
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SetupError(f'{flag} checkpoint {path} holds no state dict of tensors',
                         'pass a checkpoint written by a training run (iter_N.pth, best_mIoU_iter_N.pth)')
    # DDP-wrapped models were saved with a 'module.' prefix by some tools.
    return {k.removeprefix('module.'): v for k, v in state.items()}


def build_model(cfg, state=None, path='', on=None):
    """The segmentor of the config, with the checkpoint's weights, in eval mode on `on`."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    _register(cfg)
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg['model'])))  # mmdet heads read attributes
    if state is not None:
        _load_exactly(model, state, path)
    return model.to(on or device()).eval()


def _load_exactly(model, state, path):
    """Load every tensor or refuse: a checkpoint of another script or BACKBONE must not half-load."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        found = '; '.join(f'{what}: {", ".join(keys[:4])}{" ..." if len(keys) > 4 else ""}'
                          for what, keys in (('missing', missing), ('unexpected', unexpected),
                                             ('other shape', reshaped)) if keys)
        raise SetupError(f'checkpoint {path} does not fit this model ({found})',
                         'pass the model settings its training run used (e.g. --backbone), '
                         'or use the train script that wrote it')
    model.load_state_dict(state, strict=False)  # strict=False: only num_batches_tracked may be absent


def ade20k_meta():
    """ADE20K's 150 class names and their palette (uint8, 150 x 3), as mmseg's ADE20KDataset has them."""
    from mmseg.datasets import ADE20KDataset
    return list(ADE20KDataset.METAINFO['classes']), np.array(ADE20KDataset.METAINFO['palette'], np.uint8)


def _quiet_mmengine_logger():
    """Raise the current MMLogger's level: IoUMetric logs its own per-class table, we write ours."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(logging.WARNING)
    return lambda: logger.setLevel(previous)


# ---------------------------------------------------------------- --eval-only

def evaluate(cfg, s, reference):
    """Score CKPT on the validation split, as the training run's evaluation does; write the tables."""
    from mmengine.registry import METRICS
    from mmengine.runner import Runner
    from mmseg.registry import MODELS
    from tqdm import tqdm
    loader_cfg = copy.deepcopy(cfg['test_dataloader'])
    checks.dataset(loader_cfg['dataset']['data_root'], splits=('val',))
    state = read_checkpoint(s.eval_only, s, '--eval-only')
    model = build_model(cfg, state, s.eval_only)
    if s.tta:
        loader_cfg['dataset']['pipeline'] = ade20k.tta_pipeline()
        model = MODELS.build(dict(cfg.get('tta_model', dict(type='SegTTAModel')), module=model))
    loader = Runner.build_dataloader(loader_cfg)
    metric = METRICS.build(copy.deepcopy(cfg['test_evaluator']))
    metric.dataset_meta = loader.dataset.metainfo
    mode = cfg['model'].get('test_cfg', {}).get('mode', 'whole') + (' + multi-scale/flip TTA' if s.tta else '')
    print(f'[{s.SCRIPT}] evaluating {s.eval_only} on {len(loader.dataset)} validation images ({mode}, '
          f'{device()}, {s.speed["precision"]})', flush=True)

    from common import speed
    precision = s.speed['precision']
    if precision != 'fp32':
        speed.keep_deformable_attention_fp32()
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device(), enabled=precision != 'fp32',
                                         dtype=None if precision == 'fp32' else speed.autocast_dtype(precision)):
        for batch in tqdm(loader, desc='evaluate', unit='img', dynamic_ncols=True):
            outputs = model.test_step(batch)
            metric.process(batch, [output.to_dict() for output in outputs])
    seconds = time.perf_counter() - start

    restore = _quiet_mmengine_logger()
    try:
        summary = {k: float(v) for k, v in metric.compute_metrics(metric.results).items()}  # the run's numbers
    finally:
        restore()
    rows = per_class_rows(metric)
    out = Path(s.out or Path(s.WORK_DIR) / f'eval_{Path(s.eval_only).stem}{"_tta" if s.tta else ""}')
    result = dict(checkpoint=str(s.eval_only), model=s.SCRIPT, variant=getattr(s, 'BACKBONE', None),
                  data_root=loader_cfg['dataset']['data_root'], mode=mode, tta=bool(s.tta), **summary,
                  images=len(loader.dataset), seconds=round(seconds, 2),
                  sec_per_image=round(seconds / max(1, len(loader.dataset)), 4), device=device(), precision=precision,
                  reference_mIoU=reference.get('mIoU_ms' if s.tta else 'mIoU'), recipe=reference.get('config'))
    write_eval(out, rows, result)
    print(markdown_table(rows, only_present=True))
    recipe = (f'; the recipe reports {result["reference_mIoU"]}{" ms+flip" if s.tta else ""} on ADE20K'
              if result['reference_mIoU'] is not None else '')
    print(f'[{s.SCRIPT}] mIoU {summary["mIoU"]:.2f}  mAcc {summary["mAcc"]:.2f}  aAcc {summary["aAcc"]:.2f}  '
          f'({len(loader.dataset)} images in {seconds:.1f} s{recipe})')
    print(f'[{s.SCRIPT}] wrote {out}/per_class.csv, per_class.md, metrics.json', flush=True)
    return result


def per_class_rows(metric):
    """Per-class IoU and accuracy in percent, from the areas IoUMetric accumulated and with the
    formula it uses for the means. None where undefined (and left out of the means): IoU of a class
    neither present nor predicted, accuracy of a class with no ground-truth pixel."""
    intersect, union, predicted, label = (sum(column) for column in zip(*metric.results))
    per_class = metric.total_area_to_metrics(intersect, union, predicted, label, ['mIoU'])
    classes, _ = ade20k_meta()

    def percent(value):
        return None if np.isnan(value) else round(float(value) * 100, 2)
    return [dict(index=i, ade_id=i + LABEL_OFFSET, name=name, IoU=percent(per_class['IoU'][i]),
                 Acc=percent(per_class['Acc'][i]), gt_pixels=int(label[i]), pred_pixels=int(predicted[i]))
            for i, name in enumerate(classes)]


def markdown_table(rows, only_present=False):
    shown = [r for r in rows if r['gt_pixels'] or r['pred_pixels']] if only_present else rows
    lines = ['| index | ADE id | class | IoU | Acc | pixels |', '|---:|---:|---|---:|---:|---:|']
    lines += [f'| {r["index"]} | {r["ade_id"]} | {r["name"]} | {_cell(r["IoU"])} | {_cell(r["Acc"])} | '
              f'{r["gt_pixels"]} |' for r in shown]
    return '\n'.join(lines)


def _cell(value):
    return '-' if value is None else f'{value:.2f}'


def write_eval(out, rows, result):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'per_class.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ('' if v is None else v) for k, v in row.items()} for row in rows)
    head = (f'# {result["model"]} {result["variant"] or ""}: {result["checkpoint"]}\n\n'
            f'mIoU {result["mIoU"]:.2f}, mAcc {result["mAcc"]:.2f}, aAcc {result["aAcc"]:.2f} on '
            f'{result["images"]} images ({result["mode"]}). "-": undefined (no pixel of the class in the '
            'split, nor predicted for IoU), not counted in the means.\n\n')
    (out / 'per_class.md').write_text(head + markdown_table(rows) + '\n')
    (out / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')


# ---------------------------------------------------------------- --predict

def predict(cfg, s):
    """Segment an image, a folder of images or a video; write labels, colours and overlays."""
    import cv2
    from tqdm import tqdm
    checkpoint, source = s.predict
    if not 0 <= s.opacity <= 1:
        raise SetupError(f'--opacity {s.opacity} is outside 0..1', 'pass e.g. --opacity 0.5')
    source = Path(source)
    files, video = input_files(source)
    total = video_frame_count(video) if video else len(files)  # a video OpenCV cannot open stops here
    model = build_model(cfg, read_checkpoint(checkpoint, s, '--predict'), checkpoint)
    out = Path(s.out or Path(s.WORK_DIR) / f'predict_{source.stem}')
    for folder in ('labels', 'colors', 'overlays'):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_class_legend(out / 'classes.csv')
    pipeline = predict_pipeline(cfg)
    movie = None  # the overlay video, opened at the first frame (its size is known then)
    samples = _video_samples(video, pipeline) if video else _image_samples(files, pipeline, s)
    print(f'[{s.SCRIPT}] segmenting {total or "?"} {"frames" if video else "images"} from {source} '
          f'({device()}, batch {s.BATCH_PER_GPU})', flush=True)

    start, done = time.perf_counter(), 0
    with _Writer() as writer, tqdm(total=total or None, desc='predict', unit='img', dynamic_ncols=True) as bar:
        for batch in same_shape_batches(samples, max(1, s.BATCH_PER_GPU)):
            with torch.no_grad():
                results = model.test_step(dict(inputs=[b['inputs'] for b in batch],
                                               data_samples=[b['data_samples'] for b in batch]))
            for sample, result in zip(batch, results):
                pred = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                overlay = writer.save_prediction(out, sample['name'], sample['image'], pred, s.opacity)
                if video:
                    if movie is None:
                        movie = _open_movie(out / f'{video.stem}_overlay.mp4', video, overlay.shape)
                    movie.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            done += len(batch)
            bar.update(len(batch))
    if movie is not None:
        movie.release()
    seconds = time.perf_counter() - start
    print(f'[{s.SCRIPT}] wrote {done} predictions to {out}/ (labels/, colors/, overlays/'
          f'{f", {video.stem}_overlay.mp4" if video else ""}) in {seconds:.1f} s '
          f'({done / max(seconds, 1e-9):.2f} img/s); label PNGs: class index + {LABEL_OFFSET}, see classes.csv',
          flush=True)
    return out


def input_files(source):
    """(image files, None) for an image or a folder, (None, video) for a video; SetupError otherwise."""
    if not source.exists():
        raise SetupError(f'--predict input not found: {source}', 'pass an image, a folder of images or a video')
    suffix = source.suffix.lower()
    if source.is_file() and suffix in VIDEO_SUFFIXES:
        return None, source
    if source.is_file() and suffix in IMAGE_SUFFIXES:
        return [source], None
    if source.is_file():
        raise SetupError(f'--predict input {source} is neither an image ({" ".join(IMAGE_SUFFIXES)}) nor a video '
                         f'({" ".join(VIDEO_SUFFIXES)})', 'pass an image, a folder of images or a video')
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SetupError(f'--predict folder {source} holds no images ({" ".join(IMAGE_SUFFIXES)})',
                         'pass a folder with images in it (subfolders are not searched)')
    return _by_size(files), None


def _by_size(files):
    """Files ordered by image size, so that same-size images meet in a batch; unreadable ones refused."""
    from PIL import Image
    sizes, unreadable = {}, []
    for path in files:
        try:
            with Image.open(path) as image:
                sizes[path] = image.size
        except Exception as exc:
            unreadable.append(f'{path} ({type(exc).__name__})')
    if unreadable:
        raise SetupError(f'{len(unreadable)} unreadable images: {", ".join(unreadable[:5])}'
                         f'{" ..." if len(unreadable) > 5 else ""}', 'remove or fix them')
    return sorted(files, key=lambda p: (sizes[p], p.name))


def output_names(files):
    """Output name per file: its stem, or stem_suffix where two files share a stem (a.jpg, a.png)."""
    stems = collections.Counter(p.stem for p in files)
    return [p.stem if stems[p.stem] == 1 else f'{p.stem}_{p.suffix[1:]}' for p in files]


def predict_pipeline(cfg):
    """The recipe's test pipeline for arrays in memory: no annotation, no file to load."""
    from mmengine.dataset import Compose
    steps = [copy.deepcopy(t) for t in cfg['test_dataloader']['dataset']['pipeline']
             if t['type'] != 'LoadAnnotations']
    steps[0] = dict(type='LoadImageFromNDArray')  # was LoadImageFromFile; the image is decoded already
    return Compose(steps)


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes an image (BGR, as LoadImageFromFile does) and runs the test pipeline, in a worker."""

    def __init__(self, files, pipeline):
        self.files, self.names, self.pipeline = files, output_names(files), pipeline

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        import mmcv
        image = mmcv.imread(str(self.files[index]), 'color')
        if image is None:  # PIL read its header, OpenCV cannot decode it
            raise SetupError(f'OpenCV cannot decode {self.files[index]}', 'convert it to JPEG or PNG')
        return dict(name=self.names[index], image=image, **self.pipeline(dict(img=image)))


def _first(batch):
    return batch[0]


def _image_samples(files, pipeline, s):
    workers = ade20k.default_num_workers() if s.NUM_WORKERS < 0 else s.NUM_WORKERS
    return torch.utils.data.DataLoader(_ImageFiles(files, pipeline), batch_size=1, num_workers=workers,
                                       collate_fn=_first)


def video_frame_count(path):
    """Frames the container announces (0 if it does not); also refuses a video OpenCV cannot open."""
    import cv2
    capture = cv2.VideoCapture(str(path))
    opened, count = capture.isOpened(), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    if not opened:
        raise SetupError(f'--predict video {path} cannot be opened by OpenCV', 'convert it to an .mp4 (H.264)')
    return max(count, 0)


def _video_samples(path, pipeline):
    """Frames of a video (BGR) through the test pipeline, named <video stem>_<frame index>."""
    import cv2
    capture = cv2.VideoCapture(str(path))
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield dict(name=f'{path.stem}_{index:06d}', image=frame, **pipeline(dict(img=frame)))
            index += 1
    finally:
        capture.release()


def _open_movie(path, video, shape):
    import cv2
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0  # some containers do not say
    capture.release()
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (shape[1], shape[0]))


def same_shape_batches(samples, size):
    """Consecutive samples whose network inputs have one shape, at most `size` at a time: the model
    takes a batch only of equal sizes, and padding would change what it predicts."""
    batch = []
    for sample in samples:
        if batch and (len(batch) == size or sample['inputs'].shape != batch[0]['inputs'].shape):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def colorize(pred, palette):
    return palette[pred]


def overlay_image(rgb, colors, opacity):
    return (rgb.astype(np.float32) * (1 - opacity) + colors.astype(np.float32) * opacity).round().astype(np.uint8)


def write_class_legend(path):
    classes, palette = ade20k_meta()
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['label_value', 'class_index', 'class', 'r', 'g', 'b'])
        for i, (name, rgb) in enumerate(zip(classes, palette)):
            writer.writerow([i + LABEL_OFFSET, i, name, *map(int, rgb)])


class _Writer:
    """Encodes the PNG/JPEG files on threads, so that compression overlaps the next batch;
    at most `pending` files wait in memory."""

    def __init__(self, threads=4, pending=32):
        self.pool, self.futures, self.pending = ThreadPoolExecutor(threads), collections.deque(), pending
        self.palette = ade20k_meta()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for future in self.futures:
            future.result()
        self.pool.shutdown()

    def _save(self, array, path, **options):
        from PIL import Image
        while len(self.futures) >= self.pending:
            self.futures.popleft().result()
        self.futures.append(self.pool.submit(lambda: Image.fromarray(array).save(path, **options)))

    def save_prediction(self, out, name, image_bgr, pred, opacity):
        """Writes labels/, colors/ and overlays/ for one image; returns the RGB overlay."""
        colors = colorize(pred, self.palette)
        overlay = overlay_image(image_bgr[..., ::-1], colors, opacity)
        self._save(pred + LABEL_OFFSET, out / 'labels' / f'{name}.png')
        self._save(colors, out / 'colors' / f'{name}.png')
        self._save(overlay, out / 'overlays' / f'{name}.jpg', quality=92)
        return overlay


# ---------------------------------------------------------------- --export-onnx and --flops

class Logits(nn.Module):
    """Whole-image inference as one function of a tensor: float RGB 0..255 (N, 3, H, W) -> logits
    (N, 150, H, W). It is EncoderDecoder.whole_inference minus the data samples: the model's own
    normalisation, then encode_decode, whose decode head resizes to the input size."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor
        pre = segmentor.data_preprocessor
        normalize = getattr(pre, '_enable_normalize', False)
        self.register_buffer('mean', pre.mean.clone() if normalize else torch.zeros(3, 1, 1))
        self.register_buffer('std', pre.std.clone() if normalize else torch.ones(3, 1, 1))

    def forward(self, image):
        x = (image - self.mean) / self.std
        # A torch.Size img_shape makes the decode head resize to the traced input size (dynamic in ONNX).
        metas = [dict(img_shape=x.shape[-2:], pad_shape=x.shape[-2:])] * len(x)
        return self.segmentor.encode_decode(x, metas)


def _pool_matrix(n, k, like):
    """(k, n) averaging matrix of adaptive average pooling along one axis: row i averages
    [floor(i n / k), ceil((i + 1) n / k)), PyTorch's bins."""
    i = torch.arange(k, device=like.device)
    start = torch.div(i * n, k, rounding_mode='floor')
    end = torch.div((i + 1) * n + k - 1, k, rounding_mode='floor')
    j = torch.arange(n, device=like.device)
    inside = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


class MatrixAdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d as two matrix products. ONNX has no adaptive pooling: the exporter
    turns it into a fixed AveragePool, and refuses when the output size does not divide the input
    (PSPNet's and UPerNet's 3x3 and 6x6 bins). This form exports with any, even dynamic, size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x):
        rows = _pool_matrix(x.shape[-2], self.output_size[0], x)
        cols = _pool_matrix(x.shape[-1], self.output_size[1], x)
        return rows @ x @ cols.transpose(0, 1)


class TraceableMultiheadAttention(nn.Module):
    """nn.MultiheadAttention without masks, written so that tracing keeps sequence length and batch
    symbolic: torch's own implementation reshapes with Python ints, which the ONNX exporter
    freezes (SegFormer then runs only at the export size). Same weights, same math; it returns no
    attention weights (mmcv's attention wrappers use only the output)."""

    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    @staticmethod
    def supports(attention):
        return (attention._qkv_same_embed_dim and attention.in_proj_bias is not None
                and attention.bias_k is None and not attention.add_zero_attn)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kwargs):
        m = self.attention
        if key_padding_mask is not None or attn_mask is not None:
            return m(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                     attn_mask=attn_mask, **kwargs)
        if m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        head_dim = m.embed_dim // m.num_heads
        wq, wk, wv = m.in_proj_weight.chunk(3)
        bq, bk, bv = m.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).reshape(query.shape[0], -1, head_dim).transpose(0, 1)
        k = F.linear(key, wk, bk).reshape(key.shape[0], -1, head_dim).transpose(0, 1)
        v = F.linear(value, wv, bv).reshape(value.shape[0], -1, head_dim).transpose(0, 1)
        weights = torch.softmax(q @ k.transpose(1, 2) * head_dim ** -0.5, dim=-1)
        out = (weights @ v).transpose(0, 1).reshape(query.shape[0], -1, m.embed_dim)
        out = m.out_proj(out)
        return (out.transpose(0, 1) if m.batch_first else out), None


def exportable(model):
    """A copy of the model with the modules ONNX cannot trace faithfully replaced by equivalents."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, MatrixAdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, nn.MultiheadAttention) and TraceableMultiheadAttention.supports(child):
                setattr(parent, name, TraceableMultiheadAttention(child))
    return model


def export_onnx(cfg, s):
    """Export CKPT in whole-image mode, as dynamic as the model allows, and verify it with onnxruntime."""
    path = onnx_path(s)
    model = build_model(cfg, read_checkpoint(s.export_onnx, s, '--export-onnx'), s.export_onnx, on='cpu')
    reference, traced = Logits(model).eval(), Logits(exportable(model)).eval()
    image = verification_image(cfg, s)
    real = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    crop = tuple(s.CROP_SIZE)
    example_size = crop if crop != tuple(real.shape[-2:]) else (crop[0] + 32, crop[1] + 32)
    at_crop = F.interpolate(real, size=crop, mode='bilinear', align_corners=False).round()
    attempts = [  # (dynamic axes, example to trace, inputs to verify on): the verify inputs differ in size
        ('batch, height, width', {0: 'batch', 2: 'height', 3: 'width'}, torch.rand(1, 3, *example_size) * 255,
         torch.cat([real, real.flip(-1)])),
        ('height, width', {2: 'height', 3: 'width'}, torch.rand(1, 3, *example_size) * 255, real),
        (f'none: fixed at {crop[0]}x{crop[1]}', None, at_crop, at_crop),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    print(f'[{s.SCRIPT}] exporting {s.export_onnx} to {path} (opset {ONNX_OPSET}, whole-image mode)', flush=True)
    for dynamic, axes, example, inputs in attempts:
        try:
            _trace_to_onnx(traced, example, path, axes)
        except Exception as exc:
            failures.append(f'{dynamic}: {type(exc).__name__}: {_first_line(exc)}')
            continue
        _refuse_custom_ops(path, model, s)
        check = compare_with_onnxruntime(path, reference, inputs)
        if check.get('argmax_agreement', 0) >= AGREEMENT_TARGET:
            break
        failures.append(f'{dynamic}: {check.get("error") or "agreement " + str(check.get("argmax_agreement"))}')
    else:
        path.unlink(missing_ok=True)  # not a file anyone should deploy
        raise SetupError(f'{s.SCRIPT} cannot be exported to ONNX faithfully: {_culprit(failures)}\n    '
                         + '\n    '.join(failures), 'use the PyTorch model (--predict) for this one')
    result = dict(onnx=str(path), checkpoint=str(s.export_onnx), model=s.SCRIPT,
                  variant=getattr(s, 'BACKBONE', None), opset=ONNX_OPSET, dynamic_axes=dynamic,
                  input='image: float32 RGB 0..255, N x 3 x H x W (mean/std normalisation inside)',
                  output=f'logits: float32 N x {ade20k.NUM_CLASSES} x H x W; argmax = class index '
                         f'(ADE20K id - {LABEL_OFFSET})',
                  verified_on=f'{verification_source(cfg, s)} at {tuple(inputs.shape)}', **check,
                  not_dynamic_because=failures or None)
    _add_metadata(path, result)
    Path(f'{path}.json').write_text(json.dumps(result, indent=2) + '\n')
    print(f'[{s.SCRIPT}] wrote {path}: dynamic axes {dynamic}; onnxruntime vs PyTorch on '
          f'{result["verified_on"]}: max |logit diff| {check["max_abs_diff"]:.2e}, argmax agreement '
          f'{check["argmax_agreement"] * 100:.3f}%', flush=True)
    for failure in failures:
        print(f'[{s.SCRIPT}]   not exported as {failure}', flush=True)
    return result


def onnx_path(s):
    """--out FILE.onnx, --out DIR (-> DIR/<script>.onnx), or WORK_DIR/<script>.onnx."""
    if s.out and s.out.endswith('.onnx'):
        return Path(s.out)
    return Path(s.out or s.WORK_DIR) / f'{s.SCRIPT}.onnx'


def _trace_to_onnx(model, example, path, axes):
    names = dict(input_names=['image'], output_names=['logits'])
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings flag Python values frozen into the graph; the onnxruntime run at another
        # size (and batch) below is what tells whether that matters.
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          do_constant_folding=True, **names,
                          dynamic_axes={'image': axes, 'logits': axes} if axes else None)


def _refuse_custom_ops(path, model, s):
    """A node outside the standard ONNX domain (mmcv::MMCVPSAMask) cannot run in onnxruntime."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    custom = sorted({f'{n.domain}::{n.op_type}' for n in graph.node if n.domain not in ('', 'ai.onnx')})
    if custom:
        kernels = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith('mmcv.ops')})
        path.unlink()
        raise SetupError(f'{s.SCRIPT} cannot be exported to ONNX: it uses {", ".join(kernels) or "a custom op"} '
                         f'(a compiled mmcv op), exported as {", ".join(custom)}, which onnxruntime does not '
                         'implement', 'use the PyTorch model (--predict); running it from ONNX needs mmcv\'s '
                                      'custom-op library for onnxruntime (mmdeploy)')


def compare_with_onnxruntime(path, reference, inputs):
    """Run the ONNX file and the PyTorch model on the same inputs: max |logit difference| and the
    fraction of pixels whose argmax class agrees; or an error message."""
    import onnxruntime as ort
    with torch.no_grad():
        expected = reference(inputs).numpy()
    try:
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        got = session.run(None, {'image': inputs.numpy()})[0]
    except Exception as exc:
        return dict(error=f'onnxruntime: {_first_line(exc)}')
    if got.shape != expected.shape:
        return dict(error=f'onnxruntime gives shape {got.shape}, PyTorch {expected.shape}')
    return dict(max_abs_diff=float(np.abs(got - expected).max()),
                argmax_agreement=float((got.argmax(1) == expected.argmax(1)).mean()))


def _first_line(exc):
    text = str(exc).strip()
    return (text.splitlines() or [''])[0][:300]


def _culprit(failures):
    """The operator named in the exporter's messages, e.g. "aten::foo" or "PSAMaskFunction"."""
    for failure in failures:
        found = re.search(r"(?:operator|Python operator|op)\s+'?([\w:.]+)'?", failure)
        if found:
            return f'operator {found.group(1)}'
    return 'see the attempts below'


def _add_metadata(path, result):
    """The input contract and class names inside the ONNX file, for whoever deploys it."""
    import onnx
    model = onnx.load(str(path))
    classes, palette = ade20k_meta()
    fields = dict(input=result['input'], output=result['output'], source=result['checkpoint'],
                  classes=json.dumps(classes), palette=json.dumps(palette.tolist()))
    for key, value in fields.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def verification_source(cfg, s):
    """The image the export is checked on: --predict's INPUT (first image or frame), else the
    dataset's first validation image."""
    if s.predict:
        source = Path(s.predict[1])
        files, video = input_files(source)
        return str(video or files[0])
    folder = Path(cfg['test_dataloader']['dataset']['data_root'], 'images', ade20k.SPLITS['val'])
    images = sorted(folder.glob(f'*{ade20k.IMG_SUFFIX}')) if folder.is_dir() else []
    if not images:
        raise SetupError(f'--export-onnx verifies on a real image, and {folder} has none',
                         'pass --data-root of your ADE20K copy, or an image with --predict CKPT IMAGE')
    return str(images[0])


def verification_image(cfg, s):
    """That image after the recipe's test resize, as RGB uint8 (H, W, 3)."""
    import cv2
    import mmcv
    source = Path(verification_source(cfg, s))
    if source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        ok, bgr = capture.read()
        capture.release()
        if not ok:
            raise SetupError(f'cannot read a frame of {source}', 'pass a readable video or an image')
    else:
        bgr = mmcv.imread(str(source), 'color')
    packed = predict_pipeline(cfg)(dict(img=bgr))
    return packed['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]  # packed is BGR CHW


def flops(cfg, s):
    """Parameters and FLOPs of whole-image inference at --flops-size, per part of the model."""
    from mmengine.analysis import parameter_count
    from common.complexity import analyze
    height, width = s.flops_size
    model = build_model(cfg, on='cpu')  # CPU: mmcv ops run their PyTorch path, which the counter sees
    logits = Logits(model).eval()
    analyzer = analyze(logits, torch.rand(1, 3, height, width) * 255)
    by_module = analyzer.by_module()
    params = parameter_count(logits)
    parts = [name for name, _ in model.named_children() if params.get(f'segmentor.{name}', 0)]
    rows = [(name, params[f'segmentor.{name}'], by_module.get(f'segmentor.{name}', 0)) for name in parts]
    total_flops = int(analyzer.total())
    used = sum(p for name, p, f in rows if f)  # parts that run at inference (not the auxiliary head)
    variant = f' {s.BACKBONE}' if getattr(s, 'BACKBONE', None) else ''
    print(f'[{s.SCRIPT}]{variant} complexity at 1x3x{height}x{width}, whole-image inference '
          '(one multiply-add = one FLOP):')
    print(f'  {"part":<18}{"params":>10}  FLOPs')
    for name, count, flop in rows:
        print(f'  {name:<18}{_si(count):>10}  {_si(flop) if flop else "- (training only)"}')
    print(f'  {"total":<18}{_si(params[""]):>10}  {_si(total_flops)}')
    print(f'[{s.SCRIPT}] params {params[""]:,} ({used:,} used at inference), FLOPs {total_flops:,} '
          f'({total_flops / 1e9:.2f} G)', flush=True)
    return dict(params=params[''], params_inference=used, flops=total_flops, size=(height, width))


def _si(value):
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= scale:
            return f'{value / scale:.2f}{unit}'
    return str(value)
