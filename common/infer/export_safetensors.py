"""--export-safetensors: a checkpoint's weights as one safetensors file, with a model card and its config.

Writes into --out DIR (default: beside the checkpoint, <its folder>/<its name>_safetensors/):
- model.safetensors: the model's state dict, every tensor of it (parameters and the persistent
  buffers: BN's running statistics), checked to fit this script's model first (load_exactly) and
  stored under the names the model's own state_dict() gives. Tensors and a table of strings only:
  no pickle, nothing that runs when it is read. Left out, as training state: the optimizer, the LR
  schedulers and the message hub (a .pth resumes a run; this file starts one). Not in any state
  dict: the data preprocessor's mean and std (non-persistent buffers, made from the config). With
  mmengine's EMAHook a checkpoint's `state_dict` holds the averaged weights (the hook swaps them in
  when it saves, for deployment) and `ema_state_dict` the raw ones: the averaged ones are exported.
  The metadata names the script, variant, source checkpoint, iteration and mIoU, and ADE20K's class
  names and palette (mmseg.apis.init_model takes those as the model's dataset_meta).
- config.py: the resolved config, the file --dump-config writes (MMSegmentation's tools and mmseg.apis
  load it; its custom_imports read safetensors, common/stock_tools.py).
- README.md: a model card (Hugging Face style: YAML front matter, then text): script, variant, the
  command that made it, mIoU of the checkpoint's own iteration and where that number was recorded,
  iterations, versions, and the commands that load it back.

The mIoU is the evaluation of the checkpoint's iteration, looked up where the run recorded it: the
checkpoint's message hub (best_score, when the best checkpoint is of this iteration), then the
run's summary.json beside it (its last evaluation, when the run finished at this iteration). A
checkpoint between evaluations, or a file without either, gets none: the card says to score it
with --eval-only, which gives the exported file the same numbers as the checkpoint.
"""
import copy
import json
import re
import shlex
from pathlib import Path

import torch

from common import checkpoints, checks, cli, config, files, scripts
from common.infer.model import ade20k_meta, build

WEIGHTS, CARD, CONFIG = 'model.safetensors', 'README.md', 'config.py'


def out_dir(s):
    """--out, or <checkpoint folder>/<checkpoint name>_safetensors."""
    source = Path(s.export_safetensors)
    return Path(s.out) if s.out else source.parent / f'{source.stem}_safetensors'


def run(cfg, s, plan):
    """Write CKPT's weights (model.safetensors), its config (config.py) and a model card (README.md)."""
    checks.import_or_fail('safetensors.torch')
    import safetensors.torch
    source = s.export_safetensors
    checkpoint = checkpoints.load(source, trust=s.trust_checkpoint, what='--export-safetensors checkpoint')
    state = checkpoints.state_of(checkpoint, source, '--export-safetensors')
    # Built and loaded exactly: a checkpoint of another script or variant is refused here, and the file
    # holds the tensors under the names (and with the count) this model's state_dict() has.
    model = build(cfg['model'], cfg.get('custom_imports'), state, source, on='cpu')
    tensors = _own_storage(model.state_dict())
    out = out_dir(s)
    meta = checkpoint.get('meta') or {}
    iteration = meta.get('iter')
    miou, miou_source = recorded_miou(checkpoint, source)
    summary = _summary(source)
    classes, palette = ade20k_meta()
    # Strings only (the format's metadata); '' where a value is unknown.
    metadata = dict(format='pt', script=f'train_{s.SCRIPT}.py', variant=str(scripts.variant_name(vars(s)) or ''),
                    source=str(source), iteration=_text(iteration), mIoU=_text(miou), mIoU_source=miou_source,
                    classes=json.dumps(classes), palette=json.dumps(palette.tolist()))
    print(f'[{s.SCRIPT}] exporting {source} ({len(tensors)} tensors) to {out}/', flush=True)
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write(safetensors.torch.save(tensors, metadata=metadata), str(out / WEIGHTS))
    _write_config(cfg, out / CONFIG)
    info = dict(script=f'train_{s.SCRIPT}.py', variant=scripts.variant_name(vars(s)), source=str(source),
                iteration=iteration, max_iters=trained_for(checkpoint, summary, cfg), mIoU=miou,
                mIoU_source=miou_source, tensors=len(tensors),
                parameters=sum(p.numel() for p in model.parameters()),
                data_root=cfg['test_dataloader']['dataset']['data_root'], recipe=s.reference.get('config'),
                reference_mIoU=s.reference.get('mIoU'), work_dir=s.WORK_DIR,
                command=_command(s, s.argv), model_command=_command(s, cli.model_flags(s.argv)),
                train_command=_command(s, cli.model_flags(s.argv, without=['--work-dir'])),
                versions=versions(), trained_with={k: summary[k] for k in ('torch', 'mmcv', 'mmseg') if k in summary})
    files.atomic_write(model_card(info, out), str(out / CARD))
    shown = f'mIoU {miou} ({miou_source})' if miou is not None else miou_source
    print(f'[{s.SCRIPT}] wrote {out / WEIGHTS}, {out / CARD}, {out / CONFIG}: iteration {iteration}, {shown}', flush=True)
    return info


