"""What MMSegmentation's own tools need to run a config this project writes (--dump-config).

The wheel's tools/train.py, tools/test.py and mmseg.apis.init_model read a config with mmengine's
Config.fromfile, which imports the modules its `custom_imports` names. `portable(cfg)` names there:
- this module, whose import adds checkpoints.allowed_globals() (mmengine's HistoryBuffer, numpy
  arrays, dtypes and scalars) to torch's weights-only allow-list: on torch >= 2.6 the tools'
  plain torch.load calls (test's checkpoint, train's --resume and load_from, init_model, a Pretrained
  init) then load mmengine checkpoints, ours and theirs, with torch's safe loading left on;
  It also registers checkpoints' safetensors reader in mmengine's CheckpointLoader, so the tools
  and init_model take a model.safetensors of --export-safetensors where they take a checkpoint;
- the modules of ours that register a type the config names (REGISTERED_BY), and no others.
It also writes the pipelines out at the top (test_pipeline, tta_pipeline), where the tools look for them.
Nothing else of a run is in a dumped config (speed settings, the loss guard, atomic checkpoints:
common/train.py adds those to a run's own copy), so the tools run the recipe as MMSegmentation does.
"""
import copy

import torch

from common import ade20k, checkpoints, config

# type named in a recipe's config -> the module of ours whose import registers it
REGISTERED_BY = {'ResizeToAtLeast': 'common.fixed_window',  # BEiT's and MAE's multi-scale test views
                 'RunWandbVisBackend': 'common.trackers', 'RunMLflowVisBackend': 'common.trackers'}  # --tracker

# Adding is idempotent (torch keeps a set) and adds nothing that can run code: see checkpoints.
torch.serialization.add_safe_globals(checkpoints.allowed_globals())
checkpoints.register_safetensors_loader()


def portable(cfg):
    """A copy of `cfg` whose custom_imports make it load and build in MMSegmentation's own tools."""
    cfg = copy.deepcopy(cfg)
    # Top-level pipelines, as the official configs have them: mmseg.apis.inference_model builds its
    # data from `test_pipeline`, tools/test.py --tta from `tta_pipeline` (the one our --eval-only
    # --tta uses when a script names none).
    cfg.setdefault('test_pipeline', copy.deepcopy(cfg['test_dataloader']['dataset']['pipeline']))
    cfg.setdefault('tta_pipeline', ade20k.tta_pipeline())
    named = config.types_in(cfg)
    config.add_imports(cfg, 'common.stock_tools', *sorted({module for kind, module in REGISTERED_BY.items() if kind in named}))
    return cfg
