# The two commands of the README: `make demo` (set up + run the main job) and `make test` (set up + tests).
# The environment lives in .venv/ in this checkout; torch is pinned to the CPU wheel 2.13.0.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo value study methods test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[export,test]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/distilmt run --preset quick --run-dir runs/demo

# Does distillation pay? make demo's preset for student seeds 1 and 2 on one teacher (issue 16): runs/value/seed-S/,
# runs/value/value.json and value.md (the twin and the KD student of each seed with the paired bootstrap).
value: $(STAMP)
	$(BIN)/distilmt value --preset quick --run-dir runs/value --seeds 1,2

# The hard-label vs soft-label study (issue 4) at CPU scale: the quick preset's models, hard labels for 2000
# training sources at beam 2, mixed with the references; stages already finished in runs/study are skipped.
# OLD_QUICK_STUDENT: the quick preset before issue 16 (a 2200-update teacher; a full-width student initialised
# from it, 700 updates, live teacher, teacher annealing), which the study and methods figures in the README were
# measured with.
OLD_QUICK_STUDENT := --set teacher_train.max_steps=2200 --set student.width_ratio=1.0 \
	--set student.init_from_teacher=true --set student_train.max_steps=700 --set student_train.warmup_steps=100 \
	--set distill.teacher_cache=false --set distill.weight_schedule=linear --set distill.alpha=1.0 \
	--set distill.beta=0.0 --set distill.alpha_final=0.0 --set distill.beta_final=1.0
study: $(STAMP)
	$(BIN)/distilmt study --preset quick --run-dir runs/study --set seqkd.num_beams=2 --set seqkd.train_on=mix \
		--set study.label_sources=2000 $(OLD_QUICK_STUDENT)

# The comparison of distillation methods on the built-in corpus (quick teacher, 2 seeds, 350 updates per student);
# about 75 min at one thread beside other jobs, plus ~10 min for the teacher (measured, see README).
METHODS_ARGS ?= --steps 350 --test-sentences 150 --seeds 1,2 $(OLD_QUICK_STUDENT)
methods: $(STAMP)
	$(BIN)/distilmt methods --preset quick --run-dir runs/methods $(METHODS_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs/demo