def _text(value):
    return '' if value is None else str(value)


def _own_storage(state):
    """The state dict's tensors, contiguous and on the CPU, each with its own memory: safetensors stores
    no two names over one buffer, so a tensor tied to another (shared weights) is copied."""
    seen, tensors = set(), {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        tensors[name] = tensor
    return tensors


def _write_config(cfg, path):
    """The config as --dump-config writes it (infer.dispatch's own launcher setting left out)."""
    from common import stock_tools
    cfg = copy.deepcopy(cfg)
    cfg.pop('launcher', None)
    config.dump(stock_tools.portable(cfg), path)


def _iteration_of(name):
    found = re.search(r'iter_(\d+)\.pth$', str(name or ''))
    return int(found.group(1)) if found else None


def _summary(source):
    """summary.json of the run that wrote the checkpoint (beside it), or {}."""
    path = Path(source).parent / 'summary.json'
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def recorded_miou(checkpoint, source):
    """(mIoU of the checkpoint's own iteration, where it was recorded), or (None, why there is none)."""
    iteration = (checkpoint.get('meta') or {}).get('iter')
    if iteration is None:
        return None, f'{source} records no iteration (it is not a training checkpoint): score it with --eval-only'
    info = (checkpoint.get('message_hub') or {}).get('runtime_info') or {}
    best, best_ckpt = info.get('best_score'), info.get('best_ckpt')
    if best is not None and _iteration_of(best_ckpt) == iteration:
        return round(float(best), 2), (f"the checkpoint's message hub (best_score: the evaluation of iteration "
                                        f'{iteration}, {Path(best_ckpt).name})')
    summary = _summary(source)
    path = Path(source).parent / 'summary.json'
    if summary.get('status') == 'finished' and summary.get('iters_done') == iteration and summary.get('mIoU') is not None:
        return summary['mIoU'], f"{path} (mIoU: the run's last evaluation, at iteration {iteration})"
    if summary.get('best_iter') == iteration and summary.get('best_mIoU') is not None:
        return summary['best_mIoU'], f'{path} (best_mIoU: the evaluation of iteration {iteration})'
    return None, (f'no evaluation of iteration {iteration} is recorded in the checkpoint or a summary.json beside '
                  'it: score it with --eval-only')


def trained_for(checkpoint, summary, cfg):
    """The training run's MAX_ITERS: its message hub's, its summary.json's, else this command's."""
    info = (checkpoint.get('message_hub') or {}).get('runtime_info') or {}
    return info.get('max_iters') or summary.get('max_iters') or cfg['train_cfg'].get('max_iters')


def versions():
    import mmcv
    import mmengine
    import mmseg
    import safetensors
    return {package.__name__: str(package.__version__) for package in (torch, mmcv, mmseg, mmengine, safetensors)}


def _command(s, flags):
    return ' '.join(['python', f'train_{s.SCRIPT}.py', *map(shlex.quote, flags)])


def front_matter(info):
    """The card's YAML front matter (Hugging Face's model card metadata, plus this run's facts)."""
    name = f'{info["script"].removeprefix("train_").removesuffix(".py")}' + (f' {info["variant"]}' if info['variant'] else '')
    data = dict(library_name='mmsegmentation', pipeline_tag='image-segmentation', datasets=['ade20k'],
                tags=['semantic-segmentation', 'mmsegmentation', 'ade20k', 'safetensors',
                      info['script'].removeprefix('train_').removesuffix('.py'),
                      *([str(info['variant'])] if info['variant'] else [])],
                metrics=['mean_iou'])
    if info['mIoU'] is not None:
        data['model-index'] = [dict(name=name, results=[dict(
            task=dict(type='image-segmentation', name='Semantic Segmentation'),
            dataset=dict(type='ade20k', name='ADE20K', split='validation', args=dict(data_root=info['data_root'])),
            metrics=[dict(type='mean_iou', name='mIoU', value=info['mIoU'])])])]
    data.update(script=info['script'], variant=info['variant'], iterations=info['iteration'],
                max_iters=info['max_iters'], mIoU=info['mIoU'], mIoU_source=info['mIoU_source'],
                source_checkpoint=info['source'], recipe=info['recipe'], reference_mIoU=info['reference_mIoU'],
                versions=info['versions'])
    import yaml
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def model_card(info, out):
    weights, config_file = out / WEIGHTS, out / CONFIG
    variant = f' ({info["variant"]})' if info['variant'] else ''
    miou = (f'{info["mIoU"]}, from {info["mIoU_source"]}' if info['mIoU'] is not None
            else f'not recorded: {info["mIoU_source"]}')
    reference = (f'`{info["recipe"]}` (reference mIoU {info["reference_mIoU"]})' if info['recipe']
                 else 'none listed for this variant')
    rows = [('mIoU (single scale)', miou), ('iterations', f'{info["iteration"]} of {info["max_iters"]}'),
            ('source checkpoint', f'`{info["source"]}`'), ('validation data', f'`{info["data_root"]}`'),
            ('MMSegmentation recipe', reference),
            (WEIGHTS, f'{info["tensors"]} tensors, {info["parameters"]:,} parameters: the model\'s state dict, '
                      'no optimizer state, no pickle'),
            (CONFIG, 'the resolved config of the command below (its --dump-config file): the model, data and '
                     'test settings; its schedule is that command\'s, the training run\'s own config is in its '
                     'work dir')]
    trained = info['trained_with']
    version_rows = [f'| {name} | {version} | {trained.get(name, "")} |' for name, version in info['versions'].items()]
    flags = info['model_command']
    work_dir = f'{info["work_dir"]}_from_safetensors'
    return '\n'.join([
        '---', front_matter(info).rstrip(), '---', '',
        f'# {info["script"]}{variant}: ADE20K semantic segmentation', '',
        f'The weights of `{info["source"]}`, trained by `{info["script"]}` of this repository (MMSegmentation '
        f'{info["versions"]["mmseg"]}), as safetensors.', '',
        '| | |', '|---|---|', *[f'| {k} | {v} |' for k, v in rows], '',
        '## How it was made', '',
        '```bash', info['command'], '```', '',
        'The model settings of that command (its flags, besides the export\'s) are the training run\'s; '
        f'`{config_file.name}` beside this card has every value.', '',
        '## Load it back', '',
        'From the repository root, in its environment (`.venv/bin/python`, or `python` with `.venv` activated):', '',
        '```bash',
        f'{flags} --eval-only {weights}      # mIoU and per-class table, the same as the checkpoint\'s',
        f'{flags} --predict {weights} photos/ --out preds/',
        f'{info["train_command"]} --load-from {weights} --work-dir {work_dir}   # train from these weights',
        '```', '',
        f'In Python, with MMSegmentation\'s API (`{config_file.name}` imports `common.stock_tools`, which reads '
        'safetensors files):', '',
        '```python',
        'from mmseg.apis import init_model, inference_model',
        f"model = init_model('{config_file}', '{weights}', device='cpu')   # or 'cuda:0'",
        "result = inference_model(model, 'photo.jpg')   # result.pred_sem_seg: class indices 0..149",
        '```', '',
        'Or the tensors alone (the names are the model\'s state_dict keys; the input normalisation is the '
        f'config\'s `data_preprocessor`, not in the file):', '',
        '```python',
        'from safetensors.torch import load_file',
        f"state = load_file('{weights}')   # model.load_state_dict(state) for the model of {config_file.name}",
        '```', '',
        '## Versions', '',
        '| package | export | training (summary.json) |', '|---|---|---|', *version_rows, '',
    ])
