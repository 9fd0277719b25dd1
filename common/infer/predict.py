"""--predict: segment an image, a folder of images or a video with a checkpoint.

Writes to --out (default WORK_DIR/predict_<input stem>/):
    labels/<name>.png    uint8, ADE20K annotation coding: class index + 1 (1..150), as the
                         dataset's annotations/ PNGs; 0 ("other") is never predicted
    colors/<name>.png    RGB, the class colours of mmseg's ADE20KDataset palette
    overlays/<name>.jpg  the image blended with the colours (--opacity)
    classes.csv          label value, class name and colour of every class
    <video>_overlay.mp4  for a video input: the overlays as a video (frames are <video>_000000...)
Images are batched (--batch-per-gpu at a time, same-size images together) and decoded by
--num-workers processes.
"""
import collections
import copy
import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from common import ade20k, cli
from common.errors import SetupError
from common.infer.model import LABEL_OFFSET, ade20k_meta, build_from, device

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


def run(cfg, s, plan):
    """Segment an image, a folder of images or a video; write labels, colours and overlays."""
    import cv2
    from tqdm import tqdm
    checkpoint, source = s.predict
    opacity = cli.OPACITY if s.opacity is None else s.opacity  # its range: common/validate.py
    source = Path(source)
    files, video = input_files(source)
    total = video_frame_count(video) if video else len(files)  # a video OpenCV cannot open stops here
    model = build_from(cfg, s, checkpoint, '--predict')
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
                overlay = writer.save_prediction(out, sample['name'], sample['image'], pred, opacity)
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
