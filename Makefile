# The two commands of the README. Each installs what it needs first (setup.sh is idempotent).
PY := .venv/bin/python

.PHONY: setup demo test test-fast

setup:
	bash setup.sh

# The main job: FCN trained on the generated demo data on a CPU, evaluated, with summary.json and
# a picture of predictions in work_dirs/demo_fcn/.
demo: setup
	$(PY) train_fcn.py --demo

test: setup
	$(PY) -m pytest tests

# The unit tests of every module, without the trainings and the slow end-to-end runs (pytest.ini: slow).
test-fast: setup
	$(PY) -m pytest tests -m "not slow"

.PHONY: bench
bench: setup
	bash bench.sh
