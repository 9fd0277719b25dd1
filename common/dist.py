"""Which processes take part in a run: the launcher, this process's rank, the world size.

The launcher is read from the environment, so `python train_x.py`, `torchrun --nproc_per_node=N
train_x.py` and `srun python train_x.py` all work without a --launcher flag.
"""
import os


def launcher_from_env(env=os.environ):
    """'pytorch' under torchrun, 'slurm' under `srun` with several tasks, else 'none'."""
    if 'RANK' in env and 'WORLD_SIZE' in env:
        return 'pytorch'
    if 'SLURM_PROCID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
        return 'slurm'
    return 'none'


def world_size_from_env(env=os.environ):
    launcher = launcher_from_env(env)
    if launcher == 'pytorch':
        return int(env['WORLD_SIZE'])
    if launcher == 'slurm':
        return int(env['SLURM_NTASKS'])
    return 1


def rank_from_env(env=os.environ):
    return int(env.get('RANK', env.get('SLURM_PROCID', '0')) if launcher_from_env(env) != 'none' else 0)


def start_cpu_process_group(cfg, timeout_s):
    """DDP on CPUs (gloo), e.g. the tests: mmengine's own init_dist calls torch.cuda.set_device,
    and its DDP wrapper passes device_ids, which CPU modules refuse. Start the group here (mmengine
    then leaves it alone) and wrap without device ids."""
    import datetime
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=timeout_s))
    cfg['model_wrapper_cfg'] = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                    find_unused_parameters=cfg.get('find_unused_parameters', False))


_host_group = []


def any_rank(flag):
    """True if `flag` is true on any rank (all ranks must stop at the same iteration). Agreed over a
    CPU (gloo) group, made once beside an NCCL one: a host flag must not wait for the GPU's queue."""
    import torch
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        group = None
        if dist.get_backend() != 'gloo':
            if not _host_group:  # collective: every rank reaches its first any_rank together
                _host_group.append(dist.new_group(backend='gloo'))
            group = _host_group[0]
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
        return bool(value.item())
    return flag


def max_over_ranks(tensor):
    """`tensor`, its elementwise max over the ranks (in place, on its device: no host read); the
    tensor itself in one process."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier():
    """Wait for every rank (a no-op in one process)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
