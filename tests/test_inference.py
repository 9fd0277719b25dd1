"""--eval-only, --predict, --export-onnx and --flops (common/infer/) on CPU, with checkpoints
the scripts themselves train for a few iterations on the tiny dataset."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY, load_script

ONNX_SCRIPTS = ['train_fcn', 'train_pspnet', 'train_deeplabv3plus', 'train_upernet', 'train_segformer']
ITERS = 2


@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
    """trained(name) -> (module, work dir, flags, checkpoint): each script trains once per module,
    ITERS iterations with an evaluation at the end, so summary.json holds its evaluation. Its
    checkpoints (a few hundred MB each) are deleted when the module ends: CI's disk is not ours."""
    runs = {}

    def train(name):
        if name not in runs:
            module = load_script(name)
            work = tmp_path_factory.mktemp(name)
            flags = ['--data-root', tiny_data, '--work-dir', str(work), *TINY,
                     *getattr(module, 'SMOKE_TEST_FLAGS', [])]
            module.main(flags + ['--max-iters', str(ITERS), '--val-interval', str(ITERS)])
            for copy in work.glob('best_*.pth'):  # the same weights as iter_{ITERS}.pth, which the tests use
                copy.unlink()
            runs[name] = (module, work, flags, str(work / f'iter_{ITERS}.pth'))
        return runs[name]
    yield train
    for _, work, _, _ in runs.values():
        shutil.rmtree(work, ignore_errors=True)


def _annotations(tiny_data):
    return sorted(Path(tiny_data, 'annotations', 'validation').glob('*.png'))


def _palette():
    from mmseg.datasets import ADE20KDataset
    return np.array(ADE20KDataset.METAINFO['palette'], np.uint8)


@pytest.mark.slow
def test_eval_only_reproduces_the_training_evaluation(trained, tiny_data, tmp_path, capsys):
    module, work, flags, checkpoint = trained('train_fcn')
    logged = json.loads((work / 'summary.json').read_text())
    out = tmp_path / 'eval'
    module.main(flags + ['--eval-only', checkpoint, '--out', str(out)])

    metrics = json.loads((out / 'metrics.json').read_text())
    assert {k: metrics[k] for k in ('mIoU', 'mAcc', 'aAcc')} == {k: logged[k] for k in ('mIoU', 'mAcc', 'aAcc')}
    assert metrics['images'] == 3 and metrics['seconds'] > 0 and metrics['mode'] == 'whole'
    rows = list(csv.DictReader((out / 'per_class.csv').open()))
    assert len(rows) == 150 and rows[0]['name'] == 'wall' and rows[-1]['ade_id'] == '150'
    # The pixel column counts the annotations themselves (value v is class v - 1; 0 is ignored).
    counts = np.bincount(np.concatenate([np.asarray(Image.open(p)).ravel() for p in _annotations(tiny_data)]),
                         minlength=151)
    assert [int(r['gt_pixels']) for r in rows] == counts[1:].tolist()
    ious = [float(r['IoU']) for r in rows if r['IoU']]
    assert abs(np.mean(ious) - metrics['mIoU']) <= 0.01  # per-class values are rounded to 0.01
    assert (out / 'per_class.md').read_text().count('\n| ') == 151  # header + 150 classes
    assert f'mIoU {metrics["mIoU"]:.2f}' in capsys.readouterr().out


@pytest.mark.slow
def test_eval_only_scores_a_known_prediction(trained, tiny_data, tmp_path):
    """A head that predicts one class everywhere has scores countable by hand: the table must say so."""
    import torch
    from common import checkpoints
    module, _, flags, checkpoint = trained('train_fcn')
    counts = np.bincount(np.concatenate([np.asarray(Image.open(p)).ravel() for p in _annotations(tiny_data)]),
                         minlength=151)[1:]
    k = int(counts.argmax())
    state = checkpoints.load(checkpoint)['state_dict']
    state['decode_head.conv_seg.weight'].zero_()
    state['decode_head.conv_seg.bias'].zero_()[k] = 1
    constant = tmp_path / 'constant.pth'
    torch.save(dict(state_dict=state), constant)
    out = tmp_path / 'eval'
    module.main(flags + ['--eval-only', str(constant), '--out', str(out)])

    metrics = json.loads((out / 'metrics.json').read_text())
    present, total = int((counts > 0).sum()), int(counts.sum())
    assert metrics['aAcc'] == round(100 * counts[k] / total, 2)
    assert metrics['mIoU'] == round(100 * counts[k] / total / present, 2)
    assert metrics['mAcc'] == round(100 / present, 2)
    rows = {int(r['index']): r for r in csv.DictReader((out / 'per_class.csv').open())}
    assert float(rows[k]['Acc']) == 100 and int(rows[k]['pred_pixels']) == total
    assert all(float(rows[i]['IoU']) == 0 for i in np.flatnonzero(counts) if i != k)
    assert all(rows[i]['IoU'] == '' for i in np.flatnonzero(counts == 0))  # absent classes: no score


