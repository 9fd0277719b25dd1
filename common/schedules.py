"""Optimizer + LR scheduler + loop bundles, with every dependent number derived from the settings.

`max_iters` and `val_interval` count optimizer steps. With gradient accumulation (`accumulate` > 1)
each step takes that many loader iterations, so the loop, the scheduler end, the warmup and the
evaluation interval are all stretched by it: the LR curve per image seen stays the recipe's.
"""


def steps(s):
    """The step-count arguments every schedule takes, from a script's settings. (The precision a run
    trains in is not the recipe's business: common.speed sets the wrapper at run time.)"""
    return dict(max_iters=s.MAX_ITERS, val_interval=s.VAL_INTERVAL, accumulate=s.ACCUMULATE)


def end_iter(max_iters, accumulate=1):
    """The loader iteration where a schedule ends: MAX_ITERS optimizer steps of ACCUMULATE iterations."""
    return max_iters * accumulate


def warmup_then(decay, *, warmup_iters, start_factor, max_iters, accumulate=1):
    """[LinearLR from `start_factor` x LR over WARMUP_ITERS steps] + [`decay` (a scheduler dict
    without begin/end) from there to the end], in loader iterations. A run shorter than its warmup (a
    smoke test, a benchmark) is all warmup but its last iteration; no warmup: `decay` alone."""
    end = end_iter(max_iters, accumulate)
    warmup = min(warmup_iters * accumulate, end - 1)
    schedulers = []
    if warmup > 0:
        schedulers.append(dict(type='LinearLR', start_factor=start_factor, by_epoch=False, begin=0, end=warmup))
    schedulers.append(dict(decay, begin=warmup, end=end, by_epoch=False))
    return schedulers


def _optim_wrapper(optimizer, amp, accumulate, clip_grad=None, paramwise_cfg=None, constructor=None):
    wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic') if amp else dict(type='OptimWrapper')
    wrapper.update(optimizer=optimizer, clip_grad=clip_grad)
    if accumulate > 1:
        wrapper['accumulative_counts'] = accumulate
    if paramwise_cfg is not None:
        wrapper['paramwise_cfg'] = paramwise_cfg
    if constructor is not None:
        wrapper['constructor'] = constructor
    return wrapper


def _loops(max_iters, val_interval, accumulate):
    return dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=end_iter(max_iters, accumulate),
                               val_interval=val_interval * accumulate),
                val_cfg=dict(type='ValLoop'), test_cfg=dict(type='TestLoop'))


def sgd_poly(*, lr, max_iters, val_interval, momentum=0.9, weight_decay=5e-4, eta_min=1e-4, power=0.9,
             amp=False, accumulate=1, clip_grad=None, paramwise_cfg=None):
    """schedule_80k/160k.py: SGD(momentum 0.9, wd 5e-4) and PolyLR(power 0.9, eta_min 1e-4), no warmup."""
    optimizer = dict(type='SGD', lr=lr, momentum=momentum, weight_decay=weight_decay)
    return dict(
        optim_wrapper=_optim_wrapper(optimizer, amp, accumulate, clip_grad, paramwise_cfg),
        param_scheduler=[dict(type='PolyLR', eta_min=eta_min, power=power, begin=0,
                              end=end_iter(max_iters, accumulate), by_epoch=False)],
        **_loops(max_iters, val_interval, accumulate))


def adamw_poly(*, lr, max_iters, val_interval, weight_decay=0.01, betas=(0.9, 0.999), eps=None,
               warmup_iters=1500, warmup_start_factor=1e-6, power=1.0, eta_min=0.0, amp=False,
               accumulate=1, clip_grad=None, paramwise_cfg=None, constructor=None):
    """The transformer recipes: AdamW, LinearLR warmup (1e-6 -> 1 over 1500 iters), then PolyLR.
    `betas=None` leaves them out of the config (torch's default), as some recipes do.

    `warmup_iters=0` gives plain PolyLR from the start (Mask2Former, MaskFormer, PoolFormer...).
    """
    optimizer = dict(type='AdamW', lr=lr, weight_decay=weight_decay)
    if betas is not None:  # None: torch's default, for recipes that do not set them
        optimizer['betas'] = tuple(betas)
    if eps is not None:
        optimizer['eps'] = eps
    schedulers = warmup_then(dict(type='PolyLR', eta_min=eta_min, power=power), warmup_iters=warmup_iters,
                             start_factor=warmup_start_factor, max_iters=max_iters, accumulate=accumulate)
    return dict(optim_wrapper=_optim_wrapper(optimizer, amp, accumulate, clip_grad, paramwise_cfg, constructor),
                param_scheduler=schedulers, **_loops(max_iters, val_interval, accumulate))


def transformer_paramwise(zero_decay=('pos_block', 'norm'), head_lr_mult=None):
    """Reference paramwise_cfg of the SegFormer/SegNeXt/Swin/Twins recipes: no weight decay on the
    parameters whose names contain `zero_decay`, the decode head at `head_lr_mult` x LR where set."""
    keys = {name: dict(decay_mult=0.) for name in zero_decay}
    if head_lr_mult is not None:
        keys['head'] = dict(lr_mult=head_lr_mult)
    return dict(custom_keys=keys)
