import pytest

from distilmt.config import PRESETS, ConfigError, DistillConfig, RunConfig, TrainConfig, from_dict, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    assert cfg.name == name and cfg.description
    assert cfg.teacher_train.max_steps or cfg.teacher_train.epochs
    # A preset round-trips through its dict form unchanged.
    assert from_dict(RunConfig, cfg.to_dict()) == cfg


def test_overrides_are_typed_and_validated():
    cfg = load_config("quick", overrides=["distill.temperature=3", "data.source_lang=hu", "data.target_lang=en"])
    assert cfg.distill.temperature == 3.0 and cfg.data.direction == "hu-en"
    with pytest.raises(ConfigError, match="distill.temperature"):
        load_config("quick", overrides=["distill.temperature=-1"])
    with pytest.raises(ConfigError, match="teacher_train.max_steps: expected a whole number"):
        load_config("quick", overrides=["teacher_train.max_steps=1.5"])
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("quick", overrides=["distill.temprature=2"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config("quick", overrides=["distill"])


def test_an_override_that_is_not_yaml_is_one_line_naming_the_key_and_the_quoting():
    """`--set data.target_token=>>hun<<` as typed: '>' starts a YAML block scalar; the fix is to quote the value."""
    for raw in (">>hun<<", "{source} => {tgt_lang}:"):
        with pytest.raises(ConfigError) as caught:
            load_config("quick", overrides=[f"data.target_token={raw}"])
        message = str(caught.value)
        assert message.startswith(f"data.target_token: {raw!r} is not a YAML value") and "\n" not in message
        assert f"--set \"data.target_token='{raw}'\"" in message
    assert load_config("quick", overrides=["data.target_token='>>hun<<'"]).data.target_token == ">>hun<<"
    prefix = "data.source_prefix='translate English to Hungarian: '"  # the quotes keep the trailing space
    assert load_config("quick", overrides=[prefix]).data.source_prefix == "translate English to Hungarian: "


def test_untested_defaults_do_not_crash():
    DistillConfig(); TrainConfig(); RunConfig()
    with pytest.raises(ConfigError, match="distill.alpha"):
        DistillConfig(alpha=None)
    with pytest.raises(ConfigError, match="alpha and beta are both 0"):
        DistillConfig(alpha=0, beta=0)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file=bad)
    builtin = tmp_path / "bible.yaml"
    builtin.write_text("data: {source_lang: en, target_lang: de}\n")
    with pytest.raises(ConfigError, match="English-Hungarian"):
        load_config(file=builtin)


def test_cli_accepts_dotted_settings_as_flags():
    from distilmt.cli import _dotted_overrides

    assert _dotted_overrides(["--monitor.language", "zh", "--distill.temperature=2"]) == [
        "monitor.language=zh", "distill.temperature=2"]
    assert _dotted_overrides(["--bogus"]) is None


def test_schedule_settings_are_validated_with_the_field_named():
    d = DistillConfig()
    assert (d.temperature_schedule, d.weight_schedule, d.hidden_weight, d.attention_weight) == (
        "constant", "constant", 0.0, 0.0)
    d = from_dict(DistillConfig, {"temperature_schedule": "cosine", "temperature_final": "1",
                                  "weight_schedule": "linear", "alpha_final": 0.3, "beta_final": None})
    assert d.temperature_final == 1.0 and d.final_alpha == 0.3 and d.final_beta == d.beta
    for kwargs, message in [
        (dict(temperature_schedule="step"), "distill.temperature_schedule: 'step' is not one of"),
        (dict(temperature_final=1.0), "distill.temperature_final: is set but distill.temperature_schedule is constant"),
        (dict(temperature_schedule="linear"), "distill.temperature_final: a linear temperature schedule needs"),
        (dict(temperature_schedule="exponential", temperature_final=0.0), "distill.temperature_final: 0.0 must be at least 0.1"),
        (dict(weight_schedule="exponential"), "distill.weight_schedule: 'exponential' is not one of"),
        (dict(weight_schedule="cosine"), "needs alpha_final and/or beta_final"),
        (dict(alpha_final=0.3), "distill.alpha_final: is set but distill.weight_schedule is constant"),
        (dict(weight_schedule="linear", alpha_final=0.0, beta_final=0.0), "both end at 0"),
        (dict(weight_schedule="linear", beta_final=-1.0), "distill.beta_final: must be a number >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            DistillConfig(**kwargs)
    with pytest.raises(ConfigError, match="distill.temperature_final: expected a number"):
        from_dict(DistillConfig, {"temperature_schedule": "linear", "temperature_final": "warm"}, "distill")


def test_hidden_and_attention_settings_are_validated_with_the_field_named():
    DistillConfig(hidden_weight=1.0, hidden_layer_map="last:2", attention_weight=0.5,
                  attention_layer_map={"encoder": "uniform", "decoder": [[0, 1]]}, attention_kinds="cross")
    for kwargs, message in [
        (dict(hidden_weight=-1.0), "distill.hidden_weight: -1.0 must be a number >= 0"),
        (dict(hidden_loss="l1"), "distill.hidden_loss: 'l1' is not mse or cosine"),
        (dict(attention_loss="jsd"), "distill.attention_loss: 'jsd' is not kl or mse"),
        (dict(attention_heads="drop"), "distill.attention_heads: 'drop' is not average or repeat"),
        (dict(hidden_layer_map="last:0"), "distill.hidden_layer_map: 'last:0' is not uniform"),
        (dict(hidden_layer_map=[[0, -1]]), "distill.hidden_layer_map: .* pairs of 0-based layer indices"),
        (dict(attention_layer_map={"middle": "uniform"}), "distill.attention_layer_map: a per-side map"),
        (dict(hidden_sides="enc"), "distill.hidden_sides: 'enc' must be a comma-separated list"),
        (dict(attention_kinds=""), "distill.attention_kinds"),
        (dict(teacher_cache=True, hidden_weight=1.0), "distill.hidden_weight: the teacher cache holds only"),
    ]:
        with pytest.raises(ConfigError, match=message):
            DistillConfig(**kwargs)


@pytest.mark.parametrize("override, message", [
    ("teacher_train.learning_rate=.inf", "teacher_train.learning_rate: expected a finite number"),
    ("distill.temperature=.inf", "distill.temperature: expected a finite number"),
    ("distill.alpha=.inf", "distill.alpha: expected a finite number"),
    ("distill.alpha=1.5", "distill.alpha: 1.5 must be a weight in [0, 1]"),
    ("distill.alpha=-0.1", "distill.alpha: -0.1 must be a weight in [0, 1]"),
    ("distill.temperature=0.001", "distill.temperature: 0.001 must be at least 0.1"),
    ("student_train.weight_decay=-0.01", "student_train.weight_decay: -0.01 must not be negative"),
    ("teacher_train.max_grad_norm=-1", "teacher_train.max_grad_norm: -1.0 must not be negative"),
    ("student_train.learning_rate=0", "student_train.learning_rate: must be positive"),
    ("student_train.eval_steps=-500", "student_train.eval_steps: -500 must be auto, epoch or a whole number"),
    ("teacher_train.eval_steps=0", "teacher_train.eval_steps: 0 must be auto, epoch or a whole number of updates >= 1"),
    ("teacher_train.eval_steps=often", "teacher_train.eval_steps: 'often' must be auto, epoch or a whole number"),
    ("student_train.eval_steps=2.5", "student_train.eval_steps: 2.5 must be auto, epoch or a whole number"),
    ("student_train.eval_steps=true", "student_train.eval_steps: True must be auto, epoch or a whole number"),
    ("student_train.early_stopping_patience=-1", "student_train.early_stopping_patience: -1 must be a whole number"),
])
def test_values_that_cannot_work_are_refused_naming_the_section(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("quick", overrides=[override])
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_user_corpus_needs_dev_and_test_sentences(tmp_path):
    for key in ("data.dev_size", "data.test_size"):
        with pytest.raises(ConfigError, match=rf"{key}: is 0: without data\.\w+_file at least 1 sentence"):
            load_config("quick", overrides=["data.corpus=my.tsv", f"{key}=0"])
    load_config("quick", overrides=["data.corpus=my.tsv", "data.dev_size=0", "data.dev_file=dev.tsv"])  # fine


def test_yaml_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndistill:\n  alpha: [0.5\n  beta: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: not valid YAML") as error:
        load_config(file=bad)
    assert "\n" not in str(error.value)


def test_an_empty_corpus_setting_is_refused():
    with pytest.raises(ConfigError, match="data.corpus: is empty"):
        load_config("quick", overrides=["data.corpus="])


def test_eval_steps_reads_auto_epoch_or_a_number_of_updates():
    assert TrainConfig().eval_steps == "auto"
    config = load_config("quick", overrides=["student_train.eval_steps=500", "teacher_train.eval_steps=epoch"])
    assert config.student_train.eval_steps == 500 and config.teacher_train.eval_steps == "epoch"
    assert from_dict(TrainConfig, {"eval_steps": "250"}).eval_steps == 250  # a quoted number is that number