@pytest.mark.slow
def test_eval_only_with_tta(trained, tmp_path):
    module, _, flags, checkpoint = trained('train_fcn')
    out = tmp_path / 'tta'
    module.main(flags + ['--eval-only', checkpoint, '--tta', '--out', str(out)])
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['tta'] and 'TTA' in metrics['mode'] and metrics['images'] == 3
    assert 0 <= metrics['mIoU'] <= 100 and 0 <= metrics['aAcc'] <= 100


@pytest.mark.slow
def test_predict_a_folder_writes_labels_colors_overlays(trained, tiny_data, tmp_path):
    module, work, flags, checkpoint = trained('train_fcn')
    out = tmp_path / 'pred'
    module.main(flags + ['--predict', checkpoint, str(Path(tiny_data, 'images', 'validation')), '--out', str(out)])

    palette, correct, counted = _palette(), 0, 0
    for annotation in _annotations(tiny_data):
        name = annotation.stem
        label = Image.open(out / 'labels' / f'{name}.png')
        colors = Image.open(out / 'colors' / f'{name}.png')
        overlay = Image.open(out / 'overlays' / f'{name}.jpg')
        assert label.mode == 'L' and colors.mode == 'RGB'
        assert label.size == colors.size == overlay.size == Image.open(annotation).size == (80, 64)
        value = np.asarray(label)
        assert 1 <= value.min() and value.max() <= 150  # ADE20K annotation coding
        assert (np.asarray(colors) == palette[value - 1]).all()
        truth = np.asarray(Image.open(annotation))
        correct, counted = correct + int(((value == truth) & (truth > 0)).sum()), counted + int((truth > 0).sum())
    # The label files score what the training run's evaluation scored: same model, same pipeline.
    logged = json.loads((work / 'summary.json').read_text())
    assert abs(round(100 * correct / counted, 2) - logged['aAcc']) <= 0.02
    legend = list(csv.DictReader((out / 'classes.csv').open()))
    assert legend[0]['label_value'] == '1' and legend[0]['class'] == 'wall' and len(legend) == 150


@pytest.mark.slow
def test_predict_an_image_at_full_opacity_shows_the_colors(trained, tiny_data, tmp_path):
    module, _, flags, checkpoint = trained('train_fcn')
    image = sorted(Path(tiny_data, 'images', 'validation').glob('*.jpg'))[0]
    out = tmp_path / 'one'
    module.main(flags + ['--predict', checkpoint, str(image), '--out', str(out), '--opacity', '1'])
    assert [p.name for p in (out / 'labels').iterdir()] == [f'{image.stem}.png']
    overlay, colors, photo = (np.asarray(Image.open(p), np.float32) for p in (
        out / 'overlays' / f'{image.stem}.jpg', out / 'colors' / f'{image.stem}.png', image))
    assert np.abs(overlay - colors).mean() < 0.25 * np.abs(overlay - photo).mean()  # the colours, JPEG noise


@pytest.mark.slow
def test_predict_a_video_writes_frames_and_an_overlay_video(trained, tiny_data, tmp_path):
    import cv2
    module, _, flags, checkpoint = trained('train_fcn')
    video = tmp_path / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 5, (80, 64))
    for path in sorted(Path(tiny_data, 'images', 'validation').glob('*.jpg')) * 2:
        writer.write(cv2.imread(str(path)))
    writer.release()
    out = tmp_path / 'video'
    module.main(flags + ['--predict', checkpoint, str(video), '--out', str(out)])
    assert sorted(p.name for p in (out / 'labels').iterdir()) == [f'clip_{i:06d}.png' for i in range(6)]
    capture = cv2.VideoCapture(str(out / 'clip_overlay.mp4'))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (64, 80, 3)
        frames += 1
    assert frames == 6


