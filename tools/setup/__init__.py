"""What setup.sh installs and builds, and the locked requirements it reads. Standard library only, like
the commands here: setup.sh runs plan with the system python before .venv exists.

    plan       what `bash setup.sh` installs and builds on this machine, decided first (`bash setup.sh
               --plan`, or `python3 -m tools.setup.plan --plan`); a choice that cannot work stops there
    make_lock  regenerates requirements/lock*.txt and mmcv-cuda-build*.txt (`python -m tools.setup.make_lock`)
    cuda_home  a CUDA_HOME laid out from NVIDIA's pip packages, for building mmcv's CUDA ops (setup.sh)
"""
