import pytest

from ssdistill.config import DistillConfig
from ssdistill.errors import ConfigError
from ssdistill.recipe import build_config, describe_options, parse_overrides


def test_defaults_validate_and_method_section_has_its_own_fields():
    cfg = build_config({})
    assert isinstance(cfg, DistillConfig)
    assert cfg.method.name == "feature" and cfg.method.loss == "cosine"
    assert cfg.eval.knn_k == 20 and cfg.eval.knn_t == pytest.approx(0.07)


def test_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  epochs: 3\ndata:\n  train: /x\nmethod:\n  name: feature\n  loss: mse\n")
    cfg = build_config(recipe, ["trainer.epochs=7", "optim.lr=0.5", "method.projector_hidden=[64, 32]", "run.name=null"])
    assert cfg.trainer.epochs == 7 and cfg.optim.lr == 0.5
    assert cfg.data.train == "/x" and cfg.method.loss == "mse"
    assert cfg.method.projector_hidden == [64, 32] and cfg.run.name is None


def test_overrides_parse_yaml_values():
    assert parse_overrides(["a.b=3", "a.c=true", "d=[1, 2]", "e=text"]) == {"a": {"b": 3, "c": True}, "d": [1, 2], "e": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["trainer.epochs"])
    # a command line's trainer.precision=32 parses as the number 32: it means the precision "32"
    assert build_config(overrides=["trainer.precision=32"]).trainer.precision == "32"
    assert build_config(overrides=["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    assert build_config(overrides=["trainer.precision=64"]).trainer.precision == "64"  # Lightning's alias of 64-true
    with pytest.raises(ConfigError, match="trainer.precision"):
        build_config(overrides=["trainer.precision=8"])


@pytest.mark.parametrize(
    "override, unknown, suggestion",
    [
        ("trainer.epoch=3", "trainer.epoch", "trainer.epochs"),
        ("studnet.arch=x", "studnet", "student"),
        ("method.los=mse", "method.los", "method.loss"),
    ],
)
def test_unknown_key_names_it_and_the_closest(override, unknown, suggestion):
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    message = str(info.value)
    assert f"'{unknown}'" in message and f"'{suggestion}'" in message and "\n" not in message


def test_unknown_method_and_bad_values_are_one_line():
    with pytest.raises(ConfigError, match="unknown method 'featur'.*'feature'"):
        build_config({"method": {"name": "featur"}})
    with pytest.raises(ConfigError, match="'trainer.epochs'.*abc"):
        build_config({}, ["trainer.epochs=abc"])
    with pytest.raises(ConfigError, match="'method.loss'"):
        build_config({}, ["method.loss=l3"])
    with pytest.raises(ConfigError, match="'teacher.resolution'.*greater than 0"):
        build_config({}, ["teacher.resolution=0"])
    with pytest.raises(ConfigError, match="not found"):
        build_config("/no/such/recipe.yaml")


def test_help_lists_every_option_with_a_default():
    keys = {key for key, _, _ in describe_options()}
    assert {"trainer.epochs", "data.train", "teacher.name", "method.loss", "eval.knn_k", "run.dir"} <= keys
    flat = set()
    for section, model in DistillConfig.model_fields.items():
        if section == "teachers":
            assert "teachers" in keys
        elif section != "method":
            flat |= {f"{section}.{f}" for f in model.annotation.model_fields}
    assert flat <= keys


def test_named_teachers_are_checked_like_the_teacher_section():
    cfg = build_config({"method": "mvmr", "teachers": {"r56": {"name": "cifar_resnet56", "weights": "w.th"}}})
    assert list(cfg.teachers) == ["r56"] and cfg.teachers["r56"].output == "pooled"
    assert cfg.primary_teacher == "r56" and cfg.teacher.name == "cifar_resnet56"  # the teacher section follows the primary
    with pytest.raises(ConfigError, match=r"unknown config key 'teachers.r56.wieghts'; did you mean 'teachers.r56.weights'"):
        build_config({"method": "mvmr", "teachers": {"r56": {"name": "x", "wieghts": "w.th"}}})
    with pytest.raises(ConfigError, match=r"'teachers' must be a mapping of named sections \(teachers: \{lite2"):
        build_config({"teachers": [{"name": "x"}]})
    with pytest.raises(ConfigError, match="teacher name '2x' must start with a letter"):
        build_config({"teachers": {"2x": {"name": "x"}}})
    with pytest.raises(ConfigError, match="unknown loss term"):
        build_config({"method": {"name": "mvmr", "weights": {"teacherx": 1}}})
    assert build_config({"method": {"name": "mvmr", "weights": {"teacher_r56": 0.5}}}).method.weights == {"teacher_r56": 0.5}


def test_the_teacher_section_is_the_one_teacher_shorthand():
    plain = build_config({"teacher": {"name": "efficientnet_lite2"}})
    assert list(plain.teachers) == ["teacher"] and plain.teachers["teacher"].name == "efficientnet_lite2"
    both = build_config({"teacher": {"name": "efficientnet_lite0"}, "teachers": {"lite2": {"name": "efficientnet_lite2"}}})
    assert list(both.teachers) == ["teacher", "lite2"] and both.primary_teacher == "teacher"
    only = build_config({"teachers": {"a": {"name": "efficientnet_lite2"}, "b": {"name": "efficientnet_lite0"}}})
    assert list(only.teachers) == ["a", "b"], "the default teacher section must not join an explicit set"
    with pytest.raises(ConfigError, match="given twice"):
        build_config({"teacher": {"name": "x"}, "teachers": {"teacher": {"name": "y"}}})


@pytest.mark.parametrize(
    "raw",
    [
        {"teacher": {"name": "efficientnet_lite2", "resolution": 200}},
        {"teachers": {"a": {"name": "efficientnet_lite2"}, "b": {"name": "efficientnet_lite0", "output": "logits"}}},
        {"teacher": {"name": "efficientnet_lite0"}, "teachers": {"lite2": {"name": "efficientnet_lite2"}}},
    ],
)
def test_a_dumped_config_reads_back_to_the_same_teachers(raw):
    cfg = build_config({"method": "mvmr", **raw})
    again = build_config(cfg.to_dict())
    assert again.teachers == cfg.teachers and again.teacher == cfg.teacher
    assert ("teachers" in cfg.to_dict()) != ("teacher" in cfg.to_dict())  # the teachers are written once


def test_the_schema_alone_refuses_an_unresolved_method_section():
    with pytest.raises(ValueError, match="build configs with ssdistill.recipe.build_config"):
        DistillConfig.model_validate({"method": {"name": "seed"}})


def test_distill_merges_overrides_and_keyword_sections_deeply(tmp_path, monkeypatch):
    import yaml

    import ssdistill.api
    from ssdistill import distill

    monkeypatch.setattr(ssdistill.api, "check_inputs", lambda cfg: None)  # the data does not exist: stop at the run
    monkeypatch.setattr(ssdistill.api, "run_distillation", lambda cfg, run_dir, *args: {"cfg": cfg})
    cfg = distill(
        overrides={"trainer": {"epochs": 2}},
        trainer={"seed": 5},
        data={"train": str(tmp_path / "missing")},
        run={"dir": str(tmp_path), "name": "merge"},
    )["cfg"]
    saved = yaml.safe_load((tmp_path / "merge" / "config.yaml").read_text())  # the resolved config is written first
    assert saved["trainer"]["epochs"] == 2 and saved["trainer"]["seed"] == 5 == cfg.trainer.seed


def test_every_shipped_recipe_is_a_valid_config():
    from conftest import REPO

    recipes = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(recipes) >= 6
    for recipe in recipes:
        cfg = build_config(recipe)
        assert cfg.run.name, recipe


def test_a_recipe_lies_under_the_config_and_the_overrides(tmp_path):
    """`recipe: recommended` (or --recipe) supplies its keys; the config file's own keys and the overrides win over
    them; the resolved config holds no `recipe` key; a recipe file may be given by path."""
    from ssdistill.recipe import RECIPES, load_recipe

    shipped = load_recipe("recommended")
    cfg = build_config({"recipe": "recommended", "data": {"train": "x"}, "trainer": {"epochs": 3}}, ["method.relational_weight=0.5"])
    assert cfg.method.name == shipped["method"]["name"] == "feature" and cfg.method.relational == "seed"
    assert cfg.method.target_norm == "center" and cfg.trainer.ema_horizon == shipped["trainer"]["ema_horizon"]
    assert cfg.trainer.epochs == 3 and cfg.method.relational_weight == 0.5 and cfg.data.train == "x"
    assert "recipe" not in cfg.to_dict()
    assert build_config({"data": {"train": "x"}}, ["recipe=recommended"]).method.relational == "seed"  # what --recipe passes
    own = tmp_path / "mine.yaml"
    own.write_text("method: {name: seed}\ntrainer: {epochs: 7}\n")
    assert build_config({"recipe": str(own)}).trainer.epochs == 7
    assert (RECIPES / "recommended.yaml").is_file()


def test_an_unknown_or_nested_recipe_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'recomended'.*did you mean 'recommended'"):
        build_config({"recipe": "recomended"})
    nested = tmp_path / "nested.yaml"
    nested.write_text("recipe: recommended\n")
    with pytest.raises(ConfigError, match="must be self-contained"):
        build_config({"recipe": str(nested)})