@pytest.mark.slow
@pytest.mark.parametrize('name', ONNX_SCRIPTS)
def test_onnx_export_matches_pytorch(name, trained, tmp_path, capsys):
    import onnxruntime as ort
    module, _, flags, checkpoint = trained(name)
    path = tmp_path / f'{name}.onnx'
    module.main(flags + ['--export-onnx', checkpoint, '--out', str(path)])
    report = json.loads(Path(f'{path}.json').read_text())
    assert report['argmax_agreement'] >= 0.999 and report['max_abs_diff'] < 1e-3, report
    assert report['dynamic_axes'] == 'batch, height, width', report
    assert 'argmax agreement' in capsys.readouterr().out
    # Dynamic for real: another batch and size than both the export's and the verification's.
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    logits = session.run(None, {'image': np.random.rand(3, 3, 72, 40).astype(np.float32) * 255})[0]
    assert logits.shape == (3, 150, 72, 40) and np.isfinite(logits).all()
    assert len(json.loads(session.get_modelmeta().custom_metadata_map['classes'])) == 150


@pytest.mark.slow
def test_onnx_export_names_an_op_onnxruntime_lacks(tiny_data, tmp_path, capsys):
    """PSANet's PSAMask is a compiled mmcv op: refused with its name, exit code 2."""
    if not (ROOT / 'train_psanet.py').is_file():
        pytest.skip('no train_psanet.py')
    import torch
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    from common import cli, config
    module = load_script('train_psanet')
    flags = ['--data-root', tiny_data, '--work-dir', str(tmp_path), *TINY]
    cfg = module.build_config(cli.parse(vars(module), flags))
    config.sync_bn_to_bn(cfg)
    register_all_modules()
    checkpoint = tmp_path / 'untrained.pth'  # the error needs no training, only the weights' names
    torch.save(dict(state_dict=MODELS.build(ConfigDict(cfg['model'])).state_dict()), checkpoint)
    with pytest.raises(SystemExit) as exit_:
        module.main(flags + ['--export-onnx', str(checkpoint), '--out', str(tmp_path / 'psa.onnx')])
    assert exit_.value.code == 2
    assert 'PSAMask' in capsys.readouterr().err


def test_flops_prints_parameters_and_flops(tiny_data, capsys):
    module = load_script('train_fcn')
    module.main(['--data-root', tiny_data, *TINY, '--flops', '--flops-size', '64,64'])
    out = capsys.readouterr().out
    assert 'backbone' in out and 'decode_head' in out and 'training only' in out
    total = next(line for line in out.splitlines() if line.strip().startswith('total')).split()
    assert total[1].endswith('M') and float(total[1][:-1]) > 40  # FCN R50-D8: 49.6M parameters
    assert total[2].endswith('G') and float(total[2][:-1]) > 1


@pytest.mark.parametrize('flags', [['--eval-only', '{missing}'], ['--predict', '{missing}', '{image}'],
                                   ['--export-onnx', '{missing}'], ['--predict', '{checkpoint}', '{nowhere}']],
                         ids=['eval-only', 'predict', 'export-onnx', 'predict-input'])
def test_missing_files_exit_with_code_2(flags, tiny_data, tmp_path, capsys):
    module = load_script('train_fcn')
    checkpoint = tmp_path / 'empty.pth'
    checkpoint.write_bytes(b'')
    paths = dict(missing=tmp_path / 'missing.pth', nowhere=tmp_path / 'nowhere',
                 image=next(Path(tiny_data, 'images', 'validation').glob('*.jpg')), checkpoint=checkpoint)
    with pytest.raises(SystemExit) as exit_:
        module.main(['--data-root', tiny_data, '--work-dir', str(tmp_path), *TINY,
                     *[f.format(**paths) for f in flags]])
    assert exit_.value.code == 2
    assert 'not found' in capsys.readouterr().err


@pytest.mark.slow
def test_a_head_variant_is_recorded_the_same_everywhere(tiny_data, tmp_path):
    """The variant of a script that picks its recipe by HEAD (here MobileNetV2's FCN head, not its
    default DeepLabV3) is what summary.json, metrics.json and the ONNX sidecar all record."""
    module = load_script('train_mobilenetv2')
    flags = ['--data-root', tiny_data, '--work-dir', str(tmp_path / 'work'), *TINY, '--head', 'fcn']
    module.main(flags + ['--max-iters', '1', '--val-interval', '1'])
    checkpoint = str(tmp_path / 'work' / 'iter_1.pth')
    module.main(flags + ['--eval-only', checkpoint, '--out', str(tmp_path / 'eval')])
    module.main(flags + ['--export-onnx', checkpoint, '--out', str(tmp_path / 'm.onnx')])
    recorded = [json.loads(path.read_text())['variant'] for path in
                (tmp_path / 'work' / 'summary.json', tmp_path / 'eval' / 'metrics.json', tmp_path / 'm.onnx.json')]
    assert recorded == ['fcn', 'fcn', 'fcn']
