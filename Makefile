# The two commands of the README. Each installs what it needs first (setup.sh is idempotent).
PY := .venv/bin/python

.PHONY: setup trackers demo test test-fast

setup:
	bash setup.sh

# The optional experiment trackers (--tracker wandb, --tracker mlflow): requirements/lock-trackers.txt,
# hash-checked, beside the stack (the lock was resolved against lock.txt: no package of the stack moves);
# pip check then proves that every installed package's requirements still hold. The registry only, as in setup.sh.
trackers: setup
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1 \
		$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/lock-trackers.txt
	$(PY) -m pip check

# The main job: FCN trained on the generated demo data on a CPU, evaluated, with summary.json and
# a picture of predictions in work_dirs/demo_fcn/.
demo: setup
	$(PY) train_fcn.py --demo

# The suite tests the trackers too, so it installs them first.
test: setup trackers
	$(PY) -m pytest tests

# The unit tests of every module, without the trainings and the slow end-to-end runs (pytest.ini: slow).
test-fast: setup trackers
	$(PY) -m pytest tests -m "not slow"

.PHONY: bench
bench: setup
	bash bench.sh
